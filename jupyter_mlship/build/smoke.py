"""The smoke test: start the built image once on a loopback port, wait for /readyz, check the golden predictions."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Any, Callable

from ..spec import ShipSpec
from .builders import Builder, BuildError, run_flags

READY_TIMEOUT = 120.0
NOT_READY_GRACE = 10.0  # seconds a served "not ready" may last before the smoke test fails


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def smoke_test(
    runner: Builder, image: str, spec: ShipSpec, *, on_line: Callable[[str], None] = print,
    ready_timeout: float = READY_TIMEOUT,
) -> str:
    """Start the image on a loopback port, wait for /readyz, check the golden predictions.

    The container is stopped and removed in every case. Returns a one-line summary; raises
    BuildError (with the container's log) when the service does not come up or predicts otherwise.
    """
    from ..runtime import runtime_module

    port = _free_port()
    name = f"mlship-smoke-{uuid.uuid4().hex[:10]}"
    # PORT differs from the image's default, so the run also proves the image honours PORT and HOST.
    # --no-healthcheck: the smoke test polls /readyz itself, and podman's health timers need systemd.
    cmd = [runner.executable, "run", "--detach", "--name", name, "--no-healthcheck", *run_flags(runner),
           "--publish", f"127.0.0.1:{port}:{port}", "--env", f"PORT={port}", "--env", "HOST=0.0.0.0", image]
    on_line(f"smoke test: $ {shlex.join(cmd)}")
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    try:
        if done.returncode != 0:
            raise BuildError(f"the smoke test could not start the image: {(done.stderr or done.stdout).strip()}")
        base = f"http://127.0.0.1:{port}"
        ready_after = _wait_ready(runner, name, base, ready_timeout)
        status, body = _http("POST", f"{base}/predict", {"instances": spec.golden.instances})
        if status != 200:
            raise BuildError(f"the smoke test's golden request got HTTP {status}: {body[:300].decode(errors='replace')}")
        predictions = json.loads(body).get("predictions")
        convert = runtime_module("convert")
        mismatches = convert.compare_predictions(spec.golden.predictions, predictions, spec.golden.float_rel_tol)
        if mismatches:
            shown = "; ".join(mismatches[:3])
            raise BuildError(f"the image predicts differently from the notebook on the golden request: {shown}")
    except BuildError:
        _show_log(runner, name, on_line)
        raise
    finally:
        subprocess.run([runner.executable, "stop", "--time", "15", name], capture_output=True, timeout=60)
        subprocess.run([runner.executable, "rm", "--force", name], capture_output=True, timeout=60)
    return (
        f"passed: ready in {ready_after:.1f} s on 127.0.0.1:{port}, "
        f"{len(spec.golden.instances)} golden predictions match ({time.monotonic() - started:.1f} s)"
    )


def _wait_ready(runner: Builder, name: str, base: str, timeout: float) -> float:
    started = time.monotonic()
    last = "no answer"
    answered_at: float | None = None
    while time.monotonic() - started < timeout:
        try:
            status, body = _http("GET", f"{base}/readyz", timeout=5)
            if status == 200:
                return time.monotonic() - started
            last = f"HTTP {status}: {body[:300].decode(errors='replace')}"
            # The app loads the model before it serves; a "not ready" that lasts is its verdict.
            answered_at = answered_at or time.monotonic()
            if time.monotonic() - answered_at > NOT_READY_GRACE:
                raise BuildError(f"the service started but /readyz says it is not ready ({last})")
        except (OSError, ValueError) as exc:
            last = str(exc)
        running = subprocess.run(
            [runner.executable, "inspect", "--format", "{{.State.Running}}", name],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()
        if running == "false":
            raise BuildError("the container exited before /readyz answered: its log is above")
        time.sleep(0.5)
    raise BuildError(f"/readyz did not answer 200 within {timeout:.0f} s (last: {last}): the container log is above")


def _show_log(runner: Builder, name: str, on_line: Callable[[str], None]) -> None:
    done = subprocess.run([runner.executable, "logs", name], capture_output=True, text=True, timeout=60)
    on_line(f"--- log of the smoke-test container {name} ---")
    for line in (done.stdout + done.stderr).splitlines()[-80:]:
        on_line(line)
    on_line("--- end of log ---")

