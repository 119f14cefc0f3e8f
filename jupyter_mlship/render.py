"""Render: ShipSpec (+ artifact files) -> the service project directory.

Knows only the ShipSpec. The whole project comes from here (template, ship.json, model/, app/local/,
REVIEW.md); ``fsutil.staged_dir`` makes it appear complete or not at all.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cookiecutter.main import cookiecutter

from .fsutil import staged_dir
from .review import review_markdown
from .runtime import template_dir
from .spec import ShipSpec
from .fsutil import sha256_file


def render_project(spec: ShipSpec, artifacts_dir: Path | None, dest: Path) -> Path:
    """Write the service project for ``spec`` to ``dest`` (which must not exist) and return ``dest``."""
    with staged_dir(Path(dest), replace=False) as folder:
        write_project(spec, artifacts_dir, folder)
    return Path(dest).absolute()


def write_project(spec: ShipSpec, artifacts_dir: Path | None, folder: Path, verify: Any | None = None) -> None:
    """Fill the empty ``folder`` with the whole project: template, ship.json, model/, app/local/, REVIEW.md."""
    if spec.artifacts and artifacts_dir is None:
        raise ValueError(f"the spec names {len(spec.artifacts)} artifact(s) but no artifacts directory was given")
    # `_spec` is private to cookiecutter: passed through as-is, never rendered as a Jinja template
    # (features_source may well contain "{{") and its numbers stay numbers.
    render_template("service", {"name": spec.name, "_spec": spec.to_json_dict()}, folder)
    spec.write(folder / "ship.json")
    _copy_artifacts(spec, artifacts_dir, folder / "model")
    for relative, text in spec.local_modules.items():
        target = folder / "app" / "local" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    write_review(spec, folder, verify)


def render_template(kind: str, context: dict[str, Any], folder: Path) -> None:
    """Render the cookiecutter template ``kind`` (service, router) into the empty ``folder``."""
    with tempfile.TemporaryDirectory(prefix="mlship-render-") as work:
        cookiecutter(
            str(template_dir(kind)),
            no_input=True,
            extra_context=context,
            output_dir=str(Path(work) / "out"),
            # Keep cookiecutter's replay record out of the user's home directory.
            default_config={"replay_dir": str(Path(work) / "replay"), "cookiecutters_dir": str(Path(work) / "cache")},
        )
        for item in (Path(work) / "out" / context["name"]).iterdir():
            shutil.move(str(item), folder / item.name)


def write_review(spec: ShipSpec, folder: Path, verify: Any | None) -> None:
    (folder / "REVIEW.md").write_text(review_markdown(spec, verify), encoding="utf-8")


def _copy_artifacts(spec: ShipSpec, artifacts_dir: Path | None, model_dir: Path) -> None:
    model_dir.mkdir(exist_ok=True)
    for artifact in spec.artifacts:
        source = Path(artifacts_dir) / artifact.file  # type: ignore[arg-type]
        if not source.is_file():
            raise FileNotFoundError(f"artifact {artifact.name!r}: {source} is missing")
        target = model_dir / artifact.file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        digest = sha256_file(target)
        if digest != artifact.sha256:
            raise ValueError(
                f"artifact {artifact.name!r}: {source} has sha256 {digest}, but the spec says {artifact.sha256}"
            )
    if spec.reference is not None:  # monitoring (issue 10): the training data's profile, no raw rows
        (model_dir / "reference.json").write_text(json.dumps(spec.reference, indent=1) + "\n", encoding="utf-8")
    manifest = {"artifacts": [artifact.model_dump() for artifact in spec.artifacts],
                "device_fallback": spec.device_fallback}
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")

