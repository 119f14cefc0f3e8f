"""The local base image for container tests (no registry is reachable in CI), made once and cached."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

BASE_IMAGE = "localhost/mlship-python-base:3.11"
SCRIPT = Path(__file__).with_name("make_base_image.sh")


def missing_tools() -> str | None:
    """Why container tests cannot run here, or None."""
    if not shutil.which("podman"):
        return "podman is not installed (apt-get install -y podman runc mmdebstrap)"
    return None


def ensure_base_image(tag: str = BASE_IMAGE) -> str:
    """Make the base image unless `podman image exists` says it is there; returns its tag."""
    if subprocess.run(["podman", "image", "exists", tag]).returncode == 0:
        return tag
    if not shutil.which("mmdebstrap"):
        raise RuntimeError(f"{tag} is missing and mmdebstrap is not installed to make it (apt-get install -y mmdebstrap)")
    subprocess.run(["sh", str(SCRIPT), tag], check=True, timeout=900)
    return tag
