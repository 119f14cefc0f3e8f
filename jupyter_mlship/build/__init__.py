"""Build the container image of a generated project, prove it with the golden request, push it.

The build stage knows only the project directory (its ``ship.json`` and ``Dockerfile``) and leaves
it untouched: everything it passes in (labels, base image, the machine's pip settings) goes on the
builder's command line. After the build the image is started once (the smoke test): it must become
ready and answer the golden request with the notebook's own predictions.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .capture.environment import PipIndexSettings, pip_index_settings
from .errors import ShipError
from .spec import ShipSpec

BUILDERS = ("docker", "podman", "buildah")
CONTAINER_PORT = 8000
DOCKER_INFO_TIMEOUT = 5.0
READY_TIMEOUT = 120.0
NOT_READY_GRACE = 10.0  # seconds a served "not ready" may last before the smoke test fails
PIP_MOUNT_ROOT = "/tmp/mlship-pip"  # where local pip indexes appear inside a podman/buildah build
INSTALL_HINT = "apt-get install podman (or install docker and start its daemon)"

# CUDA minor release -> the newest nvidia/cuda runtime tag of that release.
CUDA_IMAGE_RELEASES = {
    "11.8": "11.8.0", "12.1": "12.1.1", "12.2": "12.2.2", "12.3": "12.3.2", "12.4": "12.4.1",
    "12.5": "12.5.1", "12.6": "12.6.3", "12.8": "12.8.1", "12.9": "12.9.1",
}
# Python of the notebook -> the Ubuntu of nvidia/cuda images that packages it (see the Dockerfile).
UBUNTU_FOR_PYTHON = {"3.10": "22.04", "3.11": "22.04", "3.12": "24.04"}


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


@dataclass
class BuildResult:
    tag: str
    builder: str
    image_id: str
    size_bytes: int | None
    base_size_bytes: int | None
    size_above_base_bytes: int | None
    seconds: float
    smoke_passed: bool | None  # None: skipped
    run_command: str
    pushed: str | None = None


@dataclass
class PipPassThrough:
    """The machine's pip settings, as seen from inside the build."""

    build_args: dict[str, str] = field(default_factory=dict)
    volumes: list[tuple[str, str]] = field(default_factory=list)  # (host path, path in the build)
    notes: list[str] = field(default_factory=list)


# --- builder detection ------------------------------------------------------------------------


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


# --- what goes on the command line ----------------------------------------------------------------


def read_project(project: Path) -> ShipSpec:
    """The project's ShipSpec, or a BuildError saying why this is not a buildable project."""
    project = Path(project)
    if not project.is_dir():
        raise BuildError(f"{project} is not a directory: pass the folder of an exported service")
    if not (project / "ship.json").is_file():
        raise BuildError(
            f"{project} is not an mlship project: it has no ship.json (make one with `mlship export NOTEBOOK --out DIR`)"
        )
    for needed in ("Dockerfile", "requirements.txt"):
        if not (project / needed).is_file():
            raise BuildError(f"{project} has no {needed}: export the project again to restore it")
    try:
        return ShipSpec.read(project / "ship.json")
    except ValueError as exc:
        raise BuildError(str(exc).splitlines()[0]) from exc


def default_tag(spec: ShipSpec) -> str:
    """NAME:VERSION, the version made a valid image tag."""
    version = re.sub(r"[^A-Za-z0-9_.-]", "-", spec.version).lstrip(".-") or "latest"
    return f"{spec.name}:{version[:128]}"


def dockerfile_base_image(project: Path) -> str | None:
    """The default of ``ARG BASE_IMAGE`` in the project's Dockerfile."""
    text = (Path(project) / "Dockerfile").read_text(encoding="utf-8")
    match = re.search(r"^\s*ARG\s+BASE_IMAGE=(\S+)", text, re.MULTILINE)
    return match.group(1).strip("\"'") if match else None


def git_revision(project: Path) -> str | None:
    """The commit of the project's directory, when it lies in a git work tree."""
    try:
        done = subprocess.run(
            ["git", "-C", str(project), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def image_labels(spec: ShipSpec, revision: str | None, created: datetime | None = None) -> dict[str, str]:
    created = created or datetime.now(timezone.utc)
    labels = {
        "org.opencontainers.image.title": spec.name,
        "org.opencontainers.image.version": spec.version,
        "org.opencontainers.image.created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "io.mlship.model.name": spec.name,
        "io.mlship.model.version": spec.version,
        "io.mlship.artifacts.sha256": ",".join(f"{a.name}:{a.sha256}" for a in spec.artifacts),
    }
    if revision:
        labels["org.opencontainers.image.revision"] = revision
    if spec.source.notebook:
        labels["io.mlship.source.notebook"] = spec.source.notebook
    return labels


def pip_pass_through(settings: PipIndexSettings, builder: Builder) -> PipPassThrough:
    """Carry index URLs, find-links, trusted hosts and the CA bundle into the build.

    Network URLs pass as they are. Local indexes (paths, file:// URLs) are invisible inside a
    build: podman and buildah get them mounted read-only under /tmp/mlship-pip (build-time only,
    nothing is copied into the image); with docker they are left out and pip inside the build uses
    the network index.
    """
    result = PipPassThrough()
    mounts: dict[str, str] = {}

    def local_path(item: str) -> Path | None:
        if item.startswith("file:"):
            return Path(urllib.parse.unquote(urllib.parse.urlparse(item).path))
        if "://" not in item and item.startswith("/"):
            return Path(item)
        return None

    def translate(item: str, option: str) -> str | None:
        path = local_path(item)
        if path is None:
            return item
        if not path.exists():
            result.notes.append(f"pip {option} {item} does not exist on this machine: left out of the build")
            return None
        if not builder.mounts_in_build:
            result.notes.append(
                f"pip {option} {item} is a local path, which a docker build cannot see: "
                "pip inside the build uses the network index"
            )
            return None
        # An index's pages link to ../../files (or similar) next to simple/: mount its parent.
        root = path.parent if (path.name == "simple" or path.is_file()) else path
        if str(root) not in mounts:
            mounts[str(root)] = f"{PIP_MOUNT_ROOT}/{len(mounts)}"
            result.volumes.append((str(root), mounts[str(root)]))
        inside = mounts[str(root)] + "/" + str(path.relative_to(root)) if path != root else mounts[str(root)]
        inside = inside.rstrip("/").replace("/./", "/")
        return f"file://{inside}" if item.startswith("file:") else inside

    for option, arg, items in (
        ("index-url", "PIP_INDEX_URL", [settings.index_url] if settings.index_url else []),
        ("extra-index-url", "PIP_EXTRA_INDEX_URL", settings.extra_index_urls),
        ("find-links", "PIP_FIND_LINKS", settings.find_links),
    ):
        kept = [translated for item in items if (translated := translate(item, option))]
        if kept:
            result.build_args[arg] = " ".join(kept)
    if settings.trusted_hosts:
        result.build_args["PIP_TRUSTED_HOST"] = " ".join(settings.trusted_hosts)
    cert = (settings.cert or "").strip()
    if cert and Path(cert).is_file() and builder.mounts_in_build:
        # The machine's CA bundle, for indexes behind an intercepting proxy.
        result.volumes.append((cert, f"{PIP_MOUNT_ROOT}/cert.pem"))
        result.build_args["PIP_CERT"] = f"{PIP_MOUNT_ROOT}/cert.pem"
    return result


def parse_build_args(build_args: Sequence[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in build_args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BuildError(f"--build-arg expects KEY=VALUE, got {item!r}")
        parsed[key] = value
    return parsed


def build_command(
    builder: Builder,
    project: Path,
    *,
    tag: str,
    labels: Mapping[str, str],
    build_args: Mapping[str, str],
    volumes: Sequence[tuple[str, str]] = (),
    network: str | None = None,
    iidfile: Path | None = None,
) -> list[str]:
    """The builder's command line; the project directory is the context, as it is."""
    cmd = [builder.executable, "build"]
    if builder.name in ("podman", "buildah"):
        # The docker image format keeps HEALTHCHECK (OCI images drop it); buildah caches layers only when asked.
        cmd += ["--format", "docker"]
        if builder.name == "buildah":
            cmd += ["--layers"]
        if builder.runtime:
            cmd += ["--runtime", builder.runtime]
    cmd += ["--file", str(Path(project) / "Dockerfile"), "--tag", tag]
    if network:
        cmd += ["--network", network]
    for key, value in build_args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    for key, value in labels.items():
        cmd += ["--label", f"{key}={value}"]
    for host, inside in volumes:
        cmd += ["--volume", f"{host}:{inside}:ro"]
    if iidfile is not None:
        cmd += ["--iidfile", str(iidfile)]
    cmd.append(str(project))
    return cmd


# --- GPU --------------------------------------------------------------------------------------------


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


# --- running the build ------------------------------------------------------------------------------


BUILD_TIMEOUT_SECONDS = 3600


def _stream(cmd: Sequence[str], on_line: Callable[[str], None]) -> int:
    """Run cmd, passing each line of its output to on_line as it comes (verify's streaming runner)."""
    from .verify import run_streaming

    code, _ = run_streaming(list(cmd), Path.cwd(), dict(os.environ), on_line, BUILD_TIMEOUT_SECONDS)
    return code


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


def _megabytes(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 1e6:.1f} MB"


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


def _runner(builder: Builder) -> Builder | None:
    """Who runs the image for the smoke test: buildah cannot, podman shares its image store."""
    if builder.name != "buildah":
        return builder
    podman = shutil.which("podman")
    return Builder("podman", podman, _runtime_override("podman", podman)) if podman else None


BASE_IMAGE_ENV = "MLSHIP_BASE_IMAGE"


def build_image(
    project: Path,
    *,
    builder: str = "auto",
    tag: str | None = None,
    base_image: str | None = None,
    push: str | None = None,
    network: str | None = None,
    build_args: Sequence[str] = (),
    smoke: bool = True,
    gpu: bool | None = None,
    on_line: Callable[[str], None] = print,
) -> BuildResult:
    """Build the project's image, smoke-test it, optionally push it; the project is not modified."""
    project = Path(project).resolve()
    spec = read_project(project)
    # `%%ship --build` and the lab panel take the base image from the environment (e.g. a local mirror).
    base_image = base_image or os.environ.get(BASE_IMAGE_ENV) or None
    gpu_choice = gpu_base_image(spec)
    if gpu and gpu_choice is None:
        raise BuildError(f"--gpu refused: {cpu_only_reason(spec)}")
    chosen = detect_builder(builder)
    tag = tag or default_tag(spec)

    gpu_section: list[str] = []
    use_gpu = gpu_choice is not None and gpu is not False
    if use_gpu and gpu_choice is not None:
        if base_image:
            gpu_section.append(f"GPU: --base-image {base_image} given; the suggested CUDA base was {gpu_choice[0]}.")
        else:
            base_image = gpu_choice[0]
            gpu_section.append(f"GPU: base image {gpu_choice[0]}: {gpu_choice[1]}")
    elif gpu_choice is not None:
        gpu_section.append(f"GPU: --no-gpu: built on the CPU base although {gpu_choice[1].split(';')[0]}.")

    args: dict[str, str] = {}
    pip = pip_pass_through(pip_index_settings(), chosen)
    args.update(pip.build_args)
    if base_image:
        args["BASE_IMAGE"] = base_image
    args.update(parse_build_args(build_args))  # the user's own --build-arg wins
    base = args.get("BASE_IMAGE") or dockerfile_base_image(project)
    labels = image_labels(spec, git_revision(project))

    with tempfile.TemporaryDirectory(prefix="mlship-build-") as scratch:
        iidfile = Path(scratch) / "image-id"
        cmd = build_command(chosen, project, tag=tag, labels=labels, build_args=args,
                            volumes=pip.volumes, network=network, iidfile=iidfile)
        for note in pip.notes:
            on_line(f"note: {note}")
        on_line("$ " + shlex.join(cmd))
        started = time.monotonic()
        code = _stream(cmd, on_line)
        seconds = time.monotonic() - started
        if code != 0:
            raise BuildError(f"{chosen.name} build failed with exit status {code}: the build log above says why")
        image_id = iidfile.read_text().strip() if iidfile.is_file() else tag

    size = image_size(chosen, tag)
    base_size = image_size(chosen, base) if base else None
    above = size - base_size if size is not None and base_size is not None else None

    runner = _runner(chosen)
    gpu_flags = []
    if use_gpu and runner is not None:
        gpu_flags = ["--gpus", "all"] if runner.name == "docker" else ["--device", "nvidia.com/gpu=all"]
    run_command = shlex.join(
        [runner.name if runner else "podman", "run", "--rm", *(run_flags(runner) if runner else []),
         *gpu_flags, "-p", f"{CONTAINER_PORT}:{CONTAINER_PORT}", tag]
    )

    smoke_passed: bool | None = None
    smoke_summary = "skipped (--no-smoke)"
    if smoke:
        if runner is None:
            smoke_summary = "skipped: buildah cannot run containers; install podman to smoke-test"
        else:
            smoke_summary = smoke_test(runner, tag, spec, on_line=on_line)
            smoke_passed = True

    pushed = None
    if push:
        pushed = push_image(chosen, tag, push, on_line)

    result = BuildResult(
        tag=tag, builder=chosen.name, image_id=image_id, size_bytes=size, base_size_bytes=base_size,
        size_above_base_bytes=above, seconds=seconds, smoke_passed=smoke_passed,
        run_command=run_command, pushed=pushed,
    )
    on_line("")
    on_line(f"Image:      {tag}  ({image_id[:19]})")
    on_line(f"Size:       {_megabytes(size)}, {_megabytes(above)} above the base image {base} ({_megabytes(base_size)})")
    on_line(f"Build time: {seconds:.1f} s with {chosen.name}")
    on_line(f"Smoke test: {smoke_summary}")
    if pushed:
        on_line(f"Pushed:     {pushed}")
    on_line(f"Run it:     {run_command}")
    for line in gpu_section:
        on_line("")
        on_line(line)
    return result


def push_image(builder: Builder, tag: str, registry: str, on_line: Callable[[str], None]) -> str:
    """Tag NAME:VERSION under the registry and push it; returns the pushed reference."""
    reference = f"{registry.rstrip('/')}/{tag.removeprefix('localhost/')}"
    for cmd in ([builder.executable, "tag", tag, reference], [builder.executable, "push", reference]):
        on_line("$ " + shlex.join(cmd))
        code = _stream(cmd, on_line)
        if code != 0:
            raise BuildError(f"pushing {reference} failed with exit status {code}: see the log above")
    return reference


# --- smoke test ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _http(method: str, url: str, body: Any = None, timeout: float = 30) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def smoke_test(
    runner: Builder, image: str, spec: ShipSpec, *, on_line: Callable[[str], None] = print,
    ready_timeout: float = READY_TIMEOUT,
) -> str:
    """Start the image on a loopback port, wait for /readyz, check the golden predictions.

    The container is stopped and removed in every case. Returns a one-line summary; raises
    BuildError (with the container's log) when the service does not come up or predicts otherwise.
    """
    from .runtime import runtime_module

    port = _free_port()
    name = f"mlship-smoke-{uuid.uuid4().hex[:10]}"
    # PORT differs from the image's default, so the run also proves the image honours PORT and HOST.
    # --no-healthcheck: the smoke test polls /readyz itself, and podman's health timers need systemd.
    cmd = [runner.executable, "run", "--detach", "--name", name, "--no-healthcheck", *run_flags(runner),
           "--publish", f"127.0.0.1:{port}:{port}", "--env", f"PORT={port}", "--env", "HOST=0.0.0.0", image]
    on_line(f"smoke test: $ {shlex.join(cmd)}")
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    try:
        if done.returncode != 0:
            raise BuildError(f"the smoke test could not start the image: {(done.stderr or done.stdout).strip()}")
        base = f"http://127.0.0.1:{port}"
        ready_after = _wait_ready(runner, name, base, ready_timeout)
        status, body = _http("POST", f"{base}/predict", {"instances": spec.golden.instances})
        if status != 200:
            raise BuildError(f"the smoke test's golden request got HTTP {status}: {body[:300].decode(errors='replace')}")
        predictions = json.loads(body).get("predictions")
        convert = runtime_module("convert")
        mismatches = convert.compare_predictions(spec.golden.predictions, predictions, spec.golden.float_rel_tol)
        if mismatches:
            shown = "; ".join(mismatches[:3])
            raise BuildError(f"the image predicts differently from the notebook on the golden request: {shown}")
    except BuildError:
        _show_log(runner, name, on_line)
        raise
    finally:
        subprocess.run([runner.executable, "stop", "--time", "15", name], capture_output=True, timeout=60)
        subprocess.run([runner.executable, "rm", "--force", name], capture_output=True, timeout=60)
    return (
        f"passed: ready in {ready_after:.1f} s on 127.0.0.1:{port}, "
        f"{len(spec.golden.instances)} golden predictions match ({time.monotonic() - started:.1f} s)"
    )


def _wait_ready(runner: Builder, name: str, base: str, timeout: float) -> float:
    started = time.monotonic()
    last = "no answer"
    answered_at: float | None = None
    while time.monotonic() - started < timeout:
        try:
            status, body = _http("GET", f"{base}/readyz", timeout=5)
            if status == 200:
                return time.monotonic() - started
            last = f"HTTP {status}: {body[:300].decode(errors='replace')}"
            # The app loads the model before it serves; a "not ready" that lasts is its verdict.
            answered_at = answered_at or time.monotonic()
            if time.monotonic() - answered_at > NOT_READY_GRACE:
                raise BuildError(f"the service started but /readyz says it is not ready ({last})")
        except (OSError, ValueError) as exc:
            last = str(exc)
        running = subprocess.run(
            [runner.executable, "inspect", "--format", "{{.State.Running}}", name],
            capture_output=True, text=True, timeout=30,
        ).stdout.strip()
        if running == "false":
            raise BuildError("the container exited before /readyz answered: its log is above")
        time.sleep(0.5)
    raise BuildError(f"/readyz did not answer 200 within {timeout:.0f} s (last: {last}): the container log is above")


def _show_log(runner: Builder, name: str, on_line: Callable[[str], None]) -> None:
    done = subprocess.run([runner.executable, "logs", name], capture_output=True, text=True, timeout=60)
    on_line(f"--- log of the smoke-test container {name} ---")
    for line in (done.stdout + done.stderr).splitlines()[-80:]:
        on_line(line)
    on_line("--- end of log ---")


# --- CLI ------------------------------------------------------------------------------------------------


def add_build_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "build",
        help="build the container image of an exported project and smoke-test it",
        description="Build PROJECT's image with docker, podman or buildah, run it once on a loopback "
        "port and check the golden predictions, then print its size and how to run it.",
    )
    parser.add_argument("project", type=Path, metavar="PROJECT", help="folder of an exported service (has ship.json)")
    parser.add_argument("--builder", choices=("auto", *BUILDERS), default="auto",
                        help="auto: docker when its daemon answers, else podman, else buildah")
    parser.add_argument("--tag", help="image tag (default NAME:VERSION from ship.json)")
    parser.add_argument("--base-image", metavar="IMG", help="base image with the notebook's Python (default: the Dockerfile's)")
    parser.add_argument("--push", metavar="REGISTRY", help="after a passing smoke test, push REGISTRY/NAME:VERSION")
    parser.add_argument("--network", metavar="NET", help="network mode of the build, e.g. host")
    parser.add_argument("--build-arg", action="append", default=[], metavar="K=V", dest="build_args",
                        help="extra build argument (repeatable)")
    parser.add_argument("--no-smoke", action="store_false", dest="smoke", help="skip the smoke test")
    parser.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                        help="CUDA base image (default: when the capture holds a CUDA build of torch)")
    return parser


def build_main(args: argparse.Namespace) -> int:
    try:
        build_image(
            args.project, builder=args.builder, tag=args.tag, base_image=args.base_image, push=args.push,
            network=args.network, build_args=args.build_args, smoke=args.smoke, gpu=args.gpu,
            on_line=lambda line: print(line, flush=True),
        )
    except BuildError as exc:
        print(f"mlship build: {exc}", file=sys.stderr)
        return 1
    return 0
