"""GPU and CPU images right: CUDA read from the pins, the device each model lived on, where the service
puts it, when it may fall back to the CPU, and the GPU variant of the Deployment.

The real GPU path runs in scripts/gpu_check.py on a CUDA machine; here (no GPU) the same code runs
end to end on the CPU, and only the device decision is also fed a GPU count by hand.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import kubernetes_validate
import pytest
import yaml
from IPython.core.magic_arguments import parse_argstring

from jupyter_mlship.cuda import (
    CUDA_IMAGE_RELEASES,
    CUDA_IMAGE_TAG,
    cpu_only_reason,
    cuda_version,
    default_gpu_base,
    gpu_base,
    gpu_base_image,
)
from jupyter_mlship.capture.artifacts import device_fallback
from jupyter_mlship.capture.cpu_builds import cpu_only_pins, versions_on_index
from jupyter_mlship.render import render_project
from jupyter_mlship.review import review_markdown
from jupyter_mlship.runtime import runtime_module
from jupyter_mlship.spec import ShipSpec
from support.notebooks import free_port, ok_cell
from support.specs import tiny_spec

loaders = runtime_module("loaders")


def pins(*lines: str, python: str = "3.12.3") -> dict:
    return {"python_version": python,
            "requirements": [{"name": p.split("==")[0], "version": p.split("==")[1]} for p in lines]}


# --- CUDA from the pins: both naming schemes ----------------------------------------------------------


@pytest.mark.parametrize(("lines", "cuda", "because"), [
    # CUDA 12: suffixed wheels; the runtime wheel gives the minor release.
    (("torch==2.6.0", "nvidia-cuda-runtime-cu12==12.6.77", "nvidia-cudnn-cu12==9.5.1.17"), "12.6",
     "nvidia-cuda-runtime-cu12==12.6.77"),
    (("torch==2.6.0", "nvidia-cudnn-cu12==9.1.0.70"), "12", "nvidia-cudnn-cu12==9.1.0.70"),
    (("torch==2.7.1+cu128",), "12.8", "torch==2.7.1+cu128"),
    (("torch==2.5.1+cu118",), "11.8", "torch==2.5.1+cu118"),
    # CUDA 13: the runtime and the toolkit without suffix; plain PyPI torch; PyTorch's +cu130.
    (("torch==2.11.0", "nvidia-cuda-runtime==13.0.96", "nvidia-cudnn-cu13==9.13.0.50"), "13.0",
     "nvidia-cuda-runtime==13.0.96"),
    (("torch==2.15.0", "cuda-toolkit==13.2.2", "nvidia-nccl-cu13==2.30.7"), "13.2", "cuda-toolkit==13.2.2"),
    (("torch==2.11.0", "nvidia-cudnn-cu13==9.13.0.50"), "13", "nvidia-cudnn-cu13==9.13.0.50"),
    (("torch==2.9.0+cu130",), "13.0", "torch==2.9.0+cu130"),
    (("Torch==2.9.0+cu130", "NVIDIA_CUDA_RUNTIME==13.0.48"), "13.0", "nvidia-cuda-runtime==13.0.48"),
])
def test_cuda_release_is_read_from_either_naming_scheme(lines, cuda, because):
    assert cuda_version(pins(*lines)) == (cuda, because)


@pytest.mark.parametrize("lines", [("torch==2.13.0+cpu", "numpy==2.4.6"), ("xgboost-cpu==3.2.0",),
                                   ("scikit-learn==1.9.1",), ()])
def test_cpu_captures_have_no_cuda(lines):
    assert cuda_version(pins(*lines)) is None and gpu_base_image(pins(*lines)) is None


def test_cpu_only_reason_names_the_torch_build():
    assert cpu_only_reason(pins("torch==2.13.0+cpu")) == "torch==2.13.0+cpu is not a CUDA build, so the model runs on the CPU"


# --- base images ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuda", sorted(CUDA_IMAGE_RELEASES))
@pytest.mark.parametrize("python", ["3.10.14", "3.11.7", "3.12.3", "3.13.1"])
def test_every_release_gets_a_well_formed_nvidia_runtime_tag(cuda, python):
    base = gpu_base(pins(f"torch==2.9.0+cu{cuda.replace('.', '')}", python=python))
    match = CUDA_IMAGE_TAG.match(base.image)
    assert match, base.image
    major, minor, _patch, ubuntu = match.groups()
    assert f"{major}.{minor}" == cuda  # the image's runtime is the release the wheels were built for
    assert ubuntu in ("22.04", "24.04")
    if (int(major), int(minor)) < (12, 5):
        assert ubuntu == "22.04"  # nvidia/cuda has no Ubuntu 24.04 images before CUDA 12.5
    # Ubuntu's own python3 only when it is the notebook's minor version; otherwise uv installs it.
    own = {"22.04": "3.10", "24.04": "3.12"}[ubuntu]
    assert base.python_source == ("ubuntu" if own == python.rsplit(".", 1)[0] else "uv")


def test_torch_releases_shipped_today_have_their_own_images():
    # PyTorch's index: cu126, cu128, cu129, cu130; plain PyPI torch 2.11 to 2.15: cuda-toolkit 13.0 to 13.2.
    for cuda in ("12.6", "12.8", "12.9", "13.0", "13.1", "13.2"):
        assert CUDA_IMAGE_RELEASES[cuda].startswith(cuda + ".")


def test_cuda_13_torch_on_python_312_gets_ubuntu_2404_and_its_own_python():
    image, reason = gpu_base_image(pins("torch==2.11.0", "cuda-toolkit==13.0.2", "nvidia-cudnn-cu13==9.13.0.50"))
    assert image == "nvidia/cuda:13.0.1-runtime-ubuntu24.04"
    assert "cuda-toolkit==13.0.2" in reason and "Ubuntu's own python3" in reason


def test_python_311_is_installed_with_uv_not_guessed_from_apt():
    base = gpu_base(pins("torch==2.5.1+cu124", python="3.11.7"))
    assert base.image == "nvidia/cuda:12.4.1-runtime-ubuntu22.04" and base.python_source == "uv"
    assert "installs Python 3.11 with uv" in base.reason


def test_a_minor_without_its_own_image_takes_the_newest_older_one():
    assert gpu_base_image(pins("nvidia-cuda-runtime-cu12==12.7.29"))[0].startswith("nvidia/cuda:12.6.3-")
    # Only the major known: the oldest image of it asks least of the host's driver.
    assert gpu_base_image(pins("nvidia-cudnn-cu13==9.13.0.50"))[0].startswith("nvidia/cuda:13.0.1-")


def test_the_dockerfile_installs_python_from_ubuntu_only_when_it_is_the_same_minor(tmp_path):
    project = render_project(tiny_spec("svc", artifacts=[], python_version="3.11.7"), None, tmp_path / "svc")
    dockerfile = (project / "Dockerfile").read_text()
    assert 'apt-cache policy python3' in dockerfile and '"${PYTHON_VERSION}".*)' in dockerfile
    assert "uv python install" in dockerfile and "COPY --from=builder /opt/python /opt/python" in dockerfile
    assert "ARG BASE_IMAGE=python:3.11-slim\n" in dockerfile  # CPU images are unchanged


# --- where the service puts a model: the decision, fed GPU counts by hand ---------------------------------


@pytest.mark.parametrize(("recorded", "fallback", "override", "gpus", "device"), [
    ("cpu", False, None, 0, "cpu"),
    ("cpu", False, None, 2, "cpu"),  # a CPU model stays on the CPU, GPU or not
    ("cuda:0", False, None, 1, "cuda:0"),
    ("cuda:1", False, None, 2, "cuda:1"),
    ("cuda:1", False, None, 1, "cuda:0"),  # fewer GPUs here than in the notebook's machine
    ("cuda:0", True, None, 0, "cpu"),  # allowed fallback
    ("cuda:0", False, "cpu", 0, "cpu"),  # the operator's override
    ("cpu", False, "cuda", 1, "cuda:0"),
    ("cpu", False, "cuda:1", 2, "cuda:1"),
])
def test_device_choice(recorded, fallback, override, gpus, device):
    placement = loaders.choose_device(recorded, fallback_allowed=fallback, override=override, gpus=gpus)
    assert placement.device == device and placement.recorded == recorded and placement.why


def test_a_gpu_model_without_a_gpu_and_without_fallback_is_refused_with_the_way_out():
    with pytest.raises(loaders.DeviceUnavailable) as error:
        loaders.choose_device("cuda:0", fallback_allowed=False, override=None, gpus=0)
    message = str(error.value)
    assert "ran on cuda:0" in message and "no GPU is visible" in message
    assert "MLSHIP_DEVICE=cpu" in message and "--allow-cpu-fallback" in message


@pytest.mark.parametrize(("override", "gpus", "says"), [
    ("cuda", 0, "asks for a GPU, but 0 CUDA device"), ("cuda:2", 2, "asks for a GPU, but 2 CUDA device"),
    ("gpu", 1, "is not a device: use cpu, cuda or cuda:N"), ("cuda:x", 1, "is not a device"),
])
def test_an_override_that_cannot_be_met_is_an_error_not_a_silent_cpu(override, gpus, says):
    with pytest.raises(loaders.DeviceUnavailable, match=says):
        loaders.choose_device("cpu", fallback_allowed=True, override=override, gpus=gpus)


def test_formats_that_cannot_move_stay_on_the_cpu(monkeypatch):
    monkeypatch.setenv("MLSHIP_DEVICE", "cuda")
    placement = loaders.placement_for({"format": "skops", "device": "cpu"}, fallback_allowed=False)
    assert placement.device == "cpu" and "skops" in placement.why


# --- end to end on this machine's CPU: a torch model in a real shell, served over HTTP ---------------------


TRAIN = """
    import numpy as np
    import torch
    from torch import nn
    torch.manual_seed(0)
    DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

    class Net(nn.Module):
        def __init__(self, n_in, hidden=16):
            super().__init__()
            self.n_in, self.hidden = n_in, hidden
            self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 2))

        def forward(self, x):
            return self.body(x)

    X = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (X[:, 0] + X[:, 1] > 0).astype("int64")
    net = Net(4).to(DEVICE)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(net(torch.as_tensor(X, device=DEVICE)), torch.as_tensor(y, device=DEVICE))
        loss.backward()
        optimizer.step()
    net.eval()
    X_test = X[:6]
"""

# The natural cell of issue 13: the entry names the device itself.
NATURAL_CELL = """
    %%ship moons --sample X_test[:4] --no-verify --out services {flags}
    def predict(x):
        with torch.no_grad():
            return net(torch.as_tensor(x, dtype=torch.float32, device=DEVICE)).argmax(1).cpu().numpy()
"""


@pytest.fixture
def shipped(ipython) -> Path:
    pytest.importorskip("torch")
    ok_cell(ipython, TRAIN)
    ok_cell(ipython, NATURAL_CELL.format(flags=""))
    return Path("services/moons").resolve()


def test_the_natural_cell_records_the_device_and_serves_there(shipped, serve):
    spec = ShipSpec.read(shipped / "ship.json")
    (artifact,) = spec.artifacts
    assert artifact.format == "torch-state-dict" and artifact.device == "cpu"  # no GPU on this machine
    assert spec.device_fallback is True  # every model ran on the CPU
    manifest = json.loads((shipped / "model" / "manifest.json").read_text())
    assert manifest["device_fallback"] is True and manifest["artifacts"][0]["device"] == "cpu"
    assert "| `net` | cpu | cpu | runs on the CPU |" in (shipped / "REVIEW.md").read_text()

    service = serve(shipped)
    assert httpx.get(f"{service.url}/readyz").json() == {"status": "ready", "devices": {"net": "cpu"}}
    assert httpx.get(f"{service.url}/version").json()["devices"]["net"] == {
        "device": "cpu", "recorded": "cpu", "why": "it ran on the CPU in the notebook"}
    answer = service.post("/predict", {"instances": spec.golden.instances})
    assert answer.status_code == 200 and answer.json()["predictions"] == spec.golden.predictions
    service.stop()
    assert "model net on cpu: it ran on the CPU in the notebook" in service.output()


def as_if_exported_on_a_gpu(project: Path, fallback: bool) -> None:
    """The same project as a GPU kernel would have written it: only the recorded device differs."""
    manifest_path = project / "model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"][0]["device"] = "cuda:0"
    manifest["device_fallback"] = fallback
    manifest_path.write_text(json.dumps(manifest))


def first_readyz(project: Path, env: dict | None = None) -> tuple[int, dict, str]:
    """Start the service and return its first /readyz answer (status, body) and its output once stopped.

    uvicorn answers only after the lifespan (the model load, the self-check) ran: the first answer is the
    verdict."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)], cwd=project,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, **(env or {})})
    try:
        answer = None
        deadline = time.monotonic() + 60
        while answer is None and time.monotonic() < deadline and process.poll() is None:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
            except httpx.HTTPError:
                time.sleep(0.2)
        assert answer is not None, "the service never answered /readyz"
    finally:
        process.terminate()
        process.wait(10)
    return answer.status_code, answer.json(), process.stdout.read()


def test_a_gpu_model_on_a_machine_without_gpu_is_not_ready_and_says_why(shipped):
    as_if_exported_on_a_gpu(shipped, fallback=False)
    status, body, output = first_readyz(shipped)
    assert status == 503
    assert body["reason"].startswith("device: the model ran on cuda:0 in the notebook, but no GPU is visible here")
    assert "--allow-cpu-fallback" in body["reason"] and "MLSHIP_DEVICE=cpu" in body["reason"]
    assert "not ready: the model ran on cuda:0" in output


def test_a_moved_model_whose_code_names_its_old_device_is_not_ready_and_says_so(shipped):
    """Seen on an H100: MLSHIP_DEVICE=cpu moves the model, but the natural cell's DEVICE = "cuda" still
    sends the inputs to the GPU; the self-check fails, and the reason says what to change."""
    as_if_exported_on_a_gpu(shipped, fallback=False)
    features = shipped / "app" / "features.py"
    features.write_text(features.read_text().replace("DEVICE = 'cpu'", "DEVICE = 'cuda'"))
    status, body, _output = first_readyz(shipped, {"MLSHIP_DEVICE": "cpu"})
    assert status == 503 and body["devices"] == {"net": "cpu"}
    assert body["reason"].startswith("self-check raised"), body["reason"]
    assert "models were moved: net from cuda:0 to cpu (MLSHIP_DEVICE=cpu)" in body["reason"], body["reason"]
    assert "next(net.parameters()).device" in body["reason"]


def test_a_gpu_model_falls_back_to_the_cpu_when_the_export_allowed_it(shipped, serve):
    as_if_exported_on_a_gpu(shipped, fallback=True)
    service = serve(shipped)
    placement = httpx.get(f"{service.url}/version").json()["devices"]["net"]
    assert placement["device"] == "cpu" and placement["recorded"] == "cuda:0"
    assert "no GPU is visible here" in placement["why"]


def test_mlship_device_overrides_the_recorded_device(shipped, serve, monkeypatch):
    as_if_exported_on_a_gpu(shipped, fallback=False)
    monkeypatch.setenv("MLSHIP_DEVICE", "cpu")
    service = serve(shipped)
    assert httpx.get(f"{service.url}/readyz").json()["devices"] == {"net": "cpu"}
    assert httpx.get(f"{service.url}/version").json()["devices"]["net"]["why"] == "MLSHIP_DEVICE=cpu"


def test_allow_cpu_fallback_reaches_the_export_options(ipython):
    magics = ipython.magics_manager.registry["ShipMagics"]
    cell = "def predict(x):\n    return x\n"
    for line, allowed in (("moons --sample X", False), ("moons --sample X --allow-cpu-fallback", True)):
        options = magics._options(parse_argstring(magics.ship, line), cell)
        assert options.allow_cpu_fallback is allowed


@pytest.mark.parametrize(("devices", "flag", "allowed"), [
    (["cpu", "cpu"], False, True), (["cuda:0", "cpu"], False, False), (["cuda:0"], True, True), ([], False, True),
])
def test_fallback_is_allowed_for_cpu_models_and_for_gpu_models_only_by_the_flag(devices, flag, allowed):
    assert device_fallback(devices, flag) is allowed


def test_review_says_which_gpu_models_may_fall_back():
    spec = tiny_spec(artifacts=[{"name": "net", "file": "net.pt", "format": "torch-state-dict", "sha256": "ab" * 32,
                                 "size_bytes": 10, "type": "__main__.Net", "device": "cuda:0"}],
                     device_fallback=False)
    text = review_markdown(spec, None)
    assert "| `net` | cuda:0 |" in text and "not ready: /readyz 503 says why" in text
    text = review_markdown(spec.model_copy(update={"device_fallback": True}), None)
    assert "falls back to the CPU (--allow-cpu-fallback)" in text


# --- the torch-pickle fallback -------------------------------------------------------------------------------


def test_torch_pickle_fallback_loads_a_notebook_class(ipython, serve):
    pytest.importorskip("torch")
    ok_cell(ipython, TRAIN)
    ok_cell(ipython, """
        class Scaled(nn.Module):
            def __init__(self, inner, factor):  # `inner` is not kept under its own name: no state dict round trip
                super().__init__()
                self.wrapped, self.factor = inner, factor

            def forward(self, x):
                return self.wrapped(x) * self.factor

        scaled = Scaled(net, 2.0).eval()
    """)
    ok_cell(ipython, """
        %%ship scaled --sample X_test[:4] --no-verify --out services
        def predict(x):
            with torch.no_grad():
                return scaled(torch.as_tensor(x, device=DEVICE)).cpu().numpy()
    """)
    project = Path("services/scaled").resolve()
    spec = ShipSpec.read(project / "ship.json")
    (artifact,) = spec.artifacts
    assert artifact.format == "torch-pickle" and artifact.device == "cpu"
    service = serve(project)
    answer = service.post("/predict", {"instances": spec.golden.instances})
    assert answer.status_code == 200 and answer.json()["predictions"] == spec.golden.predictions


# --- Kubernetes: the GPU variant of the Deployment -----------------------------------------------------------


def render_with_device(tmp_path: Path, device: str) -> dict:
    data = b"not a real model"
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "net.pt").write_bytes(data)
    artifact = {"name": "net", "file": "net.pt", "format": "torch-state-dict",
                "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data), "type": "__main__.Net",
                "device": device}
    project = render_project(tiny_spec("moons_gpu", artifacts=[artifact]), tmp_path / "model", tmp_path / "svc")
    return yaml.safe_load((project / "k8s" / "deployment.yaml").read_text())


def test_a_model_on_cuda_gets_the_gpu_deployment(tmp_path):
    deployment = render_with_device(tmp_path, "cuda:0")
    kubernetes_validate.validate(deployment, "1.30", strict=True)
    pod = deployment["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources["requests"]["memory"] == "1Gi" and resources["limits"]["memory"] == "2Gi"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]


def test_a_model_on_the_cpu_keeps_the_cpu_deployment(tmp_path):
    deployment = render_with_device(tmp_path, "cpu")
    kubernetes_validate.validate(deployment, "1.30", strict=True)
    pod = deployment["spec"]["template"]["spec"]
    assert "nvidia.com/gpu" not in json.dumps(deployment) and "nodeSelector" not in pod
    assert pod["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}


def test_old_ship_json_without_devices_still_reads_as_cpu():
    data = tiny_spec().to_json_dict()
    data.pop("device_fallback")
    for artifact in data["artifacts"]:
        artifact.pop("device")
    spec = ShipSpec.model_validate(data)
    assert spec.device_fallback is True and spec.artifacts[0].device == "cpu"


def test_the_gpu_check_script_runs_on_the_cpu_and_says_so(tmp_path):
    pytest.importorskip("torch")
    script = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"
    done = subprocess.run([sys.executable, str(script), "--workdir", str(tmp_path), "--json", str(tmp_path / "r.json")],
                          capture_output=True, text=True, timeout=600, env={**os.environ, "DEVICE": "cpu"})
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["gpu"] is False and report["served_on"] == "cpu" and report["predictions_equal"] is True
    assert report["latency_ms"]["1"] > 0 and report["latency_ms"]["200"] > 0
    assert report["tests_ok"] is True and report["tests_passed"] > 0 and report["tests_failed"] == 0
    assert "no GPU" in done.stdout


# --- CPU images carry no CUDA ----------------------------------------------------------------------------------


def req(name: str, version: str, *because: str):
    from jupyter_mlship.spec import Requirement

    return Requirement(name=name, version=version, because=list(because))


XGBOOST_PINS = [req("numpy", "2.4.6", "numpy", "scipy", "xgboost"), req("nvidia-nccl-cu12", "2.28.9", "xgboost"),
                req("scipy", "1.17.0", "xgboost"), req("xgboost", "3.2.0", "xgboost")]


def test_a_cpu_capture_pins_xgboost_cpu_and_leaves_nccl_out():
    asked = []
    pins = cpu_only_pins(XGBOOST_PINS, lambda name, index: asked.append((name, index)) or ["3.2.0", "3.1.3"])
    assert asked == [("xgboost-cpu", None)]  # the user's own index settings
    assert [r.line for r in pins.requirements] == ["numpy==2.4.6", "scipy==1.17.0", "xgboost-cpu==3.2.0"]
    assert pins.dropped == ["nvidia-nccl-cu12==2.28.9"] and not pins.warnings
    assert pins.requirements[-1].because == ["xgboost"]


@pytest.mark.parametrize(("answer", "why"), [(["3.1.3"], "has no xgboost-cpu==3.2.0"), (None, "could not be asked")])
def test_without_the_twin_on_the_index_the_pin_stays_with_a_warning(answer, why):
    pins = cpu_only_pins(XGBOOST_PINS, lambda name, index: answer)
    assert [r.name for r in pins.requirements] == ["numpy", "nvidia-nccl-cu12", "scipy", "xgboost"]
    (warning,) = pins.warnings
    assert why in warning and "xgboost==3.2.0 is pinned although the model ran on the CPU" in warning


def test_cuda_libraries_another_library_needs_are_kept():
    pins = cpu_only_pins([*XGBOOST_PINS[:1], req("nvidia-nccl-cu12", "2.28.9", "torch", "xgboost"),
                          *XGBOOST_PINS[2:]], lambda name, index: ["3.2.0"])
    assert "nvidia-nccl-cu12" in [r.name for r in pins.requirements] and not pins.dropped


def installed_in_the_service(monkeypatch, installed: dict[str, str]) -> None:
    """The service's loader sees these distributions (name -> version) and no others."""
    def version(name):
        if name not in installed:
            raise loaders.importlib.metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(loaders.importlib.metadata, "version", version)


def test_the_service_accepts_the_cpu_twin_of_the_library_an_artifact_was_saved_with(monkeypatch):
    installed = {"xgboost-cpu": "3.2.0", "numpy": "2.4.6"}
    installed_in_the_service(monkeypatch, installed)
    loaders.check_versions({"file": "clf.json", "frameworks": {"xgboost": "3.2.0", "numpy": "2.4.6"}})
    installed["xgboost-cpu"] = "3.1.0"
    with pytest.raises(loaders.ArtifactError, match=r"xgboost 3.1.0 \(saved with 3.2.0\)"):
        loaders.check_versions({"file": "clf.json", "frameworks": {"xgboost": "3.2.0"}})


def test_the_service_loads_a_torch_artifact_on_another_build_of_the_same_release(monkeypatch):
    installed = {"torch": "2.14.1+cpu", "numpy": "2.4.6"}
    installed_in_the_service(monkeypatch, installed)
    for saved in ("2.14.1", "2.14.1+cu130", "2.14.1+cpu"):  # saved in a CUDA kernel, served by the +cpu pin
        loaders.check_versions({"file": "net.pt", "frameworks": {"torch": saved, "numpy": "2.4.6"}})
    with pytest.raises(loaders.ArtifactError, match=r"torch 2.14.1\+cpu \(saved with 2.13.0\)"):
        loaders.check_versions({"file": "net.pt", "frameworks": {"torch": "2.13.0"}})
    installed["numpy"] = "2.4.6+local"  # other libraries still match exactly
    with pytest.raises(loaders.ArtifactError, match=r"numpy 2.4.6\+local \(saved with 2.4.6\)"):
        loaders.check_versions({"file": "net.pt", "frameworks": {"numpy": "2.4.6"}})


def test_the_index_is_asked_through_pip_with_the_users_settings(tmp_path, monkeypatch):
    """A local simple index (file://) stands in for the user's index; pip reads it from its config."""
    page = tmp_path / "simple" / "xgboost-cpu"
    page.mkdir(parents=True)
    wheel = "xgboost_cpu-3.2.0-py3-none-manylinux_2_28_x86_64.whl"
    (page / wheel).write_bytes(b"")
    (page / "index.html").write_text(f'<html><body><a href="{wheel}">{wheel}</a></body></html>')
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nindex-url = file://{tmp_path}/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    for name in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    assert versions_on_index("xgboost-cpu") == ["3.2.0"]
    assert versions_on_index("lightgbm-cpu") == []


def test_a_gpu_model_gets_the_cuda_base_and_a_cpu_model_the_slim_one_whatever_the_pins():
    cuda_pins = [{"name": "torch", "version": "2.11.0"}, {"name": "cuda-toolkit", "version": "13.0.2"}]
    on_gpu = tiny_spec(requirements=cuda_pins, artifacts=[{
        "name": "net", "file": "net.pt", "format": "torch-state-dict", "sha256": "ab" * 32, "size_bytes": 1,
        "type": "__main__.Net", "device": "cuda:0"}])
    assert default_gpu_base(on_gpu).image == "nvidia/cuda:13.0.1-runtime-ubuntu24.04"
    assert "nvidia/cuda:13.0.1-runtime-ubuntu24.04" in review_markdown(on_gpu, None)
    on_cpu = tiny_spec(requirements=cuda_pins)
    assert default_gpu_base(on_cpu) is None and "python:3.11-slim" in review_markdown(on_cpu, None)
    assert "every model ran on the CPU" in cpu_only_reason(on_cpu)


def test_a_lightgbm_image_gets_the_openmp_runtime_its_wheel_links(tmp_path):
    """Seen in a real build: lightgbm's wheel needs libgomp.so.1, which slim images lack (the model did not load)."""
    lightgbm = render_project(tiny_spec("svc", artifacts=[], requirements=[{"name": "lightgbm", "version": "4.7.0"}]),
                              None, tmp_path / "lgb")
    final = (lightgbm / "Dockerfile").read_text().split("\nFROM ${BASE_IMAGE}\n")[-1]
    assert "apt-get install -y --no-install-recommends libgomp1" in final
    plain = render_project(tiny_spec("svc", artifacts=[]), None, tmp_path / "plain")
    assert "libgomp1" not in (plain / "Dockerfile").read_text()
