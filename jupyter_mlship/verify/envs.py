"""Clean environments built only from a project's pins, cached by what they hold.

An environment's folder name is a hash of the interpreter and both requirements files, so re-exports of an
unchanged project reuse it. A half-built environment is never reused: it is built in a temporary folder
next to its final place under a lock, and renamed only when complete (with a marker file inside).
Environments hold their libraries' bytecode: the tests run with PYTHONDONTWRITEBYTECODE, so without it every
verify compiled pandas, scikit-learn and the rest from source again (about 6 of 9 s on two cores).
Installer: uv with the user's pip index settings carried over (uv does not read pip's configuration),
else pip itself.
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
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..capture.environment import find_uv, normalize, pip_index_settings, python_version
from ..procs import run_streaming

LineCallback = Callable[[str], None]

MARKER = ".mlship-env.json"  # written last inside a complete environment
INSTALL_TIMEOUT = 3600.0  # a large framework (torch) from a slow index can take many minutes
ERROR_TAIL_LINES = 40  # installer output attached to a VerifyError


class VerifyError(Exception):
    """The clean environment could not be built; ``output`` holds the tail of the installer's output."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output


def environment_key(files: Sequence[Path]) -> str:
    """Same interpreter and same pins → same environment, whatever the line order or comments."""
    digest = hashlib.sha256()
    digest.update(f"{python_version()} {sys.implementation.name} {sys.platform} {platform.machine()}\n".encode())
    for path in files:
        lines = sorted(requirement_lines(path))
        digest.update(f"{path.name}\n".encode() + "\n".join(lines).encode() + b"\n\0")
    return digest.hexdigest()[:24]


def cache_root() -> Path:
    """`$MLSHIP_ENV_CACHE`, else ~/.cache/jupyter-mlship/envs."""
    configured = os.environ.get("MLSHIP_ENV_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "jupyter-mlship" / "envs"


def requirement_lines(path: Path) -> list[str]:
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line]


def venv_python(environment: Path) -> Path:
    return environment / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_environment(files: list[Path], on_line: LineCallback) -> tuple[Path, str, bool]:
    """(venv, installer, reused): reuse a complete cached venv or build one under a lock."""
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    key = environment_key(files)
    final = root / key
    if _is_complete(final) and _marker(final).get("bytecode"):
        return final, _marker_installer(final), True
    with file_lock(root / f".{key}.lock"):
        if _is_complete(final):  # another process finished it while we waited, or it predates bytecode
            _ensure_bytecode(final, on_line)
            return final, _marker_installer(final), True
        if final.exists():  # broken (its base interpreter is gone) or left by a foreign tool
            shutil.rmtree(final, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f".{key}.building-", dir=root))
        try:
            installer = _build(building, files, on_line)
            _write_marker(building, {
                "installer": installer, "python": python_version(), "base": sys.executable,
                "requirements": {path.name: requirement_lines(path) for path in files}, "bytecode": True,
            })
            building.rename(final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return final, installer, False


def _is_complete(environment: Path) -> bool:
    return (environment / MARKER).is_file() and venv_python(environment).exists()


def _marker(environment: Path) -> dict:
    try:
        found = json.loads((environment / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _marker_installer(environment: Path) -> str:
    return str(_marker(environment).get("installer", "pip"))


def _write_marker(environment: Path, content: dict) -> None:
    partial = environment / f".{MARKER}.{os.getpid()}"
    partial.write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")
    partial.replace(environment / MARKER)  # atomic: a reader never sees half a marker


def _ensure_bytecode(environment: Path, on_line: LineCallback) -> None:
    """Compile the libraries of an environment cached before environments held bytecode (once; under the lock).

    Each .pyc is written atomically, so a verify reading the environment meanwhile sees a file or none."""
    marker = _marker(environment)
    if marker.get("bytecode"):
        return
    on_line("compiling the cached environment's libraries to bytecode (once)")
    # A library file that does not compile (a template, an old test) fails compileall, not the environment:
    # it is marked either way, so the attempt is made once.
    run_streaming([str(venv_python(environment)), "-m", "compileall", "-q", "-j", "0",
                   *(str(path) for path in _site_packages(environment))],
                  cwd=environment, env=_compile_env(), on_line=lambda text: None, timeout=INSTALL_TIMEOUT)
    _write_marker(environment, {**marker, "bytecode": True})


def _site_packages(environment: Path) -> list[Path]:
    return sorted(environment.glob("lib/python*/site-packages")) or [environment / "Lib" / "site-packages"]


def _compile_env() -> dict[str, str]:
    return {name: value for name, value in os.environ.items()
            if name not in {"PYTHONPATH", "PYTHONHOME", "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE"}}


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
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


def _build(target: Path, files: list[Path], on_line: LineCallback) -> str:
    """Install into the empty folder ``target``: uv with the user's pip settings, else pip itself."""
    with tempfile.TemporaryDirectory(prefix="mlship-requirements-") as scratch:
        return _install(target, _without_unreachable_indexes(files, Path(scratch), on_line), on_line)


# An index named in a requirements file (requirements.txt names PyTorch's for a +cpu/+cuNNN torch).
_INDEX_LINE = re.compile(r"^\s*(?:--extra-index-url|--index-url|-i|--find-links|-f)[\s=]+(https?://\S+)")
INDEX_PROBE_TIMEOUT = 10.0


def _without_unreachable_indexes(files: list[Path], scratch: Path, on_line: LineCallback) -> list[Path]:
    """The requirement files, less the index lines whose host cannot be reached from this machine.

    uv stops at an index it cannot reach (and pip retries it for every package), while the user's own
    settings may well hold the same builds (a mirror, find-links): verify installs with what is reachable,
    and an install that needed the index fails naming the requirement."""
    unreachable: dict[str, str] = {}
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = _INDEX_LINE.match(line)
            if match and match.group(1) not in unreachable:
                why = _unreachable(match.group(1))
                if why:
                    unreachable[match.group(1)] = why
    if not unreachable:
        return files
    for url, why in unreachable.items():
        on_line(f"{url} cannot be reached from here ({why}): installing without it, through your pip settings")
    copies = []
    for path in files:
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if not ((match := _INDEX_LINE.match(line)) and match.group(1) in unreachable)]
        copy = scratch / path.name
        copy.write_text("\n".join(kept) + "\n", encoding="utf-8")
        copies.append(copy)
    return copies


def _unreachable(url: str) -> str | None:
    """Why ``url``'s server gives no answer at all (name, connection, timeout); None when it answers anything."""
    import ssl
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=INDEX_PROBE_TIMEOUT).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except urllib.error.URLError as exc:
        return None if isinstance(exc.reason, ssl.SSLError) else str(exc.reason)
    except (OSError, ValueError) as exc:
        return None if isinstance(exc, ssl.SSLError) else str(exc)
    return None


def _install(target: Path, files: list[Path], on_line: LineCallback) -> str:
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
                [uv, "pip", "install", "--compile-bytecode", "--python", str(venv_python(target)), *settings.uv_args(),
                 *requirement_args],
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
        pip = ([sys.executable, "-m", "pip", "--python", str(venv_python(target))] if host_pip
               else [str(venv_python(target)), "-m", "pip"])
        more_code, more = run_streaming([*pip, "install", "--disable-pip-version-check", *requirement_args],
                                        cwd=target.parent, env=dict(os.environ), on_line=on_line,
                                        timeout=INSTALL_TIMEOUT)
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
# Installers have no structured error output, so their text is the only source here.
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
            for path in files for line in requirement_lines(path)}
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
