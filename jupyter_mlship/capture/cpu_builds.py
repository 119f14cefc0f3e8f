"""CPU images carry no CUDA: when every model ran on the CPU, pin the CPU-only build of a library
where the package index has one at the same version, and leave out the CUDA libraries only it needed.

``xgboost``'s manylinux wheel carries CUDA code and depends on ``nvidia-nccl-cu12`` (~970 MB in an
image); ``xgboost-cpu`` is the same release without them, and provides the same ``xgboost`` module.
The index is asked at export time, through pip, so the user's own index settings apply; when the
twin is missing there (or the index cannot be asked), the pin stays and the review says why.

torch needs no twin here: a CPU kernel usually runs a ``+cpu`` build already, pinned as such, and the
generated CI and builds find it on PyTorch's index (see the template's ci.yml).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..spec import Requirement
from .environment import normalize

# Distribution whose wheel carries CUDA -> its CPU-only twin, released with the same versions. The
# service's loader (app/loaders.py, CPU_TWINS) accepts the twin where an artifact names the original.
CPU_TWINS = {"xgboost": "xgboost-cpu"}
# Distributions that only serve CUDA: left out when nothing but a replaced distribution needed them.
CUDA_ONLY = re.compile(r"^(nvidia-[a-z0-9-]+|cuda-(toolkit|bindings|core|pathfinder|python)|cupy-cuda[0-9x]+)$")
INDEX_TIMEOUT = 60.0

VersionsOnIndex = Callable[[str], "list[str] | None"]


@dataclass
class CpuPins:
    requirements: list[Requirement]
    renamed: dict[str, str] = field(default_factory=dict)  # original distribution -> CPU twin
    dropped: list[str] = field(default_factory=list)  # CUDA-only pins left out
    warnings: list[str] = field(default_factory=list)


def versions_on_index(name: str) -> list[str] | None:
    """Versions of ``name`` that pip finds with this machine's index settings; None if pip could not ask."""
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "index", "versions", name, "--disable-pip-version-check"],
                              capture_output=True, text=True, timeout=INDEX_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        # "No matching distribution found" is an answer (none there); anything else is not.
        return [] if "No matching distribution" in (done.stderr + done.stdout) else None
    match = re.search(r"^Available versions:\s*(.+)$", done.stdout, re.MULTILINE)
    return [v.strip() for v in match.group(1).split(",")] if match else []


def cpu_only_pins(requirements: Iterable[Requirement], versions: VersionsOnIndex = versions_on_index) -> CpuPins:
    """Swap CUDA-carrying distributions for their CPU-only twins where the index has the same version."""
    requirements = list(requirements)
    by_name = {normalize(r.name): r for r in requirements}
    result = CpuPins(requirements=[])
    for original, twin in CPU_TWINS.items():
        pin = by_name.get(original)
        if pin is None or twin in by_name:
            continue
        found = versions(twin)
        if found is not None and pin.version in found:
            result.renamed[original] = twin
            continue
        why = ("the package index could not be asked" if found is None
               else f"the package index has no {twin}=={pin.version}")
        result.warnings.append(
            f"{original}=={pin.version} is pinned although the model ran on the CPU: {why}, and its wheel "
            f"carries CUDA code (hundreds of MB in the image); pin {twin} when your index has it"
        )
    replaced = set(result.renamed)
    for requirement in requirements:
        key = normalize(requirement.name)
        if key in replaced:
            result.requirements.append(requirement.model_copy(update={"name": result.renamed[key]}))
        elif CUDA_ONLY.match(key) and requirement.because and {normalize(b) for b in requirement.because} <= replaced:
            result.dropped.append(f"{requirement.name}=={requirement.version}")
        else:
            result.requirements.append(requirement)
    result.requirements.sort(key=lambda r: normalize(r.name))
    return result
