"""Pins for the container's platform. The kernel may run on macOS or Windows; the image is Linux x86-64.

capture_requirements reads the kernel's installed distributions, whose dependency markers were evaluated
for the kernel's platform (colorama only on Windows, appnope only on macOS, pexpect everywhere but
Windows). Here the service's direct pins are resolved again for the target with
`uv pip compile --python-platform x86_64-manylinux_2_28 --python-version X.Y`, holding every distribution
the kernel has at the kernel's version (as constraints), through the user's pip index settings.

The result serves both places requirements.txt is installed: a pin only the kernel's platform needs keeps
a marker for that platform (verify runs on the kernel's machine), a pin only the target needs gets the
target's marker. Where uv or the index is unavailable, the kernel's pins are kept and a warning says so
(it reaches REVIEW.md through the spec's warnings). Resolutions are cached on disk by their inputs.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import default_environment

from ..spec import Requirement
from .environment import (
    NOTEBOOK_ONLY,
    PipIndexSettings,
    capture_requirements,
    find_uv,
    normalize,
    pip_index_settings,
    root_distributions,
)

TARGET_PLATFORM = "x86_64-manylinux_2_28"  # uv's name for the container's platform (glibc 2.28+, x86-64)
TARGET_DESCRIPTION = "Linux x86-64"
TARGET_MARKER = 'sys_platform == "linux" and platform_machine == "x86_64"'
RESOLVE_TIMEOUT = 600.0
_PIN_LINE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(\S+)\s*(?:;[^#]*)?(?:#\s*via\s+(.*))?$")


@dataclass
class TargetPins:
    requirements: list[Requirement]
    warnings: list[str] = field(default_factory=list)  # for spec.warnings (REVIEW.md)
    resolved: bool = False  # False: the kernel's own pins, kept because resolution was not possible


def pin_cache_root() -> Path:
    """`$MLSHIP_PIN_CACHE`, else ~/.cache/jupyter-mlship/pins."""
    configured = os.environ.get("MLSHIP_PIN_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "jupyter-mlship" / "pins"


def service_requirements(modules: Sequence[str], python_version: str,
                         settings: PipIndexSettings | None = None) -> TargetPins:
    """requirements.txt of a service importing ``modules``: the kernel's pins resolved for the container."""
    kernel = capture_requirements(modules)
    direct = {normalize(name) for name in root_distributions(modules)}
    roots = [r for r in kernel if normalize(r.name) in direct]
    return pins_for_target(roots, kernel, python_version, settings)


def pins_for_target(roots: Sequence[Requirement], kernel: Sequence[Requirement], python_version: str,
                    settings: PipIndexSettings | None = None,
                    kernel_environment: Mapping[str, str] | None = None) -> TargetPins:
    """Resolve ``roots`` (the service's direct pins) for Linux x86-64 at ``python_version``'s X.Y, holding the
    ``kernel``'s pins (the closure capture_requirements found) at their versions.

    ``kernel_environment``: the kernel's PEP 508 marker values (default: this interpreter's)."""
    kernel_env = dict(kernel_environment or default_environment())
    uv = find_uv()
    if uv is None:
        return _kept(kernel, kernel_env, "uv is not installed")
    settings = settings if settings is not None else pip_index_settings()
    python = ".".join(python_version.split(".")[:2])
    inputs = "".join(f"{r.name}=={r.version}\n" for r in sorted(roots, key=lambda r: normalize(r.name)))
    constraints = "".join(f"{r.name}=={r.version}\n" for r in sorted(kernel, key=lambda r: normalize(r.name)))
    options = ["--python-platform", TARGET_PLATFORM, "--python-version", python, *settings.uv_args()]
    key = hashlib.sha256("\0".join([inputs, constraints, *options, repr(sorted(settings.uv_env().items()))])
                         .encode()).hexdigest()[:24]
    cached = pin_cache_root() / f"{key}.txt"
    if cached.is_file():
        text = cached.read_text(encoding="utf-8")
    else:
        done, text = _compile(uv, inputs, constraints, "", options, settings)
        # Notebook front ends that libraries declare are left out, as capture_requirements leaves them out:
        # a second pass overrides them with a marker that is never true, which drops their subtree too.
        kernel_names = {normalize(r.name) for r in kernel}
        notebook_only = sorted({normalize(name) for name, _, _ in (_parse(text) if done else [])
                                if NOTEBOOK_ONLY.match(normalize(name)) and normalize(name) not in kernel_names})
        if notebook_only:
            overrides = "".join(f'{name} ; python_version < "0"\n' for name in notebook_only)
            done, text = _compile(uv, inputs, constraints, overrides, options, settings)
        if not done:
            return _kept(kernel, kernel_env, f"uv could not resolve them ({text})")
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = cached.with_name(f".{cached.name}.{os.getpid()}")
        partial.write_text(text, encoding="utf-8")
        partial.replace(cached)  # atomic: a reader never sees half a file
    return TargetPins(requirements=_merge(_parse(text), kernel, kernel_env), resolved=True)


def _compile(uv: str, inputs: str, constraints: str, overrides: str, options: list[str],
             settings: PipIndexSettings) -> tuple[bool, str]:
    """(True, uv's requirements output) or (False, the first line of its error)."""
    env = {**os.environ, "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1"}
    for name, value in settings.uv_env().items():
        env.setdefault(name, value)
    with tempfile.TemporaryDirectory(prefix="mlship-pins-") as scratch:
        (Path(scratch) / "service.in").write_text(inputs, encoding="utf-8")
        (Path(scratch) / "kernel.txt").write_text(constraints, encoding="utf-8")
        (Path(scratch) / "left-out.txt").write_text(overrides, encoding="utf-8")
        command = [uv, "pip", "compile", "service.in", "--constraint", "kernel.txt", "--override", "left-out.txt",
                   "--no-header", "--annotation-style", "line", "--quiet", *options]
        try:
            done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True,
                                  timeout=RESOLVE_TIMEOUT)
        except (OSError, subprocess.SubprocessError) as exc:
            return False, str(exc)
    if done.returncode != 0:
        errors = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        cause = next((line for line in errors if line.startswith(("cause:", "╰─▶", "Because"))), None)
        return False, (cause or (errors[0] if errors else f"exit code {done.returncode}")).removeprefix("cause: ")
    return True, done.stdout


def _parse(text: str) -> list[tuple[str, str, list[str]]]:
    """(name, version, via) from `uv pip compile --annotation-style line` output."""
    pins = []
    for line in text.splitlines():
        match = _PIN_LINE.match(line.strip())
        if match:
            via = [part.strip() for part in (match.group(3) or "").split(",") if part.strip()]
            pins.append((match.group(1), match.group(2), [v for v in via if not v.startswith("-r ")]))
    return pins


def _merge(target: list[tuple[str, str, list[str]]], kernel: Sequence[Requirement],
           kernel_env: Mapping[str, str]) -> list[Requirement]:
    """Target pins (kernel's entries where both have them) + kernel-only pins marked for the kernel's platform."""
    by_name = {normalize(r.name): r for r in kernel}
    merged: dict[str, Requirement] = {}
    for name, version, via in target:
        known = by_name.get(normalize(name))
        if known is not None and known.version == version:
            merged[normalize(name)] = known.model_copy(update={"marker": None})
        else:  # only the container's platform needs it (or needs another version of it)
            merged[normalize(name)] = Requirement(name=name, version=version, because=via, marker=TARGET_MARKER)
    marker = kernel_marker(kernel_env)
    for key, requirement in by_name.items():
        if key not in merged:
            merged[key] = requirement.model_copy(update={"marker": marker})
    return sorted(merged.values(), key=lambda r: normalize(r.name))


def kernel_marker(kernel_env: Mapping[str, str]) -> str:
    """A marker true on the kernel's platform and false in the container, where the two differ."""
    system, machine = kernel_env.get("sys_platform", ""), kernel_env.get("platform_machine", "")
    if system != "linux":
        return f'sys_platform == "{system}"'
    if machine != "x86_64":
        return f'sys_platform == "linux" and platform_machine == "{machine}"'
    return TARGET_MARKER  # same platform: the container gets it too, as before this step existed


def _kept(kernel: Sequence[Requirement], kernel_env: Mapping[str, str], why: str) -> TargetPins:
    where = f"{kernel_env.get('sys_platform', '?')} {kernel_env.get('platform_machine', '?')}"
    return TargetPins(requirements=list(kernel), warnings=[
        f"the service's pins were not resolved for {TARGET_DESCRIPTION}: {why}; requirements.txt holds the "
        f"kernel's pins for {where}, so dependencies that differ by platform may be missing or extra in the image"
    ])
