"""`mlship verify PROJECT`: progress on stdout, exit code 0 only if the tests pass in a clean environment."""

from __future__ import annotations

import sys
from pathlib import Path

from . import VerifyError, verify_project


def main_verify(project: str) -> int:
    def on_step(name: str, status: str, seconds: float | None) -> None:
        took = f" ({seconds:.1f} s)" if seconds is not None else ""
        print(f"[{name}] {status}{took}", flush=True)

    try:
        result = verify_project(Path(project), on_line=lambda text: print(f"  {text}", flush=True),
                                on_step=on_step)
    except VerifyError as exc:
        print(f"verify failed: {exc}", file=sys.stderr, flush=True)
        return 1
    report = result.report
    how = "reused" if result.reused_environment else f"built with {result.installer}"
    verdict = "PASSED" if result.passed else "FAILED"
    extra = "".join(f", {count} {word}" for count, word in ((report.errors, "errors"), (report.skipped, "skipped"))
                    if count)
    print(f"{verdict}: {report.passed} passed, {report.failed} failed{extra} in {result.seconds:.1f} s "
          f"(environment {how}: {result.environment})", flush=True)
    for node in report.failures:
        print(f"  failed: {node}", flush=True)
    if report.problem:
        print(f"  {report.problem}", flush=True)
    return 0 if result.passed else 1
