"""Headless export: run a notebook top to bottom in a fresh kernel; every ship cell exports.

Shared by `mlship export` and the nbconvert exporter, so both behave the same.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nbformat
from traitlets.config import Config
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

from .errors import ShipError
from .events import EVENT_MIME
from .options import OUT_OVERRIDE_ENV, PROGRESS_ENV

SHIP_LINE = re.compile(r"^\s*%%?ship\b", re.M)


@dataclass
class CellExport:
    name: str
    ok: bool
    message: str
    project: str | None


@dataclass
class HeadlessResult:
    exports: list[CellExport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.exports) and all(e.ok for e in self.exports)


def read_notebook(path: Path) -> nbformat.NotebookNode:
    try:
        nb = nbformat.read(str(path), as_version=4)
        nbformat.validate(nb)
    except FileNotFoundError:
        raise ShipError(f"{path} does not exist") from None
    except Exception as exc:  # nbformat raises several types for broken files
        raise ShipError(f"{path} is not a valid notebook: {str(exc).splitlines()[0]}") from None
    return nb


def ship_cells(nb: nbformat.NotebookNode) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and SHIP_LINE.search(cell.source)]


def export_notebook(nb: nbformat.NotebookNode, notebook_path: Path, out: Path | None, *,
                    timeout: int | None = None, kernel_name: str | None = None,
                    on_progress: Callable[[str], None] = print) -> HeadlessResult:
    """Execute ``nb`` in a fresh kernel started in the notebook's folder; raise ShipError on failure."""
    cells = ship_cells(nb)
    if not cells:
        raise ShipError(f"{notebook_path} has no %%ship or %ship cell to export")
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # run a copy; the user's notebook is not changed
    env = dict(os.environ)
    env["MLSHIP_NOTEBOOK"] = str(notebook_path)
    env.setdefault(PROGRESS_ENV, "stderr")
    if out is not None:
        env[OUT_OVERRIDE_ENV] = str(out.resolve())
    current = {"index": -1}

    def on_cell_start(cell, cell_index):  # noqa: ANN001 - nbclient hook signature
        current["index"] = cell_index
        if cell_index in cells:
            on_progress(f"cell {cell_index + 1}: {cell.source.strip().splitlines()[0]}")

    name = kernel_name or nb.metadata.get("kernelspec", {}).get("name", "python3")
    with tempfile.TemporaryDirectory(prefix="mlship-headless-") as tmp:  # the kernel's ipc sockets
        client = NotebookClient(
            nb, timeout=timeout, kernel_name=name, config=local_transport(Path(tmp)),
            resources={"metadata": {"path": str(notebook_path.parent.resolve())}},
            on_cell_start=on_cell_start,
        )
        try:
            client.execute(env=env)
        except CellExecutionError as exc:
            raise ShipError(_cell_failure(nb, current["index"], exc), output=_printed(nb, current["index"])) from None
        except CellTimeoutError:
            raise ShipError(f"cell {current['index'] + 1} did not finish within {timeout} s") from None
        except DeadKernelError as exc:
            raise ShipError(f"the kernel died while running cell {current['index'] + 1}: {exc}") from None
    return HeadlessResult([export for index in cells for export in _results(nb.cells[index])])


def _results(cell: nbformat.NotebookNode) -> list[CellExport]:
    """The result events a ship cell displayed: the same channel the panel and the notebook read."""
    found = []
    for output in cell.get("outputs", []):
        event = output.get("data", {}).get(EVENT_MIME) if output.get("output_type") == "display_data" else None
        if isinstance(event, dict) and event.get("event") == "result":
            found.append(CellExport(name=event["name"], ok=bool(event["ok"]), message=event.get("message", ""),
                                    project=event.get("project")))
    return found


def local_transport(folder: Path) -> Config:
    """Kernel manager settings for a kernel that talks over Unix sockets in ``folder``, not TCP ports.

    Nothing outside this machine needs to reach a headless kernel, and over TCP ipykernel warns
    "Kernel is running over TCP without encryption" on every `mlship export`, which reads as a
    security problem. The socket path is absolute: the kernel's working folder is the notebook's."""
    if os.name == "nt":  # ZeroMQ has no ipc transport there
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": str(folder.resolve() / "kernel")}})


def _cell_failure(nb: nbformat.NotebookNode, index: int, exc: CellExecutionError) -> str:
    source = nb.cells[index].source.strip().splitlines() if 0 <= index < len(nb.cells) else [""]
    first = source[0] if source else ""
    reason = f"{exc.ename}: {exc.evalue}" if exc.ename not in {"UsageError"} else exc.evalue
    return f"cell {index + 1} (`{first[:80]}`) failed: {reason}"


def _printed(nb: nbformat.NotebookNode, index: int) -> str:
    """What a failed ship cell printed (the magic prints a failed verify's test output there)."""
    if not 0 <= index < len(nb.cells) or index not in ship_cells(nb):
        return ""
    return "".join(output.get("text", "") for output in nb.cells[index].get("outputs", [])
                   if output.get("output_type") == "stream" and output.get("name") == "stdout")
