"""Container builds started from the panel: `mlship build PROJECT` as a subprocess, its log kept in memory.

The server does not build anything itself; it runs the CLI (the same command a person would type) and
records the output line by line so the panel can poll it while the build runs.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

MAX_LINE_CHARS = 4000  # a runaway progress bar must not fill the server's memory
MAX_LINES = 20000


class ProjectNotFound(ValueError):
    """The path given to build is not a generated service project."""


def resolve_project(project: str, root_dir: str) -> Path:
    """The project directory for ``project`` (absolute, or relative to the server root)."""
    if not project or not project.strip():
        raise ProjectNotFound("no project given: pass the path of an exported service project")
    path = Path(project).expanduser()
    if not path.is_absolute():
        path = Path(root_dir).expanduser() / path
    if not path.is_dir():
        raise ProjectNotFound(f"no service project at {project}: the folder does not exist")
    if not (path / "ship.json").is_file():
        raise ProjectNotFound(f"{project} is not a service project exported by mlship: it has no ship.json")
    return path.resolve()


@dataclass
class Build:
    id: str
    project: str
    command: list[str]
    started: float
    status: str = "running"  # running | succeeded | failed | cancelled
    returncode: int | None = None
    finished: float | None = None
    lines: list[str] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)

    def view(self, since: int = 0) -> dict:
        return {
            "id": self.id,
            "project": self.project,
            "command": self.command,
            "status": self.status,
            "returncode": self.returncode,
            "started": self.started,
            "finished": self.finished,
            "lines": self.lines[since:],
            "next": len(self.lines),
        }


class BuildRunner:
    """Starts builds and keeps each one's log and status until the server stops."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.builds: dict[str, Build] = {}
        self._tasks: set[asyncio.Task] = set()

    async def start(self, project: Path, builder: str | None = None, tag: str | None = None) -> Build:
        command = [*self.command, str(project)]
        if builder:
            command += ["--builder", builder]
        if tag:
            command += ["--tag", tag]
        build = Build(id=uuid.uuid4().hex[:12], project=str(project), command=command, started=time.time())
        self.builds[build.id] = build
        # Unbuffered, so lines reach the panel as the build prints them, not at exit.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        try:
            build.process = await asyncio.create_subprocess_exec(
                *command, cwd=str(project), env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
        except OSError as exc:
            build.lines.append(f"could not start {command[0]}: {exc}")
            self._finish(build, "failed", None)
            return build
        task = asyncio.create_task(self._follow(build))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return build

    async def _follow(self, build: Build) -> None:
        process = build.process
        assert process is not None and process.stdout is not None
        while True:
            raw = await process.stdout.readline()
            if not raw:
                break
            if len(build.lines) < MAX_LINES:
                build.lines.append(raw.decode("utf-8", "replace").rstrip("\r\n")[:MAX_LINE_CHARS])
        returncode = await process.wait()
        if build.status == "running":
            self._finish(build, "succeeded" if returncode == 0 else "failed", returncode)

    @staticmethod
    def _finish(build: Build, status: str, returncode: int | None) -> None:
        build.status = status
        build.returncode = returncode
        build.finished = time.time()

    def cancel(self, build: Build) -> None:
        if build.status == "running" and build.process is not None and build.process.returncode is None:
            build.process.terminate()
            build.lines.append("build cancelled")
            self._finish(build, "cancelled", None)

    async def stop(self) -> None:
        """Terminate builds still running when the server stops, so none outlives it."""
        for build in self.builds.values():
            self.cancel(build)
        for task in list(self._tasks):
            try:
                await asyncio.wait_for(task, timeout=5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                task.cancel()
