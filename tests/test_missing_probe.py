"""Which fields may be missing in a request is asked of the entry function itself, in a real IPython shell:
it must take the missing value and still predict (a NaN carried through to the answer is a refusal), and
a record field may be left out where the code reads it with a default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from jupyter_mlship.capture.schema import UnsupportedSample, infer_input_schema
from jupyter_mlship.runtime import runtime_module
from support.notebooks import ok_cell

convert = runtime_module("convert")


def input_schema(name: str) -> dict:
    return json.loads(Path(f"services/{name}/ship.json").read_text())["input"]


def test_an_entry_that_carries_nan_into_its_prediction_does_not_accept_missing_values(ipython):
    ok_cell(ipython, """
        import numpy as np
        import pandas as pd
        W = np.array([0.5, -1.0])
        X = np.array([[1.0, 2.0], [3.0, 4.0]])
        frame = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0]})
    """)
    ok_cell(ipython, """
        %%ship carries --sample X --no-verify
        def predict(x):
            return x @ W
    """)
    ok_cell(ipython, """
        %%ship fills --sample X --no-verify
        def predict(x):
            return np.nan_to_num(x) @ W
    """)
    ok_cell(ipython, """
        %%ship columns --sample frame --no-verify
        def predict(frame):
            return (frame["a"].fillna(0.0) * 2 + frame["b"]).to_numpy()
    """)
    # x @ W raises nothing on NaN, but answers NaN: a request with a null must be refused, not answered null.
    assert input_schema("carries")["nullable"] is False
    assert input_schema("fills")["nullable"] is True
    columns = {c["name"]: c["nullable"] for c in input_schema("columns")["columns"]}
    assert columns == {"a": True, "b": False}


def test_a_model_that_answers_nan_on_the_sample_itself_is_judged_by_errors_only(ipython):
    ok_cell(ipython, """
        import numpy as np
        X = np.array([[1.0, 2.0], [3.0, 4.0]])
    """)
    ok_cell(ipython, """
        %%ship partial --sample X --no-verify
        def predict(x):
            return np.where(x[:, 0] > 2, np.nan, x.sum(axis=1))
    """)
    assert input_schema("partial")["nullable"] is True


def test_record_fields_read_with_a_default_may_be_left_out_or_null(ipython, serve):
    ok_cell(ipython, """
        rows = [{"id": 1, "age": 31, "plan": "pro", "score": 0.5}, {"id": 2, "age": 40, "plan": "free", "score": 1.5}]
    """)
    ok_cell(ipython, """
        %%ship records --sample rows --no-verify
        import math
        def predict(records):
            out = []
            for r in records:
                score = r.get("score", math.nan)
                score = 0.0 if math.isnan(score) else score
                out.append(r["id"] + float(r.get("age", 40)) + ((r.get("plan") or "free") == "pro") + score)
            return out
    """)
    columns = {c["name"]: (c["nullable"], c.get("missing")) for c in input_schema("records")["columns"]}
    # id: required (r["id"]); age: float(None) fails and float(NaN) answers NaN, so a null means the field
    # left out; plan: None works; score: None fails, NaN works.
    assert columns == {"id": (False, None), "age": (True, "absent"), "plan": (True, "none"), "score": (True, "nan")}
    schema = input_schema("records")
    rebuilt = convert.instances_to_sample([{"id": 3, "age": None, "plan": None, "score": None}, {"id": 4}], schema)
    assert rebuilt[0] == {"id": 3, "plan": None, "score": rebuilt[0]["score"]} and rebuilt[0]["score"] != rebuilt[0]["score"]
    assert rebuilt[1] == {"id": 4}

    service = serve(Path("services/records").resolve())
    predict = ipython.user_ns["predict"]
    for instances in ([{"id": 3}], [{"id": 3, "age": None, "plan": None, "score": None}], [{"id": 5, "age": 20}]):
        response = service.post("/predict", {"instances": instances})
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == predict(convert.instances_to_sample(instances, schema))
    missing_id = service.post("/predict", {"instances": [{"age": 20}]})
    assert missing_id.status_code == 422 and "id" in missing_id.text


def test_a_record_field_the_sample_only_leaves_out_stays_left_out_when_null():
    schema = infer_input_schema([{"a": 1, "b": 2.5}, {"a": 2}])
    column = next(c for c in schema.columns if c.name == "b")
    assert (column.nullable, column.missing) == (True, "absent")
    assert convert.instances_to_sample([{"a": 1, "b": None}], schema.model_dump()) == [{"a": 1}]


@pytest.mark.parametrize("value", [["a", "b"], {"x": 1}])
def test_a_record_field_holding_a_list_or_object_is_refused_with_what_to_do(value):
    with pytest.raises(UnsupportedSample) as refused:
        infer_input_schema([{"age": 31, "tags": value}])
    message = str(refused.value)
    assert "'tags'" in message and "nested lists and objects" in message and "flatten" in message


def test_a_record_field_the_code_reads_without_a_default_must_be_sent_as_null(ipython):
    """The sample holds note: None in some records and note in all: code reading record["note"] gets a
    request's null as None, and a request that leaves the field out a 422 naming it, not a KeyError from
    the model."""
    ok_cell(ipython, """
        notes = [{"id": 1, "note": None}, {"id": 2, "note": "late"}, {"id": 3, "note": "ok"}]
    """)
    ok_cell(ipython, """
        %%ship noted --sample notes --no-verify
        def predict(records):
            return [r["id"] + (0 if r["note"] is None else len(r["note"])) for r in records]
    """)
    project = Path("services/noted")
    note = next(c for c in json.loads((project / "ship.json").read_text())["input"]["columns"] if c["name"] == "note")
    assert (note["nullable"], note["missing"], note["present"]) == (True, "none", True)
    assert "| `note` | str | string | yes, as None; must be sent (as null), not left out |" in (
        project / "REVIEW.md").read_text()
    schema = (project / "app" / "schema.py").read_text()
    assert "'note': Optional[StrictStr]," in schema or "'note': StrictStr | None," in schema, schema
    assert "NotRequired[" not in schema.split("Instance = ")[1].split("}))")[0]
    check = ("from app.schema import decode_request\n"
             "print(decode_request(b'{\"instances\": [{\"id\": 1, \"note\": null}]}'))\n"
             "try:\n    decode_request(b'{\"instances\": [{\"id\": 1}]}')\n"
             "except Exception as exc:\n    print(exc.errors()[0]['loc'], exc.errors()[0]['msg'])\n")
    result = subprocess.run([sys.executable, "-c", check], cwd=project, capture_output=True, text=True, timeout=120)
    assert result.stdout.splitlines() == ["[{'id': 1, 'note': None}]", "('instances', 0, 'note') Field required"], (
        result.stdout + result.stderr)


def test_the_review_says_how_a_null_reaches_the_entry_function(ipython):
    ok_cell(ipython, """
        rows = [{"id": 1, "age": 31, "note": None}, {"id": 2, "age": 40, "note": "x"}]
    """)
    ok_cell(ipython, """
        %%ship reviewed --sample rows --no-verify
        def predict(records):
            return [r["id"] + float(r.get("age", 40)) for r in records]
    """)
    review = Path("services/reviewed/REVIEW.md").read_text()
    assert "| `id` | int | integer | no |" in review
    assert "| `age` | int | integer | yes, as the field left out |" in review
    assert "| `note` | str | string | yes, as None |" in review


def test_values_a_column_cannot_hold_are_refused_naming_the_field(ipython, serve):
    ok_cell(ipython, """
        import numpy as np
        import pandas as pd
        frame = pd.DataFrame({"floor": np.array([1, 2], dtype=np.int8), "port": np.array([80, 443], dtype=np.uint16),
                              "temp.c": np.array([20.5, 21.0], dtype=np.float32), "amount": [1.0, 2.0]})
        X32 = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    """)
    ok_cell(ipython, """
        %%ship bounds --sample frame --no-verify
        def predict(frame):
            return (frame["floor"].astype(float) + frame["port"] + frame["temp.c"] + frame["amount"]).to_numpy()
    """)
    ok_cell(ipython, """
        %%ship narrow --sample X32 --no-verify
        def predict(x):
            return x.sum(axis=1)
    """)
    service = serve(Path("services/bounds").resolve())
    good = {"floor": 3, "port": 8080, "temp.c": 19.5, "amount": 3.0}
    assert service.post("/predict", {"instances": [good]}).status_code == 200
    for field, value in (("floor", 300), ("port", -1), ("port", 70000), ("temp.c", 1e300)):
        response = service.post("/predict", {"instances": [{**good, field: value}]})
        assert response.status_code == 422, (field, value, response.text)
        path = 'instances[0]["temp.c"]' if field == "temp.c" else f"instances[0].{field}"  # not a plain word: quoted
        assert [p["field"] for p in response.json()["detail"]] == [path], response.text
        assert "model_error" not in response.text
    for literal in (b"NaN", b"Infinity", b"1e400"):  # pydantic's JSON reader would take them as floats
        body = b'{"instances": [{"floor": 3, "port": 80, "temp.c": 1.0, "amount": ' + literal + b"}]}"
        response = httpx.post(f"{service.url}/predict", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422 and "instances[0].amount" in response.text, (literal, response.text)
    assert service.post("/predict", {"instances": [{**good, "temp.c": 3.4028235e38}]}).status_code == 200  # float32's max
    narrow = serve(Path("services/narrow").resolve())
    assert narrow.post("/predict", {"instances": [[1.0, 2.0]]}).json()["predictions"] == [3.0]
    assert narrow.post("/predict", {"instances": [[3.4028235e38, 0.0]]}).status_code == 200
    response = narrow.post("/predict", {"instances": [[1e300, 2.0]]})  # the numbers-only fast path too
    assert response.status_code == 422 and "instances[0][0]" in response.text, response.text
