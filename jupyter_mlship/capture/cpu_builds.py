"""CPU images carry no CUDA: when every model ran on the CPU, pin the CPU-only build of a library
where the package index has one at the same version, and leave out the CUDA libraries only it needed.

Two kinds of CPU-only build:

- A twin distribution: ``xgboost``'s manylinux wheel carries CUDA code and depends on
  ``nvidia-nccl-cu12`` (~970 MB in an image); ``xgboost-cpu`` is the same release without them, and
  provides the same ``xgboost`` module.
- A local version on PyTorch's CPU index: plain PyPI ``torch`` on Linux x86-64 is a CUDA build (it
  pulls ``nvidia-*``, ``cuda-toolkit`` and ``triton``: several GB), as is ``torch==X+cuNNN`` from
  PyTorch's index; ``torch==X+cpu`` from https://download.pytorch.org/whl/cpu is the same release
  without CUDA. torchvision and torchaudio pinned with the same CUDA build go with it, all or none (a
  CUDA torchvision does not load on a CPU torch). requirements.txt then names PyTorch's index
  (templates' requirements.txt), so pip in a ``docker build``, CI and verify find the ``+cpu`` pins.

The index is asked at export time, through pip, so the user's own settings (proxy, certificates,
find-links) apply; when the CPU build is missing there (or the index cannot be asked), the pins stay
and the review says why.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

from packaging.markers import default_environment

from ..spec import Requirement
from .environment import normalize
from .target import TARGET_MARKER, kernel_marker

# Distribution whose wheel carries CUDA -> its CPU-only twin, released with the same versions. The
# service's loader (app/loaders.py, CPU_TWINS) accepts the twin where an artifact names the original.
CPU_TWINS = {"xgboost": "xgboost-cpu"}
# Released by PyTorch as builds of one version: `+cpu`, `+cu128`... on https://download.pytorch.org/whl/<build>.
TORCH_FAMILY = ("torch", "torchvision", "torchaudio")
PYTORCH_INDEX = "https://download.pytorch.org/whl"
PYTORCH_CPU_INDEX = f"{PYTORCH_INDEX}/cpu"
# Distributions that only serve CUDA: left out when nothing but a replaced distribution needed them.
# triton is torch's GPU kernel compiler: only CUDA builds of torch depend on it.
CUDA_ONLY = re.compile(r"^(nvidia-[a-z0-9-]+|cuda-(toolkit|bindings|core|pathfinder|python)|cupy-cuda[0-9x]+|triton)$")
# The image's platform in pip's tags (capture/target.py resolves for it); older +cpu wheels say linux_x86_64.
PIP_PLATFORMS = ("manylinux_2_28_x86_64", "linux_x86_64")
INDEX_TIMEOUT = 60.0
# pip's words (at -vv) when an index could not be read, as opposed to read and found without the package
# (a 404 of the project's page is that answer).
_UNREACHABLE = re.compile(r"Could not fetch URL \S+: (connection error|timed out|There was a problem confirming)")

# (distribution, index URL or None for the user's own settings) -> versions there, or None if not asked.
VersionsOnIndex = Callable[[str, "str | None"], "list[str] | None"]


@dataclass
class CpuPins:
    requirements: list[Requirement]
    renamed: dict[str, str] = field(default_factory=dict)  # original distribution -> CPU twin
    rebuilt: dict[str, str] = field(default_factory=dict)  # distribution -> CPU build's version, e.g. "2.11.0+cpu"
    dropped: list[str] = field(default_factory=list)  # CUDA-only pins left out
    warnings: list[str] = field(default_factory=list)


def versions_on_index(name: str, index_url: str | None = None) -> list[str] | None:
    """Versions of ``name`` with wheels for the image's platform that pip finds with this machine's settings
    (``index_url`` in place of the configured index where given); None if pip could not read every index."""
    # -vv: pip says only at debug level that an index could not be read.
    command = [sys.executable, "-m", "pip", "index", "versions", name, "--disable-pip-version-check", "-vv",
               *(arg for platform in PIP_PLATFORMS for arg in ("--platform", platform))]
    if index_url:
        command += ["--index-url", index_url]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=INDEX_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    output = done.stderr + done.stdout
    if _UNREACHABLE.search(output):
        return None  # what the other sources list says nothing of the index that was not read
    if done.returncode != 0:
        # "No matching distribution" after reading every index is an answer (none there); anything else is not.
        return [] if "No matching distribution" in output else None
    match = re.search(r"^Available versions:\s*(.+)$", done.stdout, re.MULTILINE)
    return [v.strip() for v in match.group(1).split(",")] if match else []


def image_pins(requirements: Iterable[Requirement], devices: Iterable[str],
               versions: VersionsOnIndex = versions_on_index) -> CpuPins:
    """The pins of the image: CPU-only builds where every model ran on the CPU, the pins as they are otherwise
    (a model on a GPU needs the CUDA builds)."""
    requirements = list(requirements)
    if any(device.startswith("cuda") for device in devices):
        return CpuPins(requirements=requirements)
    return cpu_only_pins(requirements, versions, kernel_marker(default_environment()))


def cpu_only_pins(requirements: Iterable[Requirement], versions: VersionsOnIndex = versions_on_index,
                  kernel: str = TARGET_MARKER) -> CpuPins:
    """Swap CUDA-carrying distributions for their CPU-only builds where the index has the same version.

    ``kernel``: the marker of the kernel's platform (capture/target.py). Where it is not the image's, the
    CPU build is pinned for the image only and the kernel's own pin stays for the kernel's platform (verify
    runs there: a macOS kernel has no `+cpu` torch nor xgboost-cpu wheel)."""
    requirements = list(requirements)
    by_name = {normalize(r.name): r for r in requirements}
    result = CpuPins(requirements=[])
    for original, twin in CPU_TWINS.items():
        pin = by_name.get(original)
        if pin is None or twin in by_name:
            continue
        found = versions(twin, None)
        if found is not None and pin.version in found:
            result.renamed[original] = twin
            continue
        why = ("the package index could not be asked" if found is None
               else f"the package index has no {twin}=={pin.version}")
        result.warnings.append(
            f"{original}=={pin.version} is pinned although the model ran on the CPU: {why}, and its wheel "
            f"carries CUDA code (hundreds of MB in the image); pin {twin} when your index has it"
        )
    _torch_cpu_builds(by_name, versions, result)
    replaced = set(result.renamed) | set(result.rebuilt)
    dropped = _cuda_only_for(requirements, replaced)
    for requirement in requirements:
        key = normalize(requirement.name)
        if key in result.renamed or key in result.rebuilt:
            change = {"name": result.renamed[key]} if key in result.renamed else {"version": result.rebuilt[key]}
            if kernel != TARGET_MARKER and requirement.marker is None:
                result.requirements.append(requirement.model_copy(update={"marker": kernel}))
                change["marker"] = TARGET_MARKER
            result.requirements.append(requirement.model_copy(update=change))
        elif key in dropped:
            result.dropped.append(f"{requirement.name}=={requirement.version}")
        else:
            result.requirements.append(requirement)
    result.requirements.sort(key=lambda r: normalize(r.name))
    return result


def cuda_torch_builds(requirements: Iterable[Requirement]) -> dict[str, str]:
    """torch, torchvision, torchaudio pins that are CUDA builds: name -> pinned version.

    ``+cuNNN`` is a CUDA build; a version without a local label is one where torch's CUDA libraries are
    pinned with it (plain PyPI torch on Linux x86-64); ``+cpu`` (or a plain macOS torch) is not."""
    pins = {normalize(r.name): r for r in requirements}
    torch_needs_cuda = any(CUDA_ONLY.match(key) and "torch" in {normalize(b) for b in r.because}
                           for key, r in pins.items())
    found = {}
    for name in TORCH_FAMILY:
        pin = pins.get(name)
        if pin is None:
            continue
        local = pin.version.partition("+")[2]
        if local.startswith("cu") or (not local and torch_needs_cuda):
            found[name] = pin.version
    return found


def _torch_cpu_builds(pins: dict[str, Requirement], versions: VersionsOnIndex, result: CpuPins) -> None:
    """torch and its companions at ``<version>+cpu`` when PyTorch's CPU index has every one of them."""
    cuda_builds = cuda_torch_builds(pins.values())
    if not cuda_builds:
        return
    wanted = {name: version.partition("+")[0] + "+cpu" for name, version in cuda_builds.items()}
    missing = []
    for name, version in wanted.items():
        found = versions(name, PYTORCH_CPU_INDEX)
        if found is None:
            missing.append(f"{PYTORCH_CPU_INDEX} could not be asked for {name}")
        elif version not in found:
            missing.append(f"{PYTORCH_CPU_INDEX} has no {name}=={version}")
    if not missing:
        result.rebuilt.update(wanted)
        return
    pinned = ", ".join(f"{name}=={version}" for name, version in cuda_builds.items())
    result.warnings.append(
        f"{pinned} {'is a CUDA build' if len(cuda_builds) == 1 else 'are CUDA builds'} although the model ran on "
        f"the CPU: {'; '.join(missing)}, so the image carries CUDA's libraries (GBs); pin the +cpu build of the "
        "same version when the index has it"
    )


def _cuda_only_for(requirements: list[Requirement], replaced: set[str]) -> set[str]:
    """CUDA-only pins needed by nothing but the replaced distributions, directly or through each other
    (nvidia-cublas is there for torch and for nvidia-cudnn, itself there for torch)."""
    if not replaced:
        return set()
    candidates = {normalize(r.name): {normalize(b) for b in r.because}
                  for r in requirements if CUDA_ONLY.match(normalize(r.name)) and r.because}
    dropped: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name, because in candidates.items():
            if name not in dropped and because <= replaced | dropped:
                dropped.add(name)
                changed = True
    return dropped
