"""GPU policy: which CUDA release a capture needs and the base image that carries its runtime.

Pure functions of the ShipSpec (no subprocess, no builder): review and render read them too.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from ..spec import ShipSpec

# CUDA minor release -> the newest nvidia/cuda runtime tag of that release.
CUDA_IMAGE_RELEASES = {
    "11.8": "11.8.0", "12.1": "12.1.1", "12.2": "12.2.2", "12.3": "12.3.2", "12.4": "12.4.1",
    "12.5": "12.5.1", "12.6": "12.6.3", "12.8": "12.8.1", "12.9": "12.9.1",
}
# Python of the notebook -> the Ubuntu of nvidia/cuda images that packages it (see the Dockerfile).
UBUNTU_FOR_PYTHON = {"3.10": "22.04", "3.11": "22.04", "3.12": "24.04"}


def _spec_dict(spec: ShipSpec | Mapping[str, Any]) -> Mapping[str, Any]:
    return spec.to_json_dict() if isinstance(spec, ShipSpec) else spec


def cuda_version(spec: ShipSpec | Mapping[str, Any]) -> tuple[str, str] | None:
    """(CUDA major.minor or major, the requirement that says so) when the capture needs CUDA."""
    requirements = {r["name"].lower().replace("_", "-"): r["version"] for r in _spec_dict(spec).get("requirements", [])}
    runtime = requirements.get("nvidia-cuda-runtime-cu12") or requirements.get("nvidia-cuda-runtime-cu11")
    if runtime:
        name = "nvidia-cuda-runtime-cu12" if "nvidia-cuda-runtime-cu12" in requirements else "nvidia-cuda-runtime-cu11"
        return ".".join(runtime.split(".")[:2]), f"{name}=={runtime}"
    torch = requirements.get("torch", "")
    match = re.search(r"\+cu(\d{3,})$", torch)  # cu124 -> 12.4, cu118 -> 11.8
    if match:
        digits = match.group(1)
        return f"{digits[:-1]}.{digits[-1]}", f"torch=={torch}"
    for name, version in sorted(requirements.items()):
        nvidia = re.match(r"^nvidia-[a-z0-9-]+-cu(\d+)$", name)
        if nvidia:
            return nvidia.group(1), f"{name}=={version}"
    return None


def gpu_base_image(spec: ShipSpec | Mapping[str, Any]) -> tuple[str, str] | None:
    """(CUDA base image, why) for a capture whose requirements hold a CUDA build, else None."""
    found = cuda_version(spec)
    if found is None:
        return None
    cuda, because = found
    python = ".".join(str(_spec_dict(spec).get("python_version", "3")).split(".")[:2])
    release = CUDA_IMAGE_RELEASES.get(cuda)
    if release is None:  # only a major version, or a release without its own image: newest of that major
        same_major = [v for k, v in CUDA_IMAGE_RELEASES.items() if k.split(".")[0] == cuda.split(".")[0]]
        if not same_major:
            return None
        release = same_major[-1]
    ubuntu = UBUNTU_FOR_PYTHON.get(python, "24.04")
    image = f"nvidia/cuda:{release}-runtime-ubuntu{ubuntu}"
    reason = (
        f"the capture needs CUDA {cuda} ({because}); {image} carries the CUDA {release} runtime libraries, "
        f"and the Dockerfile installs Python {python} from Ubuntu {ubuntu} into it. "
        "The container needs a GPU at run time (docker run --gpus all / podman --device nvidia.com/gpu=all)."
    )
    return image, reason


def cpu_only_reason(spec: ShipSpec | Mapping[str, Any]) -> str:
    requirements = {r["name"].lower(): r["version"] for r in _spec_dict(spec).get("requirements", [])}
    if "torch" in requirements:
        return f"torch=={requirements['torch']} is not a CUDA build, so the model runs on the CPU"
    return "the captured requirements hold no CUDA build of torch nor nvidia-*-cu* libraries"

