"""Helpers for the user's story in tests: cells in a real shell, notebooks on disk, a live service."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx
import nbformat


def run_cell(shell, source: str):
    """Run a cell like a user would; return the ExecutionResult (errors are not raised)."""
    return shell.run_cell(textwrap.dedent(source).strip("\n"), store_history=True)


def ok_cell(shell, source: str):
    result = run_cell(shell, source)
    if not result.success:
        raise AssertionError(f"cell failed: {result.error_in_exec or result.error_before_exec!r}")
    return result


def write_notebook(path: Path, cells: list[str]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip("\n")) for c in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def mlship(*args: str, cwd: Path | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jupyter_mlship.cli", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(ready: Callable[[], bool], timeout: float, what: str, *, interval: float = 0.2,
               alive: Callable[[], str | None] | None = None) -> None:
    """Poll ``ready`` until it is true; fail loudly with ``what`` after ``timeout`` s or as soon as ``alive``
    returns a reason (e.g. the process under test exited)."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return
        if alive is not None and (reason := alive()):
            raise AssertionError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


class Service:
    """A generated service on a free loopback port, waited for until /readyz answers 200 (or failing loudly).

    By default uvicorn serves app.main:app from the project (``workers`` > 1 starts that many processes);
    ``command`` replaces that, given as a list or as a function of the port. HOST and PORT are always in
    the process's environment, with ``env`` on top of this process's own."""

    def __init__(self, project: Path, *, command: Sequence[str] | Callable[[int], Sequence[str]] | None = None,
                 env: Mapping[str, str] | None = None, workers: int | None = None,
                 ready_timeout: float = 60) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if command is None:
            argv = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", str(self.port),
                    *(["--workers", str(workers)] if workers else [])]
        else:
            argv = list(command(self.port) if callable(command) else command)
        self.log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe: a chatty server never blocks on it
        self.process = subprocess.Popen(
            argv, cwd=project, stdout=self.log, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **(env or {})},
        )
        try:
            wait_until(self._ready, ready_timeout, f"the service {' '.join(argv)} did not become ready",
                       alive=lambda: None if self.process.poll() is None else f"it exited with {self.process.returncode}")
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n{self.output()}") from None

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        """What the server printed so far."""
        self.log.seek(0)
        text = self.log.read()
        self.log.seek(0, os.SEEK_END)
        return text

    def post(self, path: str, body, headers: dict | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
