"""Which container builder to use on this machine, and the flags this host needs to run its images.

docker only when its daemon answers, else podman, else buildah. On hosts where crun cannot start
containers (cgroups in hybrid mode) podman/buildah are told to use runc; `run` gets rlimits no higher
than this process's own.
"""

from __future__ import annotations

import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import ShipError

BUILDERS = ("docker", "podman", "buildah")
DOCKER_INFO_TIMEOUT = 5.0
INSTALL_HINT = "apt-get install podman (or install docker and start its daemon)"


class BuildError(ShipError):
    """The image could not be built or failed its smoke test; ``str()`` is one sentence."""


@dataclass(frozen=True)
class Builder:
    name: str  # docker, podman or buildah
    executable: str
    runtime: str | None = None  # OCI runtime forced on podman/buildah where the default cannot run

    @property
    def mounts_in_build(self) -> bool:
        """podman/buildah mount volumes into RUN steps; `docker build` cannot."""
        return self.name in ("podman", "buildah")




def detect_builder(preferred: str = "auto") -> Builder:
    """The builder to use: docker only when its daemon answers, else podman, else buildah."""
    if preferred not in ("auto", *BUILDERS):
        raise BuildError(f"unknown builder {preferred!r}: choose auto, docker, podman or buildah")
    if preferred == "docker":
        docker = shutil.which("docker")
        if not docker:
            raise BuildError(f"docker is not installed: {INSTALL_HINT}")
        if not _docker_daemon_answers(docker):
            raise BuildError(
                "docker is installed but its daemon does not answer (`docker info` failed): "
                "start dockerd, or use --builder podman"
            )
        return Builder("docker", docker)
    if preferred in ("podman", "buildah"):
        executable = shutil.which(preferred)
        if not executable:
            raise BuildError(f"{preferred} is not installed: apt-get install {preferred} (or install docker and start its daemon)")
        return Builder(preferred, executable, _runtime_override(preferred, executable))
    docker = shutil.which("docker")
    if docker and _docker_daemon_answers(docker):
        return Builder("docker", docker)
    for name in ("podman", "buildah"):
        executable = shutil.which(name)
        if executable:
            return Builder(name, executable, _runtime_override(name, executable))
    raise BuildError(f"no container builder found: {INSTALL_HINT}")


def _docker_daemon_answers(docker: str) -> bool:
    try:
        done = subprocess.run([docker, "info"], capture_output=True, timeout=DOCKER_INFO_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _cgroups_hybrid_with_v2_controllers() -> bool:
    """crun refuses to start containers when cgroup v1 and a v2 hierarchy with controllers coexist."""
    controllers = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    try:
        return bool(controllers.read_text().strip())
    except OSError:
        return False


def _runtime_override(name: str, executable: str) -> str | None:
    if not _cgroups_hybrid_with_v2_controllers():
        return None
    runc = shutil.which("runc")
    if runc:
        return "runc"
    try:
        default = subprocess.run(
            [executable, "info", "--format", "{{.Host.OCIRuntime.Name}}"],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        default = ""
    if default in ("", "crun"):
        raise BuildError(
            f"{name}'s runtime crun cannot start containers on this host (cgroups in hybrid mode): "
            "apt-get install runc"
        )
    return None



def image_size(builder: Builder, image: str) -> int | None:
    """Bytes of a local image (None when it is not present)."""
    # buildah shares podman's image store but has no `image inspect`.
    inspector = builder.executable if builder.name != "buildah" else shutil.which("podman")
    if inspector is None:
        return None
    cmd = [inspector, "image", "inspect", "--format", "{{.Size}}", image]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = done.stdout.strip()
    return int(text) if done.returncode == 0 and text.isdigit() else None



def _rlimit_flags() -> list[str]:
    """Limits no higher than this process's own: podman's defaults (nofile 1048576) are refused where
    the hard limits are lower. nproc stays at 32768, plenty for a model server; some sandboxes refuse more."""
    flags = []
    for name, limit, cap in (("nofile", resource.RLIMIT_NOFILE, 1048576), ("nproc", resource.RLIMIT_NPROC, 32768)):
        soft, hard = resource.getrlimit(limit)
        hard = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
        soft = hard if soft == resource.RLIM_INFINITY else min(soft, hard)
        flags += ["--ulimit", f"{name}={soft}:{hard}"]
    return flags


def run_flags(builder: Builder) -> list[str]:
    """Flags every `run` of the image needs with this builder on this machine."""
    if builder.name == "docker":
        return []
    flags = ["--runtime", builder.runtime] if builder.runtime else []
    return flags + _rlimit_flags()


def runner_for(builder: Builder) -> Builder | None:
    """Who runs the image for the smoke test: buildah cannot, podman shares its image store."""
    if builder.name != "buildah":
        return builder
    podman = shutil.which("podman")
    return Builder("podman", podman, _runtime_override("podman", podman)) if podman else None

