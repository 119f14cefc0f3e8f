"""After an export is in place: push it to the registry (``--push``) and commit it in the project's repository.

Called at the end of the export pipeline. The push comes first so the commit holds the registry stamp
(ship.json's ``registry`` field and REVIEW.md's Registry section).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import ShipError


@dataclass
class Published:
    pushed: str | None = None  # "churn@3"
    git_commit: str | None = None
    message: str = ""  # appended to the export's one-line outcome


def publish(project: Path, push: bool, registry_uri: str | None, verify_summary: str) -> Published:
    from .gitrepo import commit_export_with_reason, export_message
    from .spec import ShipSpec

    result = Published()
    error: ShipError | None = None
    if push:
        from .registry import open_registry

        try:
            registry = open_registry(registry_uri)
            record = registry.push(project)
            result.pushed = f"{record.name}@{record.version}"
            result.message += (f"; pushed to {registry.uri} as {result.pushed}" if record.created
                               else f"; already in {registry.uri} as {result.pushed}")
        except ShipError as exc:
            error = ShipError(f"exported to {project}, but the push failed: {exc}")
    spec = ShipSpec.read(project / "ship.json")
    sha, reason = commit_export_with_reason(project, export_message(
        spec.name, spec.version, spec.source.notebook, spec.entry.cell, verify_summary, result.pushed))
    result.git_commit = sha
    result.message += f"; committed {sha[:10]} in its git repository" if sha else f"; not committed: {reason}"
    if error is not None:
        raise error
    return result
