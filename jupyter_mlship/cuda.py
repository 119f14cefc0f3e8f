"""GPU policy: which CUDA release a capture needs, and the base image that carries its runtime.

Pure functions of the ShipSpec (no subprocess, no builder), so the review (render) reads them as the build does.

CUDA builds show in the pins in two naming schemes:

- CUDA 12 (and 11): every NVIDIA wheel has a suffix, ``nvidia-cuda-runtime-cu12==12.8.90``,
  ``nvidia-cudnn-cu12``...; PyTorch's own index adds a local version, ``torch==2.7.1+cu128``.
- CUDA 13: the toolkit wheels lost the suffix, ``nvidia-cuda-runtime==13.0.96`` and the meta package
  ``cuda-toolkit==13.0.2`` (plain PyPI ``torch`` depends on it); libraries released on their own keep
  one (``nvidia-cudnn-cu13``); PyTorch's index says ``+cu130``.

The most precise pin wins: the runtime wheel's version, then cuda-toolkit's, then torch's local
version; any ``nvidia-*-cuNN`` says only the major release.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from .spec import ShipSpec

# CUDA minor release -> the newest nvidia/cuda tag of that release known here. Tags read
# `nvidia/cuda:<major>.<minor>.<patch>-runtime-ubuntu<YY>.04` (see docs/gpu.md). The releases are those
# torch wheels were built for: cu118 to cu129 and cu130 on PyTorch's index; plain PyPI torch 2.11 to 2.15
# depends on cuda-toolkit 13.0 to 13.2.
CUDA_IMAGE_RELEASES = {
    "11.8": "11.8.0", "12.1": "12.1.1", "12.4": "12.4.1", "12.6": "12.6.3", "12.8": "12.8.1", "12.9": "12.9.1",
    "13.0": "13.0.1", "13.1": "13.1.0", "13.2": "13.2.0",
}
# Ubuntu LTS releases of the nvidia/cuda images: the Python each ships as its python3, and the first
# CUDA release with images on it.
UBUNTU_PYTHON = {"22.04": "3.10", "24.04": "3.12"}
UBUNTU_FIRST_CUDA = {"22.04": (11, 7), "24.04": (12, 5)}
CUDA_IMAGE_TAG = re.compile(r"^nvidia/cuda:(\d+)\.(\d+)\.(\d+)-runtime-ubuntu(\d{2}\.04)$")

_RUNTIME_WHEEL = re.compile(r"^nvidia-cuda-runtime(-cu(\d+))?$")
_SUFFIXED_WHEEL = re.compile(r"^nvidia-[a-z0-9-]+-cu(\d+)$")
_TORCH_LOCAL = re.compile(r"\+cu(\d{3,})$")  # cu128 -> 12.8, cu130 -> 13.0, cu118 -> 11.8


@dataclass(frozen=True)
class GpuBase:
    """The CUDA base image of a GPU build, and how the Dockerfile puts the notebook's Python in it."""

    image: str
    cuda: str  # what the pins say: "13.0", or only "13"
    release: str  # the image's CUDA release, e.g. "13.0.1"
    because: str  # the pin that says so, e.g. "cuda-toolkit==13.0.2"
    python: str  # major.minor of the notebook
    python_source: str  # "ubuntu" (the image's own python3) or "uv" (a standalone build installed by uv)

    @property
    def reason(self) -> str:
        how = (f"Python {self.python} is Ubuntu's own python3 there" if self.python_source == "ubuntu" else
               f"the Dockerfile installs Python {self.python} with uv (python-build-standalone), "
               "as no Ubuntu LTS of the CUDA images ships it")
        return (
            f"the capture needs CUDA {self.cuda} ({self.because}); {self.image} carries the CUDA {self.release} "
            f"runtime libraries, and {how}. The container needs a GPU at run time "
            "(docker run --gpus all / podman --device nvidia.com/gpu=all)."
        )


def _spec_dict(spec: ShipSpec | Mapping[str, Any]) -> Mapping[str, Any]:
    return spec.to_json_dict() if isinstance(spec, ShipSpec) else spec


def _pins(spec: ShipSpec | Mapping[str, Any]) -> dict[str, str]:
    return {re.sub(r"[-_.]+", "-", r["name"]).lower(): r["version"] for r in _spec_dict(spec).get("requirements", [])}


def _major_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def cuda_version(spec: ShipSpec | Mapping[str, Any]) -> tuple[str, str] | None:
    """(CUDA "major.minor" or "major", the requirement that says so) when the capture needs CUDA."""
    pins = _pins(spec)
    for name, version in sorted(pins.items()):
        if _RUNTIME_WHEEL.match(name):
            return _major_minor(version), f"{name}=={version}"
    if "cuda-toolkit" in pins:
        return _major_minor(pins["cuda-toolkit"]), f"cuda-toolkit=={pins['cuda-toolkit']}"
    torch = pins.get("torch", "")
    local = _TORCH_LOCAL.search(torch)
    if local:
        digits = local.group(1)
        return f"{digits[:-1]}.{digits[-1]}", f"torch=={torch}"
    for name, version in sorted(pins.items()):
        suffixed = _SUFFIXED_WHEEL.match(name)
        if suffixed:
            return suffixed.group(1), f"{name}=={version}"
    return None


def _release_key(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split("."))


def python_source(python: str, ubuntu: str) -> str:
    """"ubuntu" when that Ubuntu's own python3 is the notebook's minor version, else "uv"."""
    return "ubuntu" if UBUNTU_PYTHON.get(ubuntu) == python else "uv"


def gpu_base(spec: ShipSpec | Mapping[str, Any]) -> GpuBase | None:
    """The CUDA base for a capture whose requirements hold a CUDA build, else None."""
    found = cuda_version(spec)
    if found is None:
        return None
    cuda, because = found
    release = CUDA_IMAGE_RELEASES.get(cuda)
    if release is None:
        # Only the major is known (or a minor without its own image): the oldest image of that major
        # asks the least of the host's driver, and the wheels carry their own CUDA libraries anyway.
        same_major = [v for k, v in CUDA_IMAGE_RELEASES.items() if k.split(".")[0] == cuda.split(".")[0]]
        if not same_major:
            return None
        older = [v for v in same_major if _release_key(v)[:2] <= _release_key(cuda)]
        release = same_major[0] if "." not in cuda or not older else max(older, key=_release_key)
    python = ".".join(str(_spec_dict(spec).get("python_version", "3")).split(".")[:2])
    # Ubuntu's own python3 where an LTS with this CUDA ships the notebook's version; else the newest
    # such LTS, and uv installs the Python.
    ubuntus = [u for u, first in UBUNTU_FIRST_CUDA.items() if _release_key(release)[:2] >= first]
    ubuntu = next((u for u in ubuntus if UBUNTU_PYTHON[u] == python), ubuntus[-1])
    image = f"nvidia/cuda:{release}-runtime-ubuntu{ubuntu}"
    return GpuBase(image=image, cuda=cuda, release=release, because=because, python=python,
                   python_source=python_source(python, ubuntu))


def gpu_base_image(spec: ShipSpec | Mapping[str, Any]) -> tuple[str, str] | None:
    """(CUDA base image, why) for a capture whose requirements hold a CUDA build, else None."""
    base = gpu_base(spec)
    return None if base is None else (base.image, base.reason)


def runs_on_gpu(spec: ShipSpec | Mapping[str, Any]) -> bool:
    """A model lived on a CUDA device in the notebook (ship.json: artifacts[].device)."""
    return any(str(a.get("device", "cpu")).startswith("cuda") for a in _spec_dict(spec).get("artifacts", []))


def default_gpu_base(spec: ShipSpec | Mapping[str, Any]) -> GpuBase | None:
    """The base a build takes without --gpu/--no-gpu: CUDA only for a model that ran on a GPU.

    CUDA libraries in the pins alone (a CUDA build of torch serving a CPU model) do not need a CUDA
    image: the wheels carry their own libraries and run on the CPU in a slim one."""
    return gpu_base(spec) if runs_on_gpu(spec) else None


def cpu_only_reason(spec: ShipSpec | Mapping[str, Any]) -> str:
    pins = _pins(spec)
    if gpu_base(spec) is not None:
        return "every model ran on the CPU in the notebook (build with --gpu for a CUDA image anyway)"
    if "torch" in pins:
        return f"torch=={pins['torch']} is not a CUDA build, so the model runs on the CPU"
    return "the captured requirements hold no CUDA build of torch nor NVIDIA CUDA libraries (nvidia-*-cu*, cuda-toolkit)"
