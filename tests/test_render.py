"""Render a ShipSpec into a service project; the project's own tests pass and the service answers over HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from jupyter_mlship.render import render_project
from jupyter_mlship.capture.schema import infer_input_schema, infer_output_schema, make_golden
from jupyter_mlship.spec import Entry, Requirement, ShipSpec, Source

ARRAY_FEATURES = """\
import numpy as np


def predict(X):
    return X.sum(axis=1)
"""

# Uses every column the way a notebook would, so wrong dtypes or missing markers would show.
FRAME_FEATURES = """\
import numpy as np
import pandas as pd

RATES = {"basic": 1.0, "plus": 2.5}


def predict(frame):
    assert str(frame["plan"].dtype) == "category", frame.dtypes
    assert frame["city"].dtype == pd.StringDtype(na_value=np.nan), frame.dtypes
    income = frame["income"].fillna(0.0)
    rate = frame["plan"].astype(object).map(RATES).astype(float)
    return pd.DataFrame({
        "score": income * rate + frame["age"],
        "city_known": frame["city"].notna(),
        "label": np.where(income > 100, "high", "low"),
    })
"""


def installed(*names: str) -> list[Requirement]:
    from importlib.metadata import version

    return [Requirement(name=name, version=version(name)) for name in names]


def make_spec(name: str, features: str, entry, sample, max_instances: int = 50) -> ShipSpec:
    """What capture produces, built by hand: schemas and golden data from a sample and the entry function."""
    result = entry(sample)
    input_schema = infer_input_schema(sample)
    output_schema = infer_output_schema(result, len(sample))
    return ShipSpec(
        name=name,
        source=Source(kernel_python="3.11.7", captured_at="2026-01-01T00:00:00+00:00", mlship_version="0.1.0"),
        entry=Entry(name="predict", kind="function"),
        python_version="3.11.7",
        features_source=features,
        captured=[],
        artifacts=[],
        requirements=installed("fastapi", "pydantic", "uvicorn", "prometheus_client", "numpy", "pandas"),
        test_requirements=installed("pytest", "httpx"),
        input=input_schema,
        output=output_schema,
        golden=make_golden(sample, result, input_schema, output_schema),
        max_instances=max_instances,
        max_body_bytes=64 * 1024,
    )


def entry_of(features: str):
    namespace: dict = {}
    exec(features, namespace)
    return namespace["predict"]


@pytest.fixture
def array_spec() -> ShipSpec:
    sample = np.array([[1.0, 2.0, 3.0], [4.0, 5.5, 6.0], [0.1, 0.2, 0.3]])
    return make_spec("array-svc", ARRAY_FEATURES, entry_of(ARRAY_FEATURES), sample)


@pytest.fixture
def frame_spec() -> ShipSpec:
    sample = pd.DataFrame(
        {
            "age": [31, 45, 27, 60],
            "income": [120.5, np.nan, 80.0, 300.25],
            "plan": pd.Categorical(["basic", "plus", "basic", "plus"]),
            "city": ["Oslo", None, "Lima", "Pune"],
        }
    )
    return make_spec("frame_svc", FRAME_FEATURES, entry_of(FRAME_FEATURES), sample)


OTHER_KINDS = {
    "records": (
        "def predict(rows):\n    return [len(r['text']) + r['n'] + (r.get('bonus') or 0) for r in rows]\n",
        [{"text": "ab", "n": 1, "bonus": None}, {"text": "abc", "n": 2, "bonus": 1}],
    ),
    "strings": (
        "import numpy as np\n\n\ndef predict(texts):\n    return np.array([[len(t), t.count('a')] for t in texts])\n",
        ["banana", "kiwi", "apple"],
    ),
    "scalars": ("def predict(x):\n    return x * 2\n", np.array([0.5, 1.5, 2.5])),
    "datetimes": (
        "def predict(frame):\n    return frame['when'].dt.hour + frame['class'] + frame['level'].astype(int)\n",
        pd.DataFrame(
            {
                "when": pd.to_datetime(["2024-01-01 10:00", "2024-06-01 23:30"]),
                "seen": pd.to_datetime(["2024-01-01 10:00", None], utc=True).tz_convert("Asia/Tokyo"),
                "class": [1, 2],
                "level": pd.Categorical([3, 4]),
            }
        ),
    ),
}


@pytest.mark.parametrize("kind", sorted(OTHER_KINDS))
def test_generated_tests_pass_for_other_input_kinds(tmp_path, kind):
    features, sample = OTHER_KINDS[kind]
    spec = make_spec(f"{kind}-svc", features, entry_of(features), sample)
    assert spec.input.kind == ("dataframe" if kind == "datetimes" else kind)
    run_generated_tests(render_project(spec, None, tmp_path / spec.name))


def run_generated_tests(project: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_layout(tmp_path, frame_spec):
    project = render_project(frame_spec, None, tmp_path / "frame_svc")
    for path in [
        "README.md", "ship.json", "requirements.txt", "requirements-test.txt", "pytest.ini",
        "app/__init__.py", "app/main.py", "app/schema.py", "app/features.py", "app/convert.py",
        "model/manifest.json", "tests/test_golden.py", "tests/test_schema.py", "tests/test_bad_input.py",
        ".github/workflows/ci.yml",
    ]:  # fmt: skip
        assert (project / path).is_file(), path
    assert (project / "app/features.py").read_text() == FRAME_FEATURES
    assert ShipSpec.read(project / "ship.json") == frame_spec
    requirements = (project / "requirements.txt").read_text().splitlines()
    assert requirements == [r.line for r in frame_spec.requirements]
    assert '"3.11.7"' in (project / ".github/workflows/ci.yml").read_text()
    assert "uvicorn app.main:app" in (project / "README.md").read_text()
    assert not list(tmp_path.glob(".frame_svc.*")), "the temporary render directory was left behind"


def test_features_source_is_not_treated_as_a_template(tmp_path, array_spec):
    source = ARRAY_FEATURES + '\nTEMPLATE = f"{{not jinja}} {% raw %} {#"\n'
    spec = array_spec.model_copy(update={"features_source": source})
    project = render_project(spec, None, tmp_path / "svc")
    assert (project / "app/features.py").read_text() == source


def test_existing_destination_is_refused_and_untouched(tmp_path, array_spec):
    dest = tmp_path / "array-svc"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="already exists"):
        render_project(array_spec, None, dest)
    assert [p.name for p in dest.iterdir()] == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["array-svc"]


def test_artifacts_are_copied_and_listed(tmp_path, array_spec):
    import hashlib

    from jupyter_mlship.spec import ArtifactSpec

    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    (artifacts / "weights.npy").write_bytes(b"\x93NUMPY fake weights")
    digest = hashlib.sha256(b"\x93NUMPY fake weights").hexdigest()
    artifact = ArtifactSpec(
        name="weights", file="weights.npy", format="pickle", sha256=digest, size_bytes=19, type="numpy.ndarray"
    )
    spec = array_spec.model_copy(update={"artifacts": [artifact]})
    project = render_project(spec, artifacts, tmp_path / "out" / "svc")
    assert (project / "model/weights.npy").read_bytes() == b"\x93NUMPY fake weights"
    manifest = (project / "model/manifest.json").read_text()
    assert digest in manifest

    wrong = spec.model_copy(update={"artifacts": [artifact.model_copy(update={"sha256": "0" * 64})]})
    with pytest.raises(ValueError, match="sha256"):
        render_project(wrong, artifacts, tmp_path / "out" / "svc2")
    assert not (tmp_path / "out" / "svc2").exists()


@pytest.mark.parametrize("spec_fixture", ["array_spec", "frame_spec"])
def test_generated_tests_pass(tmp_path, request, spec_fixture):
    spec = request.getfixturevalue(spec_fixture)
    project = render_project(spec, None, tmp_path / spec.name)
    run_generated_tests(project)


@pytest.fixture
def running_frame_service(tmp_path, frame_spec, serve):
    project = render_project(frame_spec, None, tmp_path / frame_spec.name)
    return serve(project, env={"PYTHONPATH": str(project)}).url


def test_service_over_http(running_frame_service, frame_spec):
    base = running_frame_service
    new_rows = [
        {"age": 50, "income": 1000, "plan": "plus", "city": "Accra"},  # an int for a float column
        {"age": 19, "income": None, "plan": "basic", "city": None},
    ]
    same_id = {"X-Request-ID": "same-request"}  # the body carries the request id
    response = httpx.post(f"{base}/predict", json={"instances": new_rows}, headers=same_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == {"name": "frame_svc", "version": "1"}
    assert body["predictions"] == [
        {"score": 2550.0, "city_known": True, "label": "high"},
        {"score": 19.0, "city_known": False, "label": "low"},
    ]
    same = httpx.post(f"{base}/v1/models/frame_svc:predict", json={"instances": new_rows}, headers=same_id)
    assert same.json() == body

    assert httpx.get(f"{base}/readyz").status_code == 200
    assert httpx.get(f"{base}/healthz").status_code == 200
    metrics = httpx.get(f"{base}/metrics").text
    for name in ["mlship_requests_total", "mlship_request_duration_seconds", "mlship_instances_per_request",
                 "mlship_model_info", "mlship_ready"]:  # fmt: skip
        assert name in metrics, name
    assert 'route="/predict",status="200"' in metrics
    version = httpx.get(f"{base}/version").json()
    assert version["name"] == "frame_svc" and version["python"] and "artifacts" in version

    bad = httpx.post(f"{base}/predict", json={"instances": [{**new_rows[0], "age": "fifty"}]})
    assert bad.status_code == 422
    assert "instances[0].age" in bad.json()["message"]
    unknown_plan = httpx.post(f"{base}/predict", json={"instances": [{**new_rows[0], "plan": "gold"}]})
    assert unknown_plan.status_code == 422 and "instances[0].plan" in unknown_plan.text
