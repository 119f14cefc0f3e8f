"""Run a long command and hand each line of its output to a callback as it comes (verify and build both do)."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

LineCallback = Callable[[str], None]


def run_streaming(command: list[str], cwd: Path, env: dict[str, str], on_line: LineCallback,
            timeout: float) -> tuple[int, list[str]]:
    """Run, passing each output line to ``on_line`` as it arrives; (exit code, lines). Killed at ``timeout``."""
    lines: list[str] = []
    try:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
                                   bufsize=1)
    except OSError as exc:
        message = f"could not run {command[0]}: {exc}"
        on_line(message)
        return 127, [message]
    timed_out = threading.Event()

    def kill() -> None:
        timed_out.set()
        process.kill()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            text = raw.rstrip("\r\n")
            lines.append(text)
            on_line(text)
        code = process.wait()
    finally:
        timer.cancel()
        if process.poll() is None:
            process.kill()
            process.wait()
    if timed_out.is_set():
        message = f"{Path(command[0]).name} was stopped after {timeout:.0f} s"
        lines.append(message)
        on_line(message)
    return code, lines
