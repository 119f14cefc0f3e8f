"""The export pipeline, as DESIGN.md draws it:

    notebook state ──capture──▶ ShipSpec + artifacts ──render──▶ project ──verify──▶ review
                   ──(push)──▶ registry, and a commit in the project's own git repository ──(build)──▶ image

Each stage is its own module and knows only what the previous one handed over. This orchestrator runs
them in order, reports every step on the one event channel (events.py) and ends with exactly one
``Result`` event. The project is built beside its destination and moved there only when it is complete
and verified, so a failure leaves the earlier export (or nothing) in place.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from .capture import capture
from .capture.code import CellHistory
from .errors import ShipError
from .events import Events, Result, Review, Tests
from .fsutil import staged_dir
from .options import ShipOptions
from .publish import publish
from .render import write_project, write_review
from .review import review_html, review_markdown, review_tables
from .spec import ShipSpec


def ship(options: ShipOptions, user_ns: dict[str, Any], history: CellHistory, events: Events) -> Result:
    """One %%ship, end to end. Raises ShipError (after a failed Result event); leaves nothing half-written."""
    started = time.monotonic()
    try:
        result = _run(options, user_ns, history, events)
    except ShipError as exc:
        events.emit(Result(ok=False, name=options.name, version=options.version, message=str(exc),
                           notebook=options.notebook, seconds=time.monotonic() - started))
        raise
    result.seconds = time.monotonic() - started
    events.emit(result)
    return result


def _run(options: ShipOptions, user_ns: dict[str, Any], history: CellHistory, events: Events) -> Result:
    with events.step("capture"):
        captured = capture(options, user_ns, history)
    with captured:
        spec = captured.spec
        events.emit(_review_event(spec))
        result = Result(ok=True, name=spec.name, version=spec.version, notebook=options.notebook)
        if options.dry_run:
            result.message = "dry run: nothing was written; the review shows what would be exported"
            return result
        destination = (options.out / spec.name).resolve()
        _check_destination(destination)
        with staged_dir(destination, replace=True, keep=(".git",)) as project:  # its history continues
            with events.step("render", str(destination)):
                write_project(spec, captured.staging, project)
            if options.verify:
                verified = verify(project, events, _outside_reads(spec.warnings))
                write_review(spec, project, verified)
                result.verified = True
                result.tests = Tests(verified.tests_passed, verified.tests_failed, verified.output)
    result.project = str(destination)
    result.message = f"exported to {destination}" + (" and verified" if result.verified else " (not verified)")
    with events.step("publish", "registry push and the project's git commit"):
        verify_summary = f"passed ({result.tests.passed} tests)" if result.tests else "not run"
        published = publish(destination, options.push, options.registry, verify_summary)
    result.pushed, result.git_commit = published.pushed, published.git_commit
    result.message += published.message
    if options.build:
        result.image = build(destination, events)
        result.message += f"; built and smoke-tested image {result.image}"
    return result


def _review_event(spec: ShipSpec) -> Review:
    sections = [{"title": t, "header": h, "rows": r} for t, h, r in review_tables(spec, None)]
    return Review(review={"name": spec.name, "version": spec.version, "sections": sections},
                  markdown=review_markdown(spec, None), html=review_html(spec, None))


def _outside_reads(warnings: list[str]) -> list[str]:
    """The review's warnings about what the code reads from outside the project: the likely cause when
    the project's own tests fail in a clean environment."""
    from .capture.code import READS_ENVIRONMENT, READS_FILES

    return [w for w in warnings if f" {READS_FILES} " in w or f" {READS_ENVIRONMENT} " in w]


def verify(project: Path, events: Events, likely_causes: list[str] | None = None) -> Any:
    """The project's own tests in a clean environment built from its pins; ShipError unless they pass."""
    from .verify import VerifyError, verify_project

    with events.step("verify", "tests of the generated project in a clean environment"):
        try:
            result = verify_project(
                project, on_line=events.log,
                on_step=lambda step, status, seconds: events.sub_step(f"verify:{step}", status, seconds),
            )
        except VerifyError as exc:
            raise ShipError(f"verify could not build the clean environment: {exc}", output=exc.output) from exc
        if not result.passed:
            hint = f"; note: {'; '.join(likely_causes)}" if likely_causes else ""
            raise ShipError(
                f"the generated project's tests failed in a clean environment "
                f"({result.tests_failed} failed, {result.tests_passed} passed); nothing was exported{hint}",
                output=result.output,
            )
    return result


def build(project: Path, events: Events) -> str:
    """The container image, smoke-tested; returns its tag."""
    from .build import BuildError, build_image

    with events.step("build", str(project)):
        try:
            return build_image(project, on_line=events.log).tag
        except BuildError as exc:
            raise ShipError(f"the image build failed: {exc}") from exc


def _check_destination(destination: Path) -> None:
    if destination.exists() and not (destination / "ship.json").is_file():
        raise ShipError(
            f"{destination} exists and is not a jupyter-mlship project; choose another --out or move it away"
        )
