"""Router tests' helpers: uvicorn processes on loopback, routes.yaml rewrites, loud waits, load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import yaml

from .notebooks import free_port

SUPPORT = Path(__file__).resolve().parent


class Uvicorn:
    """`python -m uvicorn APP` in `cwd`, waited for until `ready_path` answers 200."""

    def __init__(self, app: str, cwd: Path, env: dict[str, str] | None = None, ready_path: str = "/healthz",
                 app_dir: Path | None = None, wait: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port),
                   "--no-access-log"]
        if app_dir is not None:
            command += ["--app-dir", str(app_dir)]
        # Output to a file, not a pipe nobody reads: a full pipe would block the server mid-test.
        self.log = tempfile.NamedTemporaryFile(prefix="uvicorn-", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, cwd=cwd, env={**os.environ, **(env or {})},
                                        stdout=self.log, stderr=subprocess.STDOUT)
        self.app, self.ready_path = app, ready_path
        if wait:
            self.wait_ready()

    def wait_ready(self) -> Uvicorn:
        wait_for(lambda: self._answers(self.ready_path), 90,
                 f"{self.app} on port {self.port} to answer {self.ready_path}", on_timeout=self.stop)
        return self

    def _answers(self, path: str) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.url} exited: {self.output()}")
        try:
            return httpx.get(self.url + path, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> str:
        """SIGTERM (SIGKILL after 10 s); returns what the process printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.output()

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, on_timeout: Callable | None = None,
             interval: float = 0.1) -> Any:
    """Poll until `predicate()` is truthy; an AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            if on_timeout:
                on_timeout()
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def write_routes(path: Path, routes: dict) -> None:
    """Replace routes.yaml atomically, as an editor or a ConfigMap update does."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(yaml.safe_dump(routes, sort_keys=False), encoding="utf-8")
    os.replace(temporary, path)


def start_router(project: Path, routes_file: Path, routes: dict) -> Uvicorn:
    write_routes(routes_file, routes)
    return Uvicorn("app.main:app", project, env={"ROUTES_FILE": str(routes_file), "ROUTES_WATCH_S": "0.2"})


def routes_now(router: Uvicorn) -> dict:
    return httpx.get(f"{router.url}/routes", timeout=5).json()


def blast(url: str, count: int, body: dict, concurrency: int = 24,
          headers: Callable[[int], dict] | None = None,
          after: Callable[[httpx.AsyncClient, int, httpx.Response], Any] | None = None) -> list[httpx.Response]:
    """`count` POSTs to `url` over keep-alive connections, `concurrency` at a time; responses in order."""

    async def run() -> list[httpx.Response]:
        responses: list[httpx.Response | None] = [None] * count
        next_index = 0
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:

            async def worker() -> None:
                nonlocal next_index
                while next_index < count:
                    index, next_index = next_index, next_index + 1
                    response = await client.post(url, json=body, headers=headers(index) if headers else None)
                    responses[index] = response
                    if after is not None:
                        await after(client, index, response)

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        return responses  # type: ignore[return-value]

    return asyncio.run(run())


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric_name, _, label_text = series.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if metric_name == name and got == wanted:
            return float(value)
    return 0.0
