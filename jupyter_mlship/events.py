"""The one result channel: every stage reports structured events; every front end consumes them.

The pipeline emits ``step``, ``log``, ``review`` and, last, exactly one ``result`` (success or failure).
Front ends attach sinks: the magic renders them as HTML or text, the lab panel receives them as
``application/vnd.mlship.event+json`` display data, headless runs read the result events back from the
executed notebook, and the history records every result, failures included.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Literal, Union

EVENT_MIME = "application/vnd.mlship.event+json"


@dataclass
class Step:
    step: str  # "capture" | "render" | "verify" | "verify:<sub-step>" | "push" | "build"
    status: Literal["running", "done", "failed", "reused"]
    seconds: float | None = None
    detail: str = ""
    event: str = field(default="step", init=False)


@dataclass
class Log:
    line: str
    event: str = field(default="log", init=False)


@dataclass
class Review:
    review: dict[str, Any]  # {"name", "version", "sections": [{"title", "header", "rows"}]}
    markdown: str
    html: str = ""
    event: str = field(default="review", init=False)


@dataclass
class Tests:
    passed: int
    failed: int
    output: str = ""


@dataclass
class Result:
    ok: bool
    name: str
    version: str
    project: str | None = None
    verified: bool = False
    tests: Tests | None = None
    message: str = ""
    image: str | None = None
    notebook: str | None = None
    seconds: float | None = None
    pushed: str | None = None  # "NAME@VERSION" in the registry, when pushed
    git_commit: str | None = None  # the export's commit in the project's own repository
    event: str = field(default="result", init=False)


Event = Union[Step, Log, Review, Result]
Sink = Callable[[Event], None]


def to_json(event: Event) -> dict[str, Any]:
    """The wire form of docs/panel-protocol.md (the review's HTML is for notebooks only)."""
    data = asdict(event)
    data.pop("html", None)
    if isinstance(event, Result) and event.tests is not None:
        data["tests"]["output"] = event.tests.output[-4000:]
    return data


def result_from_json(data: dict[str, Any]) -> Result:
    tests = data.get("tests")
    return Result(
        ok=bool(data["ok"]), name=data["name"], version=data.get("version", ""), project=data.get("project"),
        verified=bool(data.get("verified")), tests=Tests(**tests) if tests else None,
        message=data.get("message", ""), image=data.get("image"), notebook=data.get("notebook"),
        seconds=data.get("seconds"), pushed=data.get("pushed"), git_commit=data.get("git_commit"),
    )


class Events:
    """Fans each event out to the sinks; ``step()`` times a stage and reports how it ended."""

    def __init__(self, *sinks: Sink) -> None:
        self.sinks = list(sinks)

    def emit(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)

    def log(self, line: str) -> None:
        self.emit(Log(line))

    def sub_step(self, step: str, status: str, seconds: float | None) -> None:
        self.emit(Step(step, status, seconds))  # type: ignore[arg-type]

    @contextlib.contextmanager
    def step(self, name: str, detail: str = "") -> Iterator[None]:
        started = time.monotonic()
        self.emit(Step(name, "running", None, detail))
        try:
            yield
        except BaseException as exc:
            self.emit(Step(name, "failed", time.monotonic() - started, str(exc)))
            raise
        self.emit(Step(name, "done", time.monotonic() - started, detail))
