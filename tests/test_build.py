"""`mlship build` without building: which builder is chosen, and the exact commands it runs."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from jupyter_mlship import build
from jupyter_mlship.build import builders, image
from jupyter_mlship.build import cli as build_cli
from jupyter_mlship.build import (
    Builder,
    BuildError,
    build_command,
    build_image,
    default_tag,
    detect_builder,
    gpu_base_image,
    image_labels,
    pip_pass_through,
)
from jupyter_mlship.capture.environment import PipIndexSettings
from jupyter_mlship.render import render_project
from support.specs import tiny_spec, tiny_spec_dict

PODMAN = Builder("podman", "/usr/bin/podman", "runc")
DOCKER = Builder("docker", "/usr/bin/docker")


def fake_tools(tmp_path: Path, monkeypatch, **scripts: str) -> Path:
    """PATH holds only these fake executables (body: shell script after the shebang)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.fixture
def plain_cgroups(monkeypatch):
    monkeypatch.setattr(builders, "_cgroups_hybrid_with_v2_controllers", lambda: False)


# --- builder detection ------------------------------------------------------------------------------


def test_auto_prefers_docker_when_its_daemon_answers(tmp_path, monkeypatch, plain_cgroups):
    bin_dir = fake_tools(tmp_path, monkeypatch, docker="exit 0", podman="exit 0")
    assert detect_builder() == Builder("docker", str(bin_dir / "docker"))


def test_auto_falls_back_to_podman_when_docker_has_no_daemon(tmp_path, monkeypatch, plain_cgroups):
    bin_dir = fake_tools(tmp_path, monkeypatch, docker="echo 'Cannot connect to the Docker daemon' >&2; exit 1",
                         podman="exit 0", buildah="exit 0")
    assert detect_builder("auto") == Builder("podman", str(bin_dir / "podman"))


def test_auto_does_not_wait_for_a_hanging_docker(tmp_path, monkeypatch, plain_cgroups):
    fake_tools(tmp_path, monkeypatch, docker="sleep 30", buildah="exit 0")
    monkeypatch.setattr(builders, "DOCKER_INFO_TIMEOUT", 0.5)
    started = time.monotonic()
    assert detect_builder().name == "buildah"
    assert time.monotonic() - started < 5


def test_no_builder_names_what_to_install(tmp_path, monkeypatch, plain_cgroups):
    fake_tools(tmp_path, monkeypatch)
    with pytest.raises(BuildError, match=r"no container builder found: apt-get install podman"):
        detect_builder()


def test_an_explicit_builder_that_is_missing_names_what_to_install(tmp_path, monkeypatch, plain_cgroups):
    fake_tools(tmp_path, monkeypatch, docker="exit 0")
    with pytest.raises(BuildError) as error:
        detect_builder("podman")
    assert str(error.value) == "podman is not installed: apt-get install podman (or install docker and start its daemon)"


def test_explicit_docker_without_daemon_is_refused(tmp_path, monkeypatch, plain_cgroups):
    fake_tools(tmp_path, monkeypatch, docker="exit 1", podman="exit 0")
    with pytest.raises(BuildError, match=r"daemon does not answer.*--builder podman"):
        detect_builder("docker")


def test_podman_uses_runc_where_crun_cannot_run(tmp_path, monkeypatch):
    monkeypatch.setattr(builders, "_cgroups_hybrid_with_v2_controllers", lambda: True)
    fake_tools(tmp_path, monkeypatch, podman="echo crun", runc="exit 0")
    assert detect_builder("podman").runtime == "runc"


def test_podman_without_runc_on_hybrid_cgroups_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(builders, "_cgroups_hybrid_with_v2_controllers", lambda: True)
    fake_tools(tmp_path, monkeypatch, podman="echo crun")
    with pytest.raises(BuildError, match=r"crun cannot start containers.*apt-get install runc"):
        detect_builder("podman")


# --- the commands -----------------------------------------------------------------------------------


def test_podman_build_command_carries_tag_labels_args_network_and_mounts(tmp_path):
    cmd = build_command(
        PODMAN, tmp_path, tag="churn:3", labels={"io.mlship.model.name": "churn"},
        build_args={"BASE_IMAGE": "localhost/base:3.11", "PIP_FIND_LINKS": "/tmp/mlship-pip/0"},
        volumes=[("/opt/wheels", "/tmp/mlship-pip/0")], network="host", iidfile=tmp_path / "iid",
    )
    assert cmd == [
        "/usr/bin/podman", "build", "--format", "docker", "--runtime", "runc",
        "--file", str(tmp_path / "Dockerfile"), "--tag", "churn:3", "--network", "host",
        "--build-arg", "BASE_IMAGE=localhost/base:3.11", "--build-arg", "PIP_FIND_LINKS=/tmp/mlship-pip/0",
        "--label", "io.mlship.model.name=churn",
        "--volume", "/opt/wheels:/tmp/mlship-pip/0:ro",
        "--iidfile", str(tmp_path / "iid"), str(tmp_path),
    ]


def test_docker_build_command_has_no_podman_only_flags(tmp_path):
    cmd = build_command(DOCKER, tmp_path, tag="churn:3", labels={}, build_args={})
    assert cmd == ["/usr/bin/docker", "build", "--file", str(tmp_path / "Dockerfile"), "--tag", "churn:3", str(tmp_path)]


def test_labels_name_the_model_its_artifacts_notebook_and_commit():
    spec = tiny_spec("churn")
    labels = image_labels(spec, "0123abc")
    assert labels["org.opencontainers.image.title"] == "churn"
    assert labels["org.opencontainers.image.version"] == "3"
    assert labels["org.opencontainers.image.revision"] == "0123abc"
    assert labels["org.opencontainers.image.created"].endswith("Z")
    assert labels["io.mlship.model.name"] == "churn"
    assert labels["io.mlship.model.version"] == "3"
    assert labels["io.mlship.artifacts.sha256"] == "model:" + "ab" * 32
    assert labels["io.mlship.source.notebook"] == "notebooks/churn.ipynb"


def test_git_revision_is_the_commit_of_the_project_dir(tmp_path):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "ship.json").write_text("{}")
    for cmd in (["git", "init", "-q"], ["git", "add", "."], ["git", "commit", "-q", "-m", "svc"]):
        subprocess.run(cmd, cwd=tmp_path, env=env, check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert build.git_revision(tmp_path / "svc") == head
    outside = tempfile.mkdtemp()
    assert build.git_revision(Path(outside)) is None
    os.rmdir(outside)


def test_default_tag_is_name_version_made_valid():
    assert default_tag(tiny_spec("churn")) == "churn:3"
    assert default_tag(tiny_spec("churn", version="1.0+local")) == "churn:1.0-local"


def local_index(tmp_path: Path) -> PipIndexSettings:
    (tmp_path / "pypi" / "simple").mkdir(parents=True)
    (tmp_path / "wheels").mkdir()
    (tmp_path / "ca.pem").write_text("cert")
    return PipIndexSettings(
        index_url="https://mirror.example/simple",
        extra_index_urls=[f"file://{tmp_path}/pypi/simple", f"{tmp_path}/missing"],
        find_links=[str(tmp_path / "wheels")],
        cert=str(tmp_path / "ca.pem"),
    )


def test_local_pip_indexes_are_mounted_into_a_podman_build(tmp_path):
    passed = pip_pass_through(local_index(tmp_path), PODMAN)
    assert passed.build_args == {
        "PIP_INDEX_URL": "https://mirror.example/simple",
        # The parent of simple/ is mounted: index pages link to ../../files next to it.
        "PIP_EXTRA_INDEX_URL": "file:///tmp/mlship-pip/0/simple",
        "PIP_FIND_LINKS": "/tmp/mlship-pip/1",
        "PIP_CERT": "/tmp/mlship-pip/cert.pem",
    }
    assert passed.volumes == [(str(tmp_path / "pypi"), "/tmp/mlship-pip/0"), (str(tmp_path / "wheels"), "/tmp/mlship-pip/1"),
                              (str(tmp_path / "ca.pem"), "/tmp/mlship-pip/cert.pem")]
    assert any("missing does not exist" in note for note in passed.notes)


def test_docker_builds_keep_network_indexes_and_say_why_local_ones_are_left_out(tmp_path):
    passed = pip_pass_through(local_index(tmp_path), DOCKER)
    assert passed.build_args == {"PIP_INDEX_URL": "https://mirror.example/simple"}
    assert passed.volumes == []
    assert any("docker build cannot see" in note for note in passed.notes)


# --- GPU ----------------------------------------------------------------------------------------------


def requirements(*pins: str) -> dict:
    return {"python_version": "3.11.7",
            "requirements": [{"name": p.split("==")[0], "version": p.split("==")[1]} for p in pins]}


def test_cuda_torch_gets_the_matching_cuda_runtime_image():
    image, reason = gpu_base_image(requirements("torch==2.5.1+cu124", "numpy==2.1.0"))
    assert image == "nvidia/cuda:12.4.1-runtime-ubuntu22.04"
    assert "torch==2.5.1+cu124" in reason and "Python 3.11" in reason


def test_nvidia_runtime_wheel_decides_the_cuda_release():
    spec = requirements("torch==2.6.0", "nvidia-cuda-runtime-cu12==12.6.77", "nvidia-cublas-cu12==12.6.4.1")
    spec["python_version"] = "3.12.3"
    assert gpu_base_image(spec)[0] == "nvidia/cuda:12.6.3-runtime-ubuntu24.04"


def test_any_cu12_library_means_a_cuda_12_image():
    assert gpu_base_image(requirements("torch==2.6.0", "nvidia-cudnn-cu12==9.1.0.70"))[0].startswith("nvidia/cuda:12.")


@pytest.mark.parametrize("pins", [("torch==2.13.0+cpu", "numpy==2.4.6"), ("scikit-learn==1.9.1",), ()])
def test_cpu_captures_need_no_gpu_image(pins):
    assert gpu_base_image(requirements(*pins)) is None


def test_gpu_decision_accepts_a_shipspec():
    assert gpu_base_image(tiny_spec()) is None


# --- projects and the CLI ------------------------------------------------------------------------------


def write_project(tmp_path: Path, **overrides) -> Path:
    project = tmp_path / "svc"
    project.mkdir()
    (project / "ship.json").write_text(json.dumps(tiny_spec_dict("svc", **overrides)))
    (project / "Dockerfile").write_text("ARG BASE_IMAGE=python:3.11-slim\nFROM ${BASE_IMAGE}\n")
    (project / "requirements.txt").write_text("numpy==2.4.6\n")
    return project


def test_gpu_is_refused_for_a_cpu_only_capture(tmp_path):
    project = write_project(tmp_path, requirements=[{"name": "torch", "version": "2.13.0+cpu"}])
    with pytest.raises(BuildError, match=r"--gpu refused: torch==2.13.0\+cpu is not a CUDA build"):
        build_image(project, gpu=True, on_line=lambda line: None)


def test_a_folder_without_ship_json_is_not_a_project(tmp_path):
    with pytest.raises(BuildError, match=r"has no ship.json"):
        build_image(tmp_path, on_line=lambda line: None)


def test_a_project_without_dockerfile_is_refused(tmp_path):
    project = write_project(tmp_path)
    (project / "Dockerfile").unlink()
    with pytest.raises(BuildError, match=r"has no Dockerfile"):
        build_image(project, on_line=lambda line: None)


def test_cli_error_is_one_sentence_on_stderr(tmp_path):
    done = subprocess.run([sys.executable, "-m", "jupyter_mlship.cli", "build", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "has no ship.json" in done.stderr


def test_cli_options_reach_build_image(tmp_path, monkeypatch):
    import argparse

    seen = {}
    monkeypatch.setattr(build_cli, "build_image", lambda project, **kwargs: seen.update(kwargs, project=project))
    parser = argparse.ArgumentParser()
    build.add_build_parser(parser.add_subparsers())
    args = parser.parse_args(["build", "svc", "--builder", "podman", "--tag", "t:1", "--base-image", "b",
                              "--push", "reg.example/ml", "--network", "host", "--build-arg", "A=1",
                              "--build-arg", "B=2", "--no-smoke", "--no-gpu"])
    assert build.build_main(args) == 0
    assert seen["project"] == Path("svc")
    assert {k: seen[k] for k in ("builder", "tag", "base_image", "push", "network", "build_args", "smoke", "gpu")} == {
        "builder": "podman", "tag": "t:1", "base_image": "b", "push": "reg.example/ml", "network": "host",
        "build_args": ["A=1", "B=2"], "smoke": False, "gpu": False}


def test_build_log_is_streamed_while_the_build_runs():
    seen: list[tuple[str, float]] = []
    code = image._stream([sys.executable, "-u", "-c", "import time; print('one'); time.sleep(1.5); print('two')"],
                         lambda line: seen.append((line, time.monotonic())))
    assert code == 0 and [line for line, _ in seen] == ["one", "two"]
    assert seen[1][1] - seen[0][1] > 1.0  # "one" arrived before the process finished


def test_push_tags_under_the_registry(monkeypatch):
    commands = []
    monkeypatch.setattr(image, "_stream", lambda cmd, on_line: commands.append(cmd) or 0)
    assert build.push_image(PODMAN, "churn:3", "registry.example/ml/", print) == "registry.example/ml/churn:3"
    assert commands == [["/usr/bin/podman", "tag", "churn:3", "registry.example/ml/churn:3"],
                        ["/usr/bin/podman", "push", "registry.example/ml/churn:3"]]


# --- the Dockerfile template ------------------------------------------------------------------------------


def test_dockerfile_defaults_to_the_kernels_python_and_caches_dependencies(tmp_path):
    project = render_project(tiny_spec("svc", artifacts=[], python_version="3.12.4"), None, tmp_path / "svc")
    dockerfile = (project / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.12-slim\n" in dockerfile
    assert build.dockerfile_base_image(project) == "python:3.12-slim"
    # Dependencies before code: a code change reuses the pip layer.
    assert dockerfile.index("COPY requirements.txt") < dockerfile.index("pip install") < dockerfile.index("COPY app/")
    final = dockerfile[dockerfile.rindex("\nFROM "):]
    assert "USER 10001" in final and "HEALTHCHECK" in final and "python -c" in final and "/healthz" in final
    assert "COPY --from=builder /opt/venv /opt/venv" in final and "pip install" not in final
    assert 'exec uvicorn app.main:app --host "$HOST" --port "$PORT" --timeout-graceful-shutdown' in final
    ignored = (project / ".dockerignore").read_text().split()
    assert {".git", "**/__pycache__", "**/*.pyc", ".venv", ".pytest_cache"} <= set(ignored)
