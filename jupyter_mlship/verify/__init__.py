"""Prove it before handing it over: run a generated project's tests in a clean environment built only
from its pinned requirements, so a missing or wrong pin fails here and not in production.

envs.py builds and caches the environments; results.py reads pytest's JUnit XML; cli.py is `mlship verify`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..procs import run_streaming
from .envs import MARKER, VerifyError, cache_root, ensure_environment, environment_key, find_uv, venv_python
from .results import TestReport, read_junit_xml

__all__ = [
    "MARKER", "TestReport", "VerifyError", "VerifyResult", "cache_root", "environment_key", "find_uv",
    "main_verify", "run_streaming", "verify_project",
]

LineCallback = Callable[[str], None]
StepCallback = Callable[[str, str, "float | None"], None]

REQUIREMENT_FILES = ("requirements.txt", "requirements-test.txt")
TESTS_TIMEOUT = 1800.0
OUTPUT_TAIL_CHARS = 60_000  # pytest output kept in the result: the tail, where the failures and summary are
# `python -m pytest`, except that the process ends as soon as pytest has reported (its JUnit file written):
# the interpreter's teardown of the service's libraries (0.5 s) proves nothing about the project.
PYTEST_RUNNER = ("import os, sys, pytest\n"
                 "code = pytest.console_main()\n"
                 "sys.stdout.flush()\n"
                 "sys.stderr.flush()\n"
                 "os._exit(int(code))\n")
# No cache folder in the project; no unraisable-exception plugin, whose only effect is to attach exceptions
# raised in __del__ to a test as warnings after five full garbage collections at exit (0.5 s with pandas
# and scikit-learn loaded): without it Python prints them to the output itself.
PYTEST_OPTIONS = ("-p", "no:cacheprovider", "-p", "no:unraisableexception")
# Variables that would leak the caller's environment into the clean one.
LEAKY_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "CONDA_PREFIX",
                   "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST", "__PYVENV_LAUNCHER__")


@dataclass
class VerifyResult:
    passed: bool
    output: str  # pytest's output (its tail if huge)
    seconds: float
    environment: str  # path of the venv the tests ran in
    installer: str  # "uv" or "pip"
    reused_environment: bool
    report: TestReport = field(default_factory=TestReport)

    @property
    def tests_passed(self) -> int:
        return self.report.passed

    @property
    def tests_failed(self) -> int:
        """Tests that did not pass and were not skipped: failures and errors."""
        return self.report.failed + self.report.errors


def verify_project(project: Path, on_line: LineCallback | None = None,
                   on_step: StepCallback | None = None) -> VerifyResult:
    """Run the project's tests with its own pinned requirements only, in a cached clean venv."""
    started = time.monotonic()
    project = Path(project).resolve()
    line = on_line or (lambda text: None)
    step = on_step or (lambda name, status, seconds: None)
    files = [project / name for name in REQUIREMENT_FILES]
    for path in [*files, project / "tests"]:
        if not path.exists():
            raise VerifyError(f"{project} is not a generated project: {path.name} is missing")

    step("environment", "running", None)
    env_started = time.monotonic()
    try:
        environment, installer, reused = ensure_environment(files, line)
    except VerifyError:
        step("environment", "failed", time.monotonic() - env_started)
        raise
    step("environment", "reused" if reused else "done", time.monotonic() - env_started)

    step("tests", "running", None)
    tests_started = time.monotonic()
    before = set(_byproducts(project))
    with tempfile.TemporaryDirectory(prefix="mlship-junit-") as scratch:
        junit = Path(scratch) / "junit.xml"  # outside the project: nothing is left in it
        try:
            code, lines = run_streaming(
                [str(venv_python(environment)), "-c", PYTEST_RUNNER, "-q", *PYTEST_OPTIONS, f"--junit-xml={junit}",
                 "tests"],
                cwd=project, env=_test_env(environment), on_line=line, timeout=TESTS_TIMEOUT,
            )
        finally:
            for path in set(_byproducts(project)) - before:
                shutil.rmtree(path, ignore_errors=True)
        report = read_junit_xml(junit, project)
    if report.problem:
        lines.append(report.problem)
        line(report.problem)
    output = _tail("\n".join(lines), OUTPUT_TAIL_CHARS)
    passed = code == 0 and report.problem is None and report.failed + report.errors == 0
    step("tests", "done" if passed else "failed", time.monotonic() - tests_started)
    return VerifyResult(passed=passed, output=output, seconds=time.monotonic() - started,
                        environment=str(environment), installer=installer, reused_environment=reused, report=report)


def main_verify(project: str) -> int:
    """`mlship verify PROJECT` (kept here so `from jupyter_mlship.verify import main_verify` keeps working)."""
    from .cli import main_verify as run

    return run(project)


def _test_env(environment: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in LEAKY_VARIABLES}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1",
               VIRTUAL_ENV=str(environment))
    env["PATH"] = os.pathsep.join([str(venv_python(environment).parent), env.get("PATH", "")])
    return env


def _byproducts(project: Path) -> Iterator[Path]:
    for folder, dirs, _ in os.walk(project):
        for name in list(dirs):
            if name in {"__pycache__", ".pytest_cache"}:
                dirs.remove(name)
                yield Path(folder) / name


def _tail(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    return "[... output truncated ...]\n" + cut[cut.find("\n") + 1:]
