"""A generated project as the registry sees it: its files, its identity, and the registry stamp.

The stamp (registry URI, version, parent) goes into ship.json's ``registry`` field and a "Registry"
section of REVIEW.md *before* those files are hashed, so version.json's sha256 manifest covers exactly
the bytes a pull writes. The project's identity (``content_sha256``) leaves the stamp out, so pushing
the same folder again, stamped or not, is recognised as the same version.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..fsutil import sha256_file
from ..review import markdown_text
from ..spec import RegistryInfo, ShipSpec
from .refs import RegistryError, validate_model_name

if TYPE_CHECKING:
    from .store import Registry, VersionRecord

SKIPPED_PARTS = {".git", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", ".venv"}
# What a service run in the project folder writes there: the inference log (MLSHIP_LOG_DIR's default,
# PROJECT/logs). Runtime data, not the version: never pushed or hashed (the image leaves it out too,
# .dockerignore, and git, .gitignore), and its writer may be renaming files in it during a push.
SKIPPED_TOP = {"logs"}
STAMPED = ("ship.json", "REVIEW.md")
REVIEW_HEADING = "## Registry"



def strip_review_section(text: str) -> str:
    """REVIEW.md without its Registry section."""
    match = re.search(rf"(?m)^{re.escape(REVIEW_HEADING)}\s*$", text)
    if not match:
        return text
    rest = text[match.end():]
    following = re.search(r"(?m)^## ", rest)
    tail = rest[following.start():] if following else ""
    return text[: match.start()].rstrip("\n") + "\n" + ("\n" + tail if tail else "")


# REVIEW.md's verification row: result, tests passed, tests failed, then the time it took.
_VERIFY_TIME = re.compile(r"(?m)^(\| (?:passed|FAILED) \| \d+ \| \d+ \| )[^|\n]*\|$")


def without_provenance(text: str, spec: ShipSpec) -> str:
    """README.md or REVIEW.md without what differs between two exports of an unchanged notebook: the
    export's time (as written, and as Markdown-escaped) and how long verification took. The project's
    identity is what it serves and says, not when it was made."""
    stamp = spec.source.captured_at
    if stamp:
        text = text.replace(stamp, "").replace(markdown_text(stamp), "")
    return _VERIFY_TIME.sub(r"\1|", text)


def review_with_section(text: str, info: RegistryInfo, pushed_by: str) -> str:
    body = strip_review_section(text).rstrip("\n")
    return body + (
        f"\n\n{REVIEW_HEADING}\n\n"
        "| registry | version | parent | pushed at | by |\n|---|---|---|---|---|\n"
        f"| `{info.uri}` | {info.version} | {info.parent or '—'} | {info.pushed_at} | {pushed_by} |\n"
    )


def verify_result(review: str) -> tuple[bool, str]:
    """(passed, summary) from REVIEW.md's verification table, as the export wrote it."""
    match = re.search(r"(?m)^## Verification.*$", review)
    if match:
        for line in review[match.end():].splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not line.startswith("|") or cells[0] in {"result", ""} or set(cells[0]) <= {"-"}:
                continue
            if cells[0] == "passed":
                return True, f"passed ({cells[1]} tests)"
            if cells[0] == "FAILED":
                return False, f"failed ({cells[2]} failed, {cells[1]} passed)"
            return False, "not run"
    return False, "not run"


@dataclass
class ProjectFiles:
    folder: Path
    spec: ShipSpec
    review: str
    paths: list[str]  # project-relative, sorted, "/"-separated
    content_sha256: str

    @property
    def name(self) -> str:
        return self.spec.name

    @classmethod
    def read(cls, folder: Path) -> ProjectFiles:
        folder = Path(folder).expanduser().absolute()
        if not folder.is_dir():
            raise RegistryError(f"no project at {folder}: the folder does not exist")
        if not (folder / "ship.json").is_file():
            raise RegistryError(f"{folder} is not a project exported by mlship: it has no ship.json")
        try:
            spec = ShipSpec.read(folder / "ship.json")
        except ValueError as exc:
            raise RegistryError(str(exc).splitlines()[0]) from exc
        validate_model_name(spec.name)  # it names the registry's folders: never ../ or other surprises
        review_path = folder / "REVIEW.md"
        review = review_path.read_text(encoding="utf-8") if review_path.is_file() else ""
        paths = sorted(
            p.relative_to(folder).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not p.is_symlink() and not (set(p.relative_to(folder).parts) & SKIPPED_PARTS)
            and p.relative_to(folder).parts[0] not in SKIPPED_TOP
        )
        lines = []
        digests: dict[str, str] = {}
        for path in paths:
            if path == "ship.json":
                unstamped = spec.model_copy(update={"registry": None, "source": spec.source.model_copy(
                    update={"captured_at": ""})})
                digest = hashlib.sha256(unstamped.model_dump_json().encode()).hexdigest()
            elif path == "REVIEW.md":
                digest = hashlib.sha256(without_provenance(strip_review_section(review), spec).encode()).hexdigest()
            elif path == "README.md":
                text = (folder / path).read_text(encoding="utf-8", errors="replace")
                digest = hashlib.sha256(without_provenance(text, spec).encode()).hexdigest()
            else:
                digest = digests[path] = sha256_file(folder / path)
            lines.append(f"{path}\0{digest}\n")
        for artifact in spec.artifacts:  # what a push publishes as verified is what was verified
            found = digests.get(f"model/{artifact.file}")
            if found is None:
                raise RegistryError(f"{folder}: model/{artifact.file} is missing; export the project again")
            if found != artifact.sha256:
                raise RegistryError(
                    f"{folder}: model/{artifact.file} is not the file that was exported and verified (its sha256 "
                    "differs from ship.json's); export the project again rather than editing its model files"
                )
        content = hashlib.sha256("".join(lines).encode()).hexdigest()
        return cls(folder=folder, spec=spec, review=review, paths=paths, content_sha256=content)

    def record(self, registry: Registry, version: str, parent: str | None) -> VersionRecord:
        from .store import VersionRecord, current_user, git_head, now_iso

        notebook = self.spec.source.notebook
        passed, summary = verify_result(self.review)
        return VersionRecord(
            name=self.name, version=version, parent=parent, pushed_at=now_iso(), pushed_by=current_user(),
            notebook=notebook, cell=self.spec.entry.cell,
            git_commit=git_head(Path(notebook)) if notebook else None,
            verified=passed, verify_result=summary, size_bytes=0,
            sha256s={a.name: a.sha256 for a in self.spec.artifacts}, files={},
            content_sha256=self.content_sha256, registry=registry.uri,
        )

    def stamped_texts(self, record: VersionRecord) -> dict[str, bytes]:
        info = RegistryInfo(uri=record.registry, version=record.version, parent=record.parent,
                            pushed_at=record.pushed_at)
        texts = {"ship.json": (self.spec.model_copy(update={"registry": info}).model_dump_json(indent=2) + "\n").encode()}
        if "REVIEW.md" in self.paths:
            texts["REVIEW.md"] = review_with_section(self.review, info, record.pushed_by).encode()
        return texts

    def stamp_local(self, record: VersionRecord) -> None:
        """Write the stamped ship.json and REVIEW.md into the folder (same bytes as the registry's copy)."""
        for path, data in self.stamped_texts(record).items():
            target = self.folder / path
            if target.read_bytes() != data:
                temp = target.with_name(f".{target.name}.mlship-tmp")
                temp.write_bytes(data)
                temp.replace(target)
