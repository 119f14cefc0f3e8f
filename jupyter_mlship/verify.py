"""Prove it before handing it over: run a generated project's tests in a clean environment built only
from its pinned requirements, so a missing or wrong pin fails here and not in production.

Environments are cached by a hash of the interpreter and both requirements files, so re-exports of an
unchanged project reuse them. A half-built environment is never reused: it is built in a temporary
folder next to its final place and renamed only when complete (with a marker file inside).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .capture.environment import normalize, pip_index_settings, python_version
from .procs import LineCallback, run_streaming

StepCallback = Callable[[str, str, "float | None"], None]

REQUIREMENT_FILES = ("requirements.txt", "requirements-test.txt")
MARKER = ".mlship-env.json"  # written last inside a complete environment
INSTALL_TIMEOUT = 3600.0  # a large framework (torch) from a slow index can take many minutes
TESTS_TIMEOUT = 1800.0
OUTPUT_TAIL_CHARS = 60_000  # pytest output kept in the result: the tail, where the failures and summary are
ERROR_TAIL_LINES = 40  # installer output attached to a VerifyError
# Variables that would leak the caller's environment into the clean one.
LEAKY_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "CONDA_PREFIX",
                   "PYTEST_ADDOPTS", "PYTEST_PLUGINS", "PYTEST_CURRENT_TEST", "__PYVENV_LAUNCHER__")


@dataclass
class VerifyResult:
    passed: bool
    tests_passed: int
    tests_failed: int
    output: str  # pytest's output (its tail if huge)
    seconds: float
    environment: str  # path of the venv the tests ran in
    installer: str  # "uv" or "pip"
    reused_environment: bool


class VerifyError(Exception):
    """The clean environment could not be built; ``output`` holds the tail of the installer's output."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


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
        environment, installer, reused = _ensure_environment(files, line)
    except VerifyError:
        step("environment", "failed", time.monotonic() - env_started)
        raise
    step("environment", "reused" if reused else "done", time.monotonic() - env_started)

    step("tests", "running", None)
    tests_started = time.monotonic()
    before = set(_byproducts(project))
    try:
        code, lines = run_streaming(
            [str(_venv_python(environment)), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
            cwd=project, env=_test_env(environment), on_line=line, timeout=TESTS_TIMEOUT,
        )
    finally:
        for path in set(_byproducts(project)) - before:
            shutil.rmtree(path, ignore_errors=True)
    output = _tail("\n".join(lines), OUTPUT_TAIL_CHARS)
    tests_passed, tests_failed = parse_counts(lines)
    passed = code == 0 and tests_failed == 0
    step("tests", "done" if passed else "failed", time.monotonic() - tests_started)
    return VerifyResult(passed=passed, tests_passed=tests_passed, tests_failed=tests_failed, output=output,
                        seconds=time.monotonic() - started, environment=str(environment), installer=installer,
                        reused_environment=reused)


def parse_counts(lines: Sequence[str]) -> tuple[int, int]:
    """(passed, failed + errors) from pytest's final summary line, e.g. "1 failed, 2 passed in 0.31s"."""
    for text in reversed(lines):
        text = text.strip().strip("=").strip()
        if not re.search(r"\bin [\d.]+s\b", text):
            continue
        counts = {word.rstrip("s") if word.startswith("error") else word: int(n)
                  for n, word in re.findall(r"(\d+) (\w+)", text)}
        if counts or text.startswith("no tests ran"):
            return counts.get("passed", 0), counts.get("failed", 0) + counts.get("error", 0)
    return 0, 0


def environment_key(files: Sequence[Path]) -> str:
    """Same interpreter and same pins → same environment, whatever the line order or comments."""
    digest = hashlib.sha256()
    digest.update(f"{python_version()} {sys.implementation.name} {sys.platform} {platform.machine()}\n".encode())
    for path in files:
        lines = sorted(_requirement_lines(path))
        digest.update(f"{path.name}\n".encode() + "\n".join(lines).encode() + b"\n\0")
    return digest.hexdigest()[:24]


def cache_root() -> Path:
    """`$MLSHIP_ENV_CACHE`, else ~/.cache/jupyter-mlship/envs."""
    configured = os.environ.get("MLSHIP_ENV_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "jupyter-mlship" / "envs"


def _requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def _venv_python(environment: Path) -> Path:
    return environment / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _is_complete(environment: Path) -> bool:
    return (environment / MARKER).is_file() and _venv_python(environment).exists()


def _ensure_environment(files: list[Path], on_line: LineCallback) -> tuple[Path, str, bool]:
    """(venv, installer, reused): reuse a complete cached venv or build one under a lock."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = environment_key(files)
    final = root / key
    if _is_complete(final):
        return final, _marker_installer(final), True
    with _file_lock(root / f".{key}.lock"):
        if _is_complete(final):  # another process finished it while we waited
            return final, _marker_installer(final), True
        if final.exists():  # broken (its base interpreter is gone) or left by a foreign tool
            shutil.rmtree(final, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f".{key}.building-", dir=root))
        try:
            installer = _build(building, files, on_line)
            (building / MARKER).write_text(json.dumps({
                "installer": installer, "python": python_version(), "base": sys.executable,
                "requirements": {path.name: _requirement_lines(path) for path in files},
            }, indent=2) + "\n", encoding="utf-8")
            building.rename(final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return final, installer, False


def _marker_installer(environment: Path) -> str:
    try:
        return str(json.loads((environment / MARKER).read_text(encoding="utf-8")).get("installer", "pip"))
    except (OSError, ValueError):
        return "pip"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """One builder per environment across processes (filelock where installed, else POSIX flock)."""
    try:
        import filelock
    except ImportError:
        import fcntl

        with open(path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        return
    with filelock.FileLock(str(path)):
        yield


def find_uv() -> str | None:
    """uv from its Python package (a dependency of jupyter-mlship), else from PATH."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


def _build(target: Path, files: list[Path], on_line: LineCallback) -> str:
    """Install into the empty folder ``target``: uv with the user's pip settings, else pip itself."""
    requirement_args = [arg for path in files for arg in ("-r", str(path))]
    attempts: list[tuple[str, list[str]]] = []
    forced = os.environ.get("MLSHIP_INSTALLER", "").strip().lower()  # "pip": skip uv (e.g. index auth only pip has)
    uv = find_uv() if forced != "pip" else None
    if uv:
        settings = pip_index_settings()
        env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
        for name, value in settings.uv_env().items():
            env.setdefault(name, value)
        venv_command = [uv, "venv", "--no-project", "--relocatable", "--python", sys.executable, str(target)]
        code, lines = run_streaming(venv_command, cwd=target.parent, env=env, on_line=on_line, timeout=INSTALL_TIMEOUT)
        if code == 0:
            more_code, more = run_streaming(
                [uv, "pip", "install", "--python", str(_venv_python(target)), *settings.uv_args(), *requirement_args],
                cwd=target.parent, env=env, on_line=on_line, timeout=INSTALL_TIMEOUT)
            code, lines = more_code, lines + more
        if code == 0:
            return "uv"
        attempts.append(("uv", lines))
        on_line("uv could not build the environment; trying pip (it reads its own configuration)")
        _empty(target)
    else:
        on_line("building the environment with pip" + (" (MLSHIP_INSTALLER=pip)" if forced == "pip" else
                                                        " (uv is not installed)"))

    host_pip = _host_pip_can_target()
    # Without pip inside, the venv stays clean and builds in a second; the host's pip installs into it.
    venv_command = [sys.executable, "-m", "venv", *(["--without-pip"] if host_pip else []), str(target)]
    code, lines = run_streaming(venv_command, cwd=target.parent, env=dict(os.environ), on_line=on_line,
                          timeout=INSTALL_TIMEOUT)
    if code == 0:
        pip = ([sys.executable, "-m", "pip", "--python", str(_venv_python(target))] if host_pip
               else [str(_venv_python(target)), "-m", "pip"])
        more_code, more = run_streaming([*pip, "install", "--disable-pip-version-check", *requirement_args],
                                  cwd=target.parent, env=dict(os.environ), on_line=on_line, timeout=INSTALL_TIMEOUT)
        code, lines = more_code, lines + more
    if code == 0:
        return "pip"
    attempts.append(("pip", lines))
    raise VerifyError(_install_failure(attempts, files), output=_installer_tail(attempts))


def _host_pip_can_target() -> bool:
    """pip >= 22.3 can install into another interpreter (`pip --python`)."""
    if importlib.util.find_spec("pip") is None:
        return False
    from packaging.version import Version

    try:
        return Version(importlib.metadata.version("pip")) >= Version("22.3")
    except (importlib.metadata.PackageNotFoundError, ValueError):
        return False


def _empty(folder: Path) -> None:
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


# Installer messages that name the requirement at fault (pip first, then uv), most specific first.
_FAILURE_PATTERNS = [
    re.compile(r"No matching distribution found for (\S+)"),
    re.compile(r"Could not find a version that satisfies the requirement (\S+)"),
    re.compile(r"Failed (?:to build|building wheel for) `?([^`\s]+)`?"),
    re.compile(r"Because (?:there is no version of )?(\S+?) (?:was not found|and you require)"),
    re.compile(r"Failed to (?:download|fetch|prepare|install|build) `([^`]+)`"),
]


def _install_failure(attempts: list[tuple[str, list[str]]], files: list[Path]) -> str:
    """One sentence naming the requirement that failed, where the installers' output names one."""
    pins = {normalize(re.split(r"[=<>!~;\[ ]", line, maxsplit=1)[0]): line
            for path in files for line in _requirement_lines(path)}
    tried = " and ".join(name for name, _ in attempts)
    for pattern in _FAILURE_PATTERNS:
        for name, lines in reversed(attempts):
            for text in lines:
                match = pattern.search(text)
                if match:
                    found = normalize(re.split(r"[=<>!~;\[ ]", match.group(1).strip("'\"`,."), maxsplit=1)[0])
                    requirement = pins.get(found, match.group(1))
                    return (f"could not install {requirement} into a clean environment ({name}: "
                            f"{text.strip().removeprefix('ERROR: ').removeprefix('error: ')})")
    for name, lines in reversed(attempts):  # else: the first pinned name an error line mentions
        for text in lines:
            if re.search(r"error|because|failed", text, re.IGNORECASE):
                for found, requirement in pins.items():
                    if re.search(rf"(?<![\w.-]){re.escape(found)}(?![\w-])", normalize(text)):
                        return f"could not install {requirement} into a clean environment ({name}: {text.strip()})"
    return f"could not build a clean environment from requirements.txt and requirements-test.txt with {tried}"


def _installer_tail(attempts: list[tuple[str, list[str]]]) -> str:
    def useful(lines: list[str]) -> list[str]:  # pip repeats a harmless warning per index that lacks a package
        return [text for text in lines if not re.match(r"WARNING: Location '.*' is ignored", text)]

    return "\n".join(f"--- {name} ---\n" + "\n".join(useful(lines)[-ERROR_TAIL_LINES:]) for name, lines in attempts)


def _test_env(environment: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in LEAKY_VARIABLES}
    env.update(PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1", PYTHONUNBUFFERED="1",
               VIRTUAL_ENV=str(environment))
    env["PATH"] = os.pathsep.join([str(_venv_python(environment).parent), env.get("PATH", "")])
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


def main_verify(project: str) -> int:
    """`mlship verify PROJECT`: progress on stdout, exit code 0 only if the tests pass in a clean environment."""
    def on_step(name: str, status: str, seconds: float | None) -> None:
        took = f" ({seconds:.1f} s)" if seconds is not None else ""
        print(f"[{name}] {status}{took}", flush=True)

    try:
        result = verify_project(Path(project), on_line=lambda text: print(f"  {text}", flush=True),
                                on_step=on_step)
    except VerifyError as exc:
        print(f"verify failed: {exc}", file=sys.stderr, flush=True)
        return 1
    how = "reused" if result.reused_environment else f"built with {result.installer}"
    verdict = "PASSED" if result.passed else "FAILED"
    print(f"{verdict}: {result.tests_passed} passed, {result.tests_failed} failed in {result.seconds:.1f} s "
          f"(environment {how}: {result.environment})", flush=True)
    return 0 if result.passed else 1
