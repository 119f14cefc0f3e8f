"""The user's story: a scikit-learn notebook, `mlship export`, `mlship build` with podman, a running image.

No registry is reachable, so the image is built on a local base image made once with mmdebstrap
(tests/support/make_base_image.sh) and kept between runs, like the layers of the build itself.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.notebooks import mlship, write_notebook
from jupyter_mlship.build import Builder, BuildError, detect_builder, run_flags, smoke_test
from jupyter_mlship.spec import ShipSpec
from support.images import ensure_base_image, missing_tools

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(missing_tools() is not None, reason=str(missing_tools())),
]

TAG = "localhost/mlship-e2e-iris:test"
NOTEBOOK = [
    "%load_ext jupyter_mlship",
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 4))
    y = (X[:, 0] - X[:, 3] > 0).astype(int)
    clf = LogisticRegression().fit(X, y)
    """,
    "%ship iris --model clf --sample X[:5] --method predict_proba",
]


@pytest.fixture(scope="module")
def base_image() -> str:
    return ensure_base_image()


@pytest.fixture(scope="module")
def podman() -> Builder:
    return detect_builder("podman")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("e2e")
    notebook = write_notebook(work / "iris.ipynb", NOTEBOOK)
    done = mlship("export", str(notebook), "--out", str(work / "services"), cwd=work)
    assert done.returncode == 0, done.stdout + done.stderr
    # The services folder is a git repository, so the image records the commit it was built from.
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "export"]):
        subprocess.run([*git, *cmd], cwd=work / "services", check=True)
    return work / "services" / "iris"


def tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if ".git" not in p.parts}


def inspect(image: str) -> dict:
    done = subprocess.run(["podman", "image", "inspect", image], capture_output=True, text=True, check=True)
    return json.loads(done.stdout)[0]


@dataclass
class Built:
    tag: str
    done: subprocess.CompletedProcess
    before: dict[str, tuple[int, int]]  # the project's files before the build


@pytest.fixture(scope="module")
def built(project, base_image, podman) -> Built:
    """`mlship build` of the project, once for the tests of this module that need its image."""
    before = tree(project)
    done = mlship("build", str(project), "--builder", "podman", "--base-image", base_image,
                  "--network", "host", "--tag", TAG)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr
    return Built(TAG, done, before)


def test_build_smoke_tests_labels_and_runs_as_non_root(project, built, base_image, podman):
    before = built.before
    out = built.done.stdout
    assert "STEP" in out  # the build log itself was shown
    assert "Smoke test: passed" in out and "golden predictions match" in out
    assert f"above the base image {base_image}" in out and "Size:" in out
    assert "Run it:     podman run" in out
    assert tree(project) == before, "the build wrote into the project"

    spec = json.loads((project / "ship.json").read_text())
    labels = inspect(TAG)["Config"]["Labels"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert labels["org.opencontainers.image.revision"] == head
    assert labels["org.opencontainers.image.title"] == "iris"
    assert labels["org.opencontainers.image.version"] == spec["version"]
    assert labels["org.opencontainers.image.created"]
    assert labels["io.mlship.model.name"] == "iris"
    assert labels["io.mlship.model.version"] == spec["version"]
    assert labels["io.mlship.artifacts.sha256"] == ",".join(f"{a['name']}:{a['sha256']}" for a in spec["artifacts"])
    assert labels["io.mlship.source.notebook"].endswith("iris.ipynb")
    assert "/healthz" in json.dumps(inspect(TAG)["Healthcheck"])  # kept: built in the docker format

    uid = subprocess.run(["podman", "run", "--rm", *run_flags(podman), "--entrypoint", "id", TAG, "-u"],
                         capture_output=True, text=True, timeout=120)
    assert uid.returncode == 0, uid.stderr
    assert int(uid.stdout.strip()) == 10001
    assert no_smoke_containers_left()


def no_smoke_containers_left() -> bool:
    return subprocess.run(["podman", "ps", "-a", "--filter", "name=mlship-smoke", "-q"],
                          capture_output=True, text=True).stdout.strip() == ""


def test_the_smoke_test_compares_with_the_golden_predictions(project, built, podman):
    spec = ShipSpec.read(project / "ship.json")
    spec.golden.predictions[0] = [p + 0.5 for p in spec.golden.predictions[0]]
    lines: list[str] = []
    with pytest.raises(BuildError, match="predicts differently from the notebook on the golden request"):
        smoke_test(podman, built.tag, spec, on_line=lines.append)
    assert any("log of the smoke-test container" in line for line in lines)
    assert no_smoke_containers_left()


def test_an_image_that_fails_its_self_check_fails_the_build(project, base_image, tmp_path):
    broken = shutil.copytree(project, tmp_path / "iris")
    spec = json.loads((broken / "ship.json").read_text())
    spec["golden"]["predictions"][0] = [p + 0.5 for p in spec["golden"]["predictions"][0]]
    (broken / "ship.json").write_text(json.dumps(spec))
    done = mlship("build", str(broken), "--builder", "podman", "--base-image", base_image,
                  "--network", "host", "--tag", "localhost/mlship-e2e-iris:broken", timeout=300)
    subprocess.run(["podman", "rmi", "--force", "localhost/mlship-e2e-iris:broken"], capture_output=True)
    assert done.returncode != 0
    assert done.stderr.startswith("mlship build: ") and "not ready" in done.stderr, done.stderr
    assert "--- log of the smoke-test container" in done.stdout
    assert no_smoke_containers_left()


def test_ship_magic_with_build_ends_with_a_proven_image(tmp_path, base_image, monkeypatch):
    monkeypatch.setenv("MLSHIP_BASE_IMAGE", base_image)
    cells = NOTEBOOK[:2] + ["%ship magicbuilt --model clf --sample X[:5] --build --version 7"]
    notebook = write_notebook(tmp_path / "built.ipynb", cells)
    done = mlship("export", str(notebook), "--out", str(tmp_path / "services"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "smoke-tested image magicbuilt:7" in done.stdout
    labels = inspect("magicbuilt:7")["Labels"]
    assert labels["io.mlship.model.name"] == "magicbuilt" and labels["io.mlship.model.version"] == "7"
    subprocess.run(["podman", "rmi", "-f", "magicbuilt:7"], capture_output=True)
