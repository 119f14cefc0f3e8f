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
from typing import Any

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


def wait_for(condition: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.2,
             alive: Callable[[], str | None] | None = None) -> Any:
    """Poll ``condition`` until it returns something truthy and return that; fail loudly with ``what`` after
    ``timeout`` s, or as soon as ``alive`` returns a reason (e.g. the process under test exited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if alive is not None and (reason := alive()):
            raise AssertionError(f"{what}: {reason}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


class Service:
    """A uvicorn process on a free loopback port, waited for until ``ready_path`` answers 200 (or failing loudly).

    By default uvicorn serves ``app`` (app.main:app) from the project with ``args`` added (``workers`` > 1
    starts that many processes); ``command`` replaces that, given as a list or as a function of the port.
    HOST and PORT are always in the process's environment, with ``env`` on top of this process's own.
    ``wait=False`` starts it without waiting (call ``wait_ready()``); its output goes to a file, never a
    pipe, so a chatty server never blocks on it."""

    def __init__(self, project: Path, *, command: Sequence[str] | Callable[[int], Sequence[str]] | None = None,
                 env: Mapping[str, str] | None = None, workers: int | None = None, app: str = "app.main:app",
                 args: Sequence[str] = (), ready_path: str = "/readyz", ready_timeout: float = 60,
                 wait: bool = True, stop_timeout: float = 10) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        if command is None:
            argv = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port),
                    *(["--workers", str(workers)] if workers else []), *args]
        else:
            argv = list(command(self.port) if callable(command) else command)
        self.argv, self.ready_path, self.ready_timeout, self.stop_timeout = argv, ready_path, ready_timeout, stop_timeout
        self._output = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(
            argv, cwd=project, stdout=self._output, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port), **(env or {})},
        )
        if wait:
            self.wait_ready()

    def wait_ready(self) -> "Service":
        try:
            wait_for(self._ready, self.ready_timeout,
                     f"the service {' '.join(self.argv)} did not answer {self.ready_path}",
                     alive=lambda: None if self.process.poll() is None else f"it exited with {self.process.returncode}")
        except AssertionError as exc:
            self.stop()
            raise AssertionError(f"{exc}\n{self.output()}") from None
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}{self.ready_path}", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def output(self) -> str:
        """What the server printed so far."""
        self._output.seek(0)
        text = self._output.read()
        self._output.seek(0, os.SEEK_END)
        return text

    def post(self, path: str, body, headers: dict | None = None) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", json=body, headers=headers, timeout=30)

    def stop(self) -> str:
        """SIGTERM (SIGKILL after ``stop_timeout`` s); returns what the process printed."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.output()

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()