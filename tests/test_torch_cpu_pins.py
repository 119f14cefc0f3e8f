"""CPU images carry no CUDA, for torch: a capture whose models all ran on the CPU, in a kernel with a CUDA
build of torch, pins torch's +cpu build from PyTorch's CPU index, and the project installs it anywhere.

The index's answers are injected (no network in tests); where pip or uv really run, a local simple index
in a temporary folder stands in for PyTorch's, with small wheels made here.
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

from jupyter_mlship.capture.cpu_builds import (
    PYTORCH_CPU_INDEX,
    cpu_only_pins,
    cuda_torch_builds,
    image_pins,
    versions_on_index,
)
from jupyter_mlship.render import render_project
from jupyter_mlship.review import review_markdown
from jupyter_mlship.spec import Requirement
from jupyter_mlship.verify.envs import ensure_environment, venv_python
from support.notebooks import free_port
from support.specs import tiny_spec

def req(name: str, version: str, *because: str) -> Requirement:
    return Requirement(name=name, version=version, because=list(because))


# Plain PyPI torch 2.14.1 (a CUDA 13 build, its Requires-Dist as published) and torchvision, resolved for the
# image: `because` names the distributions that require each pin (the modules, for the service's own imports).
CUDA13_PINS = [
    req("cuda-bindings", "13.0.3", "torch"), req("cuda-pathfinder", "1.3.3", "cuda-bindings"),
    req("cuda-toolkit", "13.0.3", "torch"), req("filelock", "3.20.0", "torch"), req("jinja2", "3.1.6", "torch"),
    req("markupsafe", "3.0.3", "jinja2"), req("networkx", "3.6.1", "torch"), req("numpy", "2.4.6", "numpy", "torchvision"),
    req("nvidia-cublas", "13.1.0.3", "cuda-toolkit", "nvidia-cudnn-cu13", "nvidia-cusolver"),
    req("nvidia-cuda-runtime", "13.0.96", "cuda-toolkit"), req("nvidia-cudnn-cu13", "9.24.0.43", "torch"),
    req("nvidia-cusolver", "12.0.4.66", "cuda-toolkit"), req("nvidia-nccl-cu13", "2.30.7", "torch"),
    req("nvidia-nvjitlink", "13.0.88", "cuda-toolkit", "nvidia-cusolver"), req("pillow", "12.0.0", "torchvision"),
    req("sympy", "1.14.0", "torch"), req("torch", "2.14.1", "torch", "torchvision"),
    req("torchvision", "0.29.1", "torchvision"), req("triton", "3.8.0", "torch"),
    req("typing-extensions", "4.15.0", "torch"),
]
CUDA13_ONLY = ["cuda-bindings", "cuda-pathfinder", "cuda-toolkit", "nvidia-cublas", "nvidia-cuda-runtime",
               "nvidia-cudnn-cu13", "nvidia-cusolver", "nvidia-nccl-cu13", "nvidia-nvjitlink", "triton"]
# torch from PyTorch's CUDA 12.8 index, with torchaudio of the same build.
CU128_PINS = [req("numpy", "2.4.6", "numpy"), req("nvidia-cublas-cu12", "12.8.4.1", "nvidia-cudnn-cu12", "torch"),
              req("nvidia-cudnn-cu12", "9.7.1.26", "torch"), req("torch", "2.7.1+cu128", "torch", "torchaudio"),
              req("torchaudio", "2.7.1+cu128", "torchaudio"), req("triton", "3.3.1", "torch")]


def index(**found: list[str] | None):
    """A stand-in for PyTorch's CPU index: what it lists per distribution; records what was asked."""
    asked = []

    def versions(name: str, index_url: str | None) -> list[str] | None:
        asked.append((name, index_url))
        return found.get(name, [])

    versions.asked = asked  # type: ignore[attr-defined]
    return versions


def names(pins) -> list[str]:
    return [r.name for r in pins.requirements]


# --- the policy ------------------------------------------------------------------------------------------------


def test_plain_pypi_torch_becomes_its_cpu_build_with_its_companion_and_no_cuda_libraries():
    answers = index(torch=["2.15.0+cpu", "2.14.1+cpu", "2.14.1"], torchvision=["0.29.1+cpu"])
    pins = cpu_only_pins(CUDA13_PINS, answers)
    assert answers.asked == [("torch", PYTORCH_CPU_INDEX), ("torchvision", PYTORCH_CPU_INDEX)]
    lines = [r.line for r in pins.requirements]
    assert "torch==2.14.1+cpu" in lines and "torchvision==0.29.1+cpu" in lines
    assert sorted(d.split("==")[0] for d in pins.dropped) == CUDA13_ONLY
    assert not set(names(pins)) & set(CUDA13_ONLY)
    # What the CPU build still needs stays, as pinned.
    for kept in ("filelock==3.20.0", "jinja2==3.1.6", "markupsafe==3.0.3", "networkx==3.6.1", "numpy==2.4.6",
                 "pillow==12.0.0", "sympy==1.14.0", "typing-extensions==4.15.0"):
        assert kept in lines
    assert not pins.warnings
    assert next(r for r in pins.requirements if r.name == "torch").because == ["torch", "torchvision"]


def test_a_cu128_build_from_pytorchs_index_becomes_cpu_too():
    pins = cpu_only_pins(CU128_PINS, index(torch=["2.7.1+cpu"], torchaudio=["2.7.1+cpu"]))
    assert [r.line for r in pins.requirements] == ["numpy==2.4.6", "torch==2.7.1+cpu", "torchaudio==2.7.1+cpu"]
    assert pins.dropped == ["nvidia-cublas-cu12==12.8.4.1", "nvidia-cudnn-cu12==9.7.1.26", "triton==3.3.1"]


@pytest.mark.parametrize(("torch", "torchvision", "says"), [
    ([], ["0.29.1+cpu"], f"{PYTORCH_CPU_INDEX} has no torch==2.14.1+cpu"),
    (["2.14.1+cpu"], ["0.29.0+cpu"], f"{PYTORCH_CPU_INDEX} has no torchvision==0.29.1+cpu"),
    (None, None, f"{PYTORCH_CPU_INDEX} could not be asked for torch"),
])
def test_without_every_cpu_build_on_the_index_the_cuda_pins_stay_and_the_review_says_why(torch, torchvision, says,
                                                                                          tmp_path):
    pins = cpu_only_pins(CUDA13_PINS, index(torch=torch, torchvision=torchvision))
    assert [r.line for r in pins.requirements] == [r.line for r in CUDA13_PINS]  # all or none: nothing changed
    assert not pins.dropped
    (warning,) = pins.warnings
    assert warning.startswith("torch==2.14.1, torchvision==0.29.1 are CUDA builds although the model ran on the CPU")
    assert says in warning and "the image carries CUDA's libraries" in warning
    spec = tiny_spec("svc", artifacts=[], requirements=[r.model_dump() for r in pins.requirements],
                     warnings=pins.warnings)
    review = (render_project(spec, None, tmp_path / "svc") / "REVIEW.md").read_text()
    assert "are CUDA builds although the model ran on the CPU" in review and PYTORCH_CPU_INDEX in review
    assert "--extra-index-url" not in (tmp_path / "svc" / "requirements.txt").read_text()  # no local build pinned


@pytest.mark.parametrize("pins", [
    [req("numpy", "2.4.6", "numpy"), req("torch", "2.13.0+cpu", "torch")],  # already the CPU build
    [req("numpy", "2.4.6", "numpy"), req("torch", "2.14.1", "torch")],  # plain torch without CUDA (macOS, aarch64)
])
def test_a_torch_that_is_not_a_cuda_build_is_left_as_it_is(pins):
    answers = index()
    result = cpu_only_pins(pins, answers)
    assert result.requirements == pins and not result.warnings and not result.dropped
    assert answers.asked == [("xgboost-cpu", None)] or answers.asked == []  # torch's index is not asked
    assert cuda_torch_builds(pins) == {}


def test_cuda_libraries_another_library_needs_are_kept():
    pins = [*CU128_PINS, req("nvidia-ml-py", "13.580.82", "pynvml", "torch"), req("pynvml", "13.0.1", "pynvml")]
    result = cpu_only_pins(pins, index(torch=["2.7.1+cpu"], torchaudio=["2.7.1+cpu"]))
    assert "nvidia-ml-py" in names(result) and "triton" not in names(result)


def test_a_gpu_capture_keeps_its_cuda_pins_and_the_index_is_not_asked():
    answers = index(torch=["2.14.1+cpu"], torchvision=["0.29.1+cpu"])
    on_gpu = image_pins(CUDA13_PINS, ["cuda:0", "cpu"], answers)
    assert on_gpu.requirements == CUDA13_PINS and not on_gpu.warnings and answers.asked == []
    on_cpu = image_pins(CUDA13_PINS, ["cpu", "cpu"], answers)
    assert "torch==2.14.1+cpu" in [r.line for r in on_cpu.requirements]


# --- asking the index, through pip -----------------------------------------------------------------------------


def make_wheel(folder: Path, name: str, version: str, tag: str = "py3-none-any", requires: tuple[str, ...] = ()) -> str:
    """A small installable wheel (METADATA, WHEEL, RECORD, one module)."""
    dist = f"{name.replace('-', '_')}-{version}"
    files = {
        f"{name.replace('-', '_')}_stub.py": f"VERSION = {version!r}\n",
        f"{dist}.dist-info/METADATA": "Metadata-Version: 2.1\n" f"Name: {name}\nVersion: {version}\n"
                                      + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}.dist-info/WHEEL": f"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: {tag}\n",
    }
    record = "".join(
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(text.encode())}\n" for path, text in files.items()) + f"{dist}.dist-info/RECORD,,\n"
    filename = f"{dist}-{tag}.whl"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / filename, "w") as wheel:
        for path, text in {**files, f"{dist}.dist-info/RECORD": record}.items():
            wheel.writestr(path, text)
    return filename


def simple_index(root: Path, wheels: dict[str, list[tuple[str, str]]]) -> str:
    """A PEP 503 simple index in ``root``: project -> [(version, tag)]; returns its file:// URL."""
    for project, builds in wheels.items():
        folder = root / project
        made = [make_wheel(folder, project, version, tag) for version, tag in builds]
        links = "".join(f'<a href="{name.replace("+", "%2B")}">{name}</a>' for name in made)
        (folder / "index.html").write_text(f"<html><body>{links}</body></html>")
    return root.as_uri()


@pytest.fixture
def only_these_indexes(monkeypatch, tmp_path):
    """pip and uv read nothing of this machine's own index configuration."""
    (tmp_path / "pip.conf").write_text("[global]\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "pip.conf"))
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "PIP_NO_INDEX", "UV_INDEX_STRATEGY",
                 "UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_RETRIES", "0")


def test_pip_is_asked_for_the_images_platform_on_the_index_given(tmp_path, only_these_indexes):
    python = f"cp{sys.version_info.major}{sys.version_info.minor}"
    url = simple_index(tmp_path / "pytorch", {"torch": [
        ("2.14.1+cpu", f"{python}-{python}-manylinux_2_28_x86_64"),
        ("2.5.1+cpu", f"{python}-{python}-linux_x86_64"),  # older CPU wheels carry the plain linux tag
        ("2.14.1", f"{python}-none-macosx_11_0_arm64"),  # not the image's platform
        ("2.13.0+cpu", "cp39-cp39-manylinux_2_28_x86_64"),  # not the notebook's Python
    ]})
    assert versions_on_index("torch", url) == ["2.14.1+cpu", "2.5.1+cpu"]
    assert versions_on_index("torchaudio", url) == []  # asked, and not there


def test_an_index_that_cannot_be_reached_is_not_an_answer(only_these_indexes):
    assert versions_on_index("torch", f"http://127.0.0.1:{free_port()}/simple") is None


# --- the generated project installs it -------------------------------------------------------------------------


@pytest.mark.parametrize(("pins", "index_lines"), [
    (["numpy==2.4.6", "torch==2.14.1+cpu", "torchvision==0.29.1+cpu"], ["https://download.pytorch.org/whl/cpu"]),
    (["torch==2.7.1+cu128", "torchaudio==2.7.1+cu128"], ["https://download.pytorch.org/whl/cu128"]),
    (["numpy==2.4.6", "torch==2.14.1"], []),
    (["scikit-learn==1.9.1"], []),
])
def test_requirements_txt_names_pytorchs_index_exactly_when_a_torch_build_is_pinned(pins, index_lines, tmp_path):
    requirements = [{"name": p.split("==")[0], "version": p.split("==")[1]} for p in pins]
    project = render_project(tiny_spec("svc", artifacts=[], requirements=requirements), None, tmp_path / "svc")
    lines = (project / "requirements.txt").read_text().splitlines()
    assert [line.split()[1] for line in lines if line.startswith("--extra-index-url ")] == index_lines
    assert [line for line in lines if line and not line.startswith(("#", "--"))] == pins
    if index_lines:
        assert lines.index(f"--extra-index-url {index_lines[0]}") < lines.index(pins[0])
    # The Dockerfile and CI install requirements.txt with pip, which reads the line; they add no index of their own.
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in (project / "Dockerfile").read_text()
    ci = (project / ".github/workflows/ci.yml").read_text()
    assert "run: pip install -r requirements.txt -r requirements-test.txt\n" in ci
    assert "download.pytorch.org" not in ci and "download.pytorch.org" not in (project / "Dockerfile").read_text()


def test_verify_installs_the_cpu_build_from_the_index_requirements_txt_names(tmp_path, only_these_indexes,
                                                                          monkeypatch):
    """uv with the user's index first: the CPU build comes from the index line, and a dependency that PyTorch's
    index also lists (at other versions) still comes at its pinned version (uv's unsafe-best-match)."""
    monkeypatch.setenv("MLSHIP_ENV_CACHE", str(tmp_path / "envs"))
    user = simple_index(tmp_path / "user", {"torch": [("2.14.1", "py3-none-any")],
                                            "sidecar": [("1.0", "py3-none-any"), ("2.0", "py3-none-any")]})
    pytorch = simple_index(tmp_path / "pytorch", {"torch": [("2.14.1+cpu", "py3-none-any")],
                                                  "sidecar": [("0.5", "py3-none-any")]})
    monkeypatch.setenv("PIP_INDEX_URL", user)
    spec = tiny_spec("svc", artifacts=[], requirements=[{"name": "sidecar", "version": "1.0"},
                                                        {"name": "torch", "version": "2.14.1+cpu"}])
    project = render_project(spec, None, tmp_path / "svc")
    text = (project / "requirements.txt").read_text()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu\n" in text
    (project / "requirements.txt").write_text(text.replace("https://download.pytorch.org/whl/cpu", pytorch))
    (project / "requirements-test.txt").write_text("")
    environment, installer, _ = ensure_environment([project / "requirements.txt", project / "requirements-test.txt"],
                                                   lambda line: None)
    assert installer == "uv"
    site = next(environment.glob("lib/python*/site-packages"))
    assert {p.name for p in site.glob("*.dist-info")} >= {"torch-2.14.1+cpu.dist-info", "sidecar-1.0.dist-info"}
    assert venv_python(environment).exists()


def test_verify_installs_without_an_index_it_cannot_reach(tmp_path, only_these_indexes, monkeypatch):
    """An offline machine whose own settings hold the CPU build (a mirror, find-links) still verifies."""
    monkeypatch.setenv("MLSHIP_ENV_CACHE", str(tmp_path / "envs"))
    mirror = simple_index(tmp_path / "mirror", {"torch": [("2.14.1+cpu", "py3-none-any")]})
    monkeypatch.setenv("PIP_INDEX_URL", mirror)
    unreachable = f"http://127.0.0.1:{free_port()}/whl/cpu"
    (tmp_path / "requirements.txt").write_text(f"--extra-index-url {unreachable}\ntorch==2.14.1+cpu\n")
    (tmp_path / "requirements-test.txt").write_text("")
    said: list[str] = []
    environment, installer, _ = ensure_environment([tmp_path / "requirements.txt", tmp_path / "requirements-test.txt"],
                                                   said.append)
    assert installer == "uv"
    assert any(line.startswith(f"{unreachable} cannot be reached from here") for line in said)
    assert list(environment.glob("lib/python*/site-packages/torch-2.14.1+cpu.dist-info"))


def test_a_macos_kernel_keeps_its_own_torch_and_the_image_gets_the_cpu_build():
    """Resolved for the image from a macOS kernel: torch's CUDA libraries are pinned for Linux x86-64 only, and
    the kernel's torch (a CPU wheel there) must stay installable where verify runs."""
    linux = 'sys_platform == "linux" and platform_machine == "x86_64"'
    pins = [req("numpy", "2.4.6", "numpy"), req("torch", "2.14.1", "torch"),
            req("nvidia-cudnn-cu13", "9.24.0.43", "torch").model_copy(update={"marker": linux}),
            req("triton", "3.8.0", "torch").model_copy(update={"marker": linux})]
    result = cpu_only_pins(pins, index(torch=["2.14.1+cpu"]), kernel='sys_platform == "darwin"')
    assert [r.line for r in result.requirements] == [
        "numpy==2.4.6", 'torch==2.14.1 ; sys_platform == "darwin"', f"torch==2.14.1+cpu ; {linux}"]
    assert result.dropped == ["nvidia-cudnn-cu13==9.24.0.43", "triton==3.8.0"]
