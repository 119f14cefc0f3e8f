"""`mlship router NAME --serve`: every version the routes name, and the router in front, on this machine.

Each version is pulled from the registry (sha256-checked, cached) and served by uvicorn in the same cached
clean environment `mlship verify` builds from the version's own pins (``--env here`` serves it with this
Python instead). The router runs with this Python: its few dependencies are this package's own.
Ctrl-C (SIGINT) or SIGTERM stops them all; each child also dies with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit


from .errors import ShipError

READY_TIMEOUT_S = 180.0


class ServeError(ShipError):
    """A version or the router could not be started; the message names which and why."""


@dataclass
class Child:
    label: str
    url: str
    process: subprocess.Popen


def _die_with_parent() -> None:  # runs in the child before exec
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def version_python(project: Path, env: str, say: Callable[[str], None]) -> str:
    """The interpreter that serves a version: its cached clean environment, or this Python."""
    if env == "here":
        return sys.executable
    from .verify import REQUIREMENT_FILES, VerifyError, ensure_environment, venv_python

    files = [project / name for name in REQUIREMENT_FILES if (project / name).is_file()]
    try:
        environment, _, reused = ensure_environment(files, lambda line: None)
    except VerifyError as exc:
        raise ServeError(f"the environment for {project} could not be built: {exc}") from None
    say(f"  environment {environment.name} ({'reused' if reused else 'built'})")
    return str(venv_python(environment))


def _start(label: str, python: str, cwd: Path, url: str, env: dict[str, str] | None = None) -> Child:
    parts = urlsplit(url)
    command = [python, "-m", "uvicorn", "app.main:app", "--host", parts.hostname or "127.0.0.1",
               "--port", str(parts.port or 80), "--no-access-log"]
    process = subprocess.Popen(command, cwd=cwd, env=env, preexec_fn=_die_with_parent)
    return Child(label, url, process)


def _wait_ready(child: Child, path: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        if child.process.poll() is not None:
            raise ServeError(f"{child.label} exited with code {child.process.returncode} before it was ready")
        try:  # the standard library: a readiness probe needs no HTTP client dependency
            with urllib.request.urlopen(child.url + path, timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise ServeError(f"{child.label} was not ready at {child.url}{path} within {READY_TIMEOUT_S:.0f} s")


def stop_all(children: list[Child]) -> None:
    """SIGTERM to each (uvicorn drains), SIGKILL to any still there after 15 s; nothing left behind."""
    for child in children:
        if child.process.poll() is None:
            child.process.terminate()
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def serve_router(router_project: Path, routes: dict, registry, router_url: str, env: str = "clean",
                 say: Callable[[str], None] = print) -> int:
    """Start the versions named in routes['backends'] and the router; block until SIGINT/SIGTERM."""
    import os

    from .registry.store import pull_cached

    name = routes["name"]
    children: list[Child] = []
    stopping = False

    def on_signal(signum, frame):  # turn SIGTERM into the same clean stop as Ctrl-C
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for version, url in routes["backends"].items():
            project = pull_cached(registry, f"{name}@{version}")
            say(f"version {version}: {project} at {url}")
            children.append(_start(f"version {version}", version_python(project, env, say), project, url))
        for child in children:
            _wait_ready(child, "/readyz", deadline)
        router_env = {**os.environ, "ROUTES_FILE": str(router_project / "routes.yaml")}
        router = _start("the router", sys.executable, router_project, router_url, router_env)
        children.append(router)
        _wait_ready(router, "/readyz", deadline)
        say(f"router for {name} at {router_url} (routes: {router_project / 'routes.yaml'}); Ctrl-C stops everything")
        while all(child.process.poll() is None for child in children):
            time.sleep(0.5)
        gone = next(child for child in children if child.process.poll() is not None)
        raise ServeError(f"{gone.label} exited with code {gone.process.returncode}; stopping the others")
    except KeyboardInterrupt:
        say("stopping the router and the versions")
        return 0
    finally:
        stop_all(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
