"""The reference profile at export: model/reference.json, its table in REVIEW.md, the sample fallback."""

from __future__ import annotations

import json

import pytest

from support.monitoring import TRAIN
from support.notebooks import ok_cell, run_cell

ENTRY = """
def predict(x):
    return model.predict(x[["a", "b", "c"]])
"""


def test_reference_profile_from_the_training_data_is_shipped_without_rows(ipython, tmp_path):
    ok_cell(ipython, TRAIN)
    ok_cell(ipython, "%%ship demo --sample X.head(20) --reference X --out out --no-verify --log-exclude d:hash" + ENTRY)
    project = tmp_path / "out" / "demo"
    reference = json.loads((project / "model" / "reference.json").read_text())
    assert (reference["source"], reference["rows"]) == ("reference", 3000)
    a = reference["features"]["a"]
    assert a["kind"] == "numeric" and a["null_rate"] == 0 and len(a["edges"]) == 9
    assert a["fractions"] == pytest.approx([0.1] * 10, abs=0.001)
    training = ipython.user_ns["X"]
    assert (a["min"], a["max"]) == (training.a.min(), training.a.max())
    assert reference["features"]["d"]["categories"].keys() == {"red", "green", "blue"}
    assert reference["prediction"]["kind"] == "categorical"  # labels 0/1 on the training data
    raw = {repr(v) for v in training.a.iloc[100:200]}  # no raw rows: none of these values is in the file
    assert not any(value in (project / "model" / "reference.json").read_text() for value in raw)
    review = (project / "REVIEW.md").read_text()
    assert "## Reference profile (model/reference.json, from the reference: 3000 rows; guard: flag)" in review
    assert "| `d` | categorical | 0.0% | 3 values:" in review and "| hashed |" in review
    assert "reference" not in json.loads((project / "ship.json").read_text())  # one copy: model/reference.json
    assert json.loads((project / "ship.json").read_text())["monitoring"]["log_hash"] == ["d"]


def test_without_reference_the_sample_is_profiled_with_a_warning(ipython, tmp_path):
    ok_cell(ipython, TRAIN)
    ok_cell(ipython, "%%ship demo --sample X.head(50) --out out --no-verify" + ENTRY)
    project = tmp_path / "out" / "demo"
    reference = json.loads((project / "model" / "reference.json").read_text())
    assert (reference["source"], reference["rows"]) == ("sample", 50)
    review = (project / "REVIEW.md").read_text().replace("\\", "")  # REVIEW.md escapes Markdown
    assert "no --reference given: drift and the skew guard compare requests with the sample (50 rows)" in review


def test_an_unknown_log_exclude_field_is_refused_by_name(ipython):
    ok_cell(ipython, TRAIN)
    result = run_cell(ipython, "%%ship demo --sample X.head(5) --out out --no-verify --log-exclude email" + ENTRY)
    assert not result.success
    assert "--log-exclude: `email` is not a field of the request (a, b, c, d)" in str(result.error_in_exec)


def test_guard_reject_refuses_a_sample_it_would_itself_refuse(ipython):
    ok_cell(ipython, TRAIN)
    result = run_cell(ipython, "%%ship demo --sample X.head(500) --reference X.head(100) --out out --no-verify "
                               "--guard reject" + ENTRY)
    assert not result.success
    message = str(result.error_in_exec)
    assert message.startswith("--guard reject would refuse the sample itself (instances[")
    assert "is outside the training range" in message and "use --guard flag" in message


def test_a_training_frame_with_the_target_column_is_read_as_requests_are(ipython, tmp_path):
    ok_cell(ipython, TRAIN)
    ok_cell(ipython, "Xy = X.assign(y=y)")
    ok_cell(ipython, "%%ship demo --sample X.head(20) --reference Xy --out out --no-verify" + ENTRY)
    reference = json.loads((tmp_path / "out" / "demo" / "model" / "reference.json").read_text())
    assert list(reference["features"]) == ["a", "b", "c", "d"]  # the target is not a request field
    assert (reference["source"], reference["prediction_source"]) == ("reference", "reference")
    labels = ipython.user_ns["model"].predict(ipython.user_ns["X"][["a", "b", "c"]])
    assert reference["prediction"]["categories"]["1"] == pytest.approx(labels.mean(), abs=0.03)
