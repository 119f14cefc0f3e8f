"""Render: ShipSpec (+ artifact files) -> the service project directory.

Knows only the ShipSpec. The project appears at ``dest`` complete or not at all: it is rendered into a
temporary directory beside ``dest`` and renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from cookiecutter.main import cookiecutter

from .runtime import template_dir
from .spec import ShipSpec


def render_project(spec: ShipSpec, artifacts_dir: Path | None, dest: Path) -> Path:
    """Write the service project for ``spec`` to ``dest`` (which must not exist) and return ``dest``."""
    dest = Path(dest).absolute()
    if dest.exists():
        raise FileExistsError(f"{dest} already exists; choose another --out or remove it first")
    if spec.artifacts and artifacts_dir is None:
        raise ValueError(f"the spec names {len(spec.artifacts)} artifact(s) but no artifacts directory was given")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        project = _render_template(spec, work)
        spec.write(project / "ship.json")
        _copy_artifacts(spec, artifacts_dir, project / "model")
        if dest.exists():  # someone else created it meanwhile: do not replace their directory
            raise FileExistsError(f"{dest} appeared while rendering; nothing was written there")
        project.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def _render_template(spec: ShipSpec, work: Path) -> Path:
    # `_spec` is private to cookiecutter: passed through as-is, never rendered as a Jinja template
    # (features_source may well contain "{{") and its numbers stay numbers.
    cookiecutter(
        str(template_dir()),
        no_input=True,
        extra_context={"name": spec.name, "_spec": spec.to_json_dict()},
        output_dir=str(work / "out"),
        # Keep cookiecutter's replay record out of the user's home directory.
        default_config={"replay_dir": str(work / "replay"), "cookiecutters_dir": str(work / "cache")},
    )
    return work / "out" / spec.name


def _copy_artifacts(spec: ShipSpec, artifacts_dir: Path | None, model_dir: Path) -> None:
    model_dir.mkdir(exist_ok=True)
    for artifact in spec.artifacts:
        source = Path(artifacts_dir) / artifact.file  # type: ignore[arg-type]
        if not source.is_file():
            raise FileNotFoundError(f"artifact {artifact.name!r}: {source} is missing")
        target = model_dir / artifact.file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        digest = _sha256(target)
        if digest != artifact.sha256:
            raise ValueError(
                f"artifact {artifact.name!r}: {source} has sha256 {digest}, but the spec says {artifact.sha256}"
            )
    manifest = {"artifacts": [artifact.model_dump() for artifact in spec.artifacts],
                "device_fallback": spec.device_fallback}
    (model_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
