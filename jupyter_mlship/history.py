"""A record of every export, failures included, so the lab panel can list what happened to a notebook's models.

Fed by the one event channel (events.py): the magic's history sink records each ``Result`` event.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from jupyter_core.paths import jupyter_data_dir

if TYPE_CHECKING:
    from .events import Result


@dataclass
class ExportRecord:
    notebook: str | None  # path of the notebook as the server knows it (JPY_SESSION_NAME), if known
    name: str
    version: str
    project: str  # absolute path of the generated project
    time: float  # seconds since the epoch
    verified: bool
    ok: bool
    message: str = ""


def history_path() -> Path:
    return Path(os.environ.get("MLSHIP_HISTORY", Path(jupyter_data_dir()) / "mlship" / "history.jsonl"))


def current_notebook() -> str | None:
    """The notebook this kernel runs for: jupyter_server sets JPY_SESSION_NAME in the kernel's env."""
    return os.environ.get("MLSHIP_NOTEBOOK") or os.environ.get("JPY_SESSION_NAME") or None


def record_result(result: "Result") -> None:
    record_export(ExportRecord(notebook=result.notebook, name=result.name, version=result.version,
                               project=result.project or "", time=now(), verified=result.verified,
                               ok=result.ok, message=result.message))


def record_export(record: ExportRecord) -> None:
    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(asdict(record)) + "\n")


def list_exports(notebook: str | None = None) -> list[ExportRecord]:
    """Newest first; a damaged line is skipped rather than hiding the rest."""
    path = history_path()
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = ExportRecord(**json.loads(line))
        except (ValueError, TypeError):
            continue
        if notebook is None or record.notebook == notebook:
            records.append(record)
    return sorted(records, key=lambda r: r.time, reverse=True)


def now() -> float:
    return time.time()
