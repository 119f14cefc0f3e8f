"""Build the project's image with the builder chosen, smoke-test it, push it.

The build stage knows only the project directory (its ``ship.json`` and ``Dockerfile``) and leaves
it untouched: everything it passes in (labels, base image, the machine's pip settings) goes on the
builder's command line.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

from ..capture.environment import pip_index_settings
from ..procs import run_streaming
from ..spec import ShipSpec
from .builders import Builder, BuildError, detect_builder, image_size, run_flags, runner_for
from ..cuda import cpu_only_reason, gpu_base_image, runs_on_gpu
from .pip import pip_pass_through
from .smoke import smoke_test

CONTAINER_PORT = 8000
BUILD_TIMEOUT_SECONDS = 3600
BASE_IMAGE_ENV = "MLSHIP_BASE_IMAGE"


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



def _stream(cmd: Sequence[str], on_line: Callable[[str], None]) -> int:
    """Run cmd, passing each line of its output to on_line as it comes."""
    code, _ = run_streaming(list(cmd), Path.cwd(), dict(os.environ), on_line, BUILD_TIMEOUT_SECONDS)
    return code



def _megabytes(size: int | None) -> str:
    return "unknown" if size is None else f"{size / 1e6:.1f} MB"



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
    use_gpu = gpu_choice is not None and (gpu is True or (gpu is None and runs_on_gpu(spec)))
    if use_gpu and gpu_choice is not None:
        if base_image:
            gpu_section.append(f"GPU: --base-image {base_image} given; the suggested CUDA base was {gpu_choice[0]}.")
        else:
            base_image = gpu_choice[0]
            gpu_section.append(f"GPU: base image {gpu_choice[0]}: {gpu_choice[1]}")
    elif gpu_choice is not None and gpu is False:
        gpu_section.append(f"GPU: --no-gpu: built on the CPU base although {gpu_choice[1].split(';')[0]}.")
    elif gpu_choice is not None:
        gpu_section.append("GPU: every model ran on the CPU in the notebook, so the CPU base (--gpu for the "
                           f"CUDA base {gpu_choice[0]}).")

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

    runner = runner_for(chosen)
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

