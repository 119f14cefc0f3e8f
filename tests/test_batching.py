"""Micro-batching and failure isolation in the generated service (issues 11 and 12.1).

A notebook's DataFrame pipeline with a feature function is exported; the live service (real uvicorn)
gets many concurrent requests, one of them with values the model cannot take. The good ones get the
notebook's own predictions, the bad one a 422 naming its instance and the model's error, and the
service made fewer model calls than it got requests.
"""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from support.notebooks import ok_cell

PIPELINE = """
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"tenure": rng.integers(1, 72, 200).astype(float),
                       "monthly": rng.uniform(10, 120, 200),
                       "plan": rng.choice(["basic", "pro"], 200)})
    y = (df["monthly"] * df["tenure"] > 2500).astype(int)

    def add_features(frame):
        frame = frame.copy()
        frame["total"] = frame["tenure"] * frame["monthly"]  # overflows to inf on huge inputs
        frame["pro"] = (frame["plan"] == "pro").astype(int)
        return frame[["tenure", "monthly", "total", "pro"]]

    clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(add_features(df), y)
"""


def export_pipeline(ipython) -> Path:
    ok_cell(ipython, PIPELINE)
    ok_cell(ipython, """
        %%ship churn --sample df.head(12) --no-verify
        def predict(frame):
            return clf.predict_proba(add_features(frame))[:, 1]
    """)
    return Path("services/churn").resolve()


def metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{re.escape(name)}{re.escape(labels)} (\S+)$" if labels else rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$"
    values = [float(v) for v in re.findall(pattern, text, re.M)]
    return sum(values)


def test_rowwise_pipeline_is_batched_and_one_bad_request_fails_alone(ipython, serve):
    project = export_pipeline(ipython)
    ship = json.loads((project / "ship.json").read_text())
    assert ship["batching"]["enabled"] is True, ship["batching"]
    assert "row-wise" in ship["batching"]["reason"]
    review = (project / "REVIEW.md").read_text()
    assert "## Micro-batching" in review and "| yes |" in review

    rows = ipython.user_ns["df"].iloc[20:84]
    expected = ipython.user_ns["clf"].predict_proba(ipython.user_ns["add_features"](rows))[:, 1].tolist()
    instances = json.loads(rows.to_json(orient="records"))
    service = serve(project)
    bad_index = 17
    bodies = [{"instances": [instance]} for instance in instances]
    bodies[bad_index] = {"instances": [instances[0], {"tenure": 1e292, "monthly": -3.6e307, "plan": "pro"}]}

    def ask(pair):
        index, body = pair
        headers = {"X-Request-ID": f"req-{index}"}
        return httpx.post(f"{service.url}/predict", json=body, headers=headers, timeout=60)

    with ThreadPoolExecutor(32) as pool:
        responses = list(pool.map(ask, enumerate(bodies)))

    for index, response in enumerate(responses):
        assert response.headers["x-request-id"] == f"req-{index}"
        if index == bad_index:
            continue
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["request_id"] == f"req-{index}"
        assert body["predictions"] == [expected[index]] or abs(body["predictions"][0] - expected[index]) < 1e-9

    bad = responses[bad_index]
    assert bad.status_code == 422, bad.text
    detail = bad.json()
    assert detail["request_id"] == f"req-{bad_index}"
    assert detail["detail"][0]["field"] == "instances[1]"  # the huge row, not the good one before it
    assert "infinity" in detail["message"] and "ValueError" in detail["message"]

    # The same on the KServe address; a request without an id gets a fresh one, in header and body.
    v1 = httpx.post(f"{service.url}/v1/models/churn:predict", json=bodies[bad_index], timeout=30)
    assert v1.status_code == 422 and v1.json()["detail"][0]["field"] == "instances[1]"
    assert re.fullmatch(r"[0-9a-f]{32}", v1.headers["x-request-id"])
    assert v1.json()["request_id"] == v1.headers["x-request-id"]

    text = httpx.get(f"{service.url}/metrics").text
    assert metric(text, "mlship_model_rejections_total", '{route="/predict"}') == 1
    assert metric(text, "mlship_model_rejections_total", '{route="/v1/models/{name}:predict"}') == 1
    calls = metric(text, "mlship_batch_requests_count")
    coalesced = metric(text, "mlship_batch_requests_sum")
    assert coalesced >= len(bodies) and calls < coalesced, (calls, coalesced)  # several requests per call

    service.stop()
    log = service.output()
    assert "req-17" in log and "instances[1]: the model cannot take this input" in log


def test_batching_can_be_turned_off_in_ship_json_and_healthz_answers_during_a_slow_call(ipython, serve):
    ok_cell(ipython, """
        import time
        import numpy as np
        from sklearn.linear_model import LinearRegression
        X = np.random.default_rng(0).normal(size=(30, 2))
        reg = LinearRegression().fit(X, X[:, 0])
    """)
    ok_cell(ipython, """
        %%ship slow --sample X[:6] --no-verify
        def predict(x):
            if (x[:, 0] > 100).any():  # a slow request
                time.sleep(3)
            return reg.predict(x)
    """)
    project = Path("services/slow").resolve()
    ship = json.loads((project / "ship.json").read_text())
    assert ship["batching"]["enabled"] is True
    ship["batching"]["enabled"] = False
    (project / "ship.json").write_text(json.dumps(ship))
    service = serve(project)

    done = threading.Event()
    answer = {}

    def slow() -> None:
        answer["response"] = httpx.post(f"{service.url}/predict", json={"instances": [[500.0, 1.0]]}, timeout=30)
        done.set()

    thread = threading.Thread(target=slow)
    thread.start()
    time.sleep(0.5)
    assert httpx.get(f"{service.url}/healthz", timeout=10).status_code == 200
    assert not done.is_set(), "the slow request should still be running while /healthz answered"
    thread.join(30)
    assert answer["response"].status_code == 200
    fast = [httpx.post(f"{service.url}/predict", json={"instances": [[0.1, 0.2]]}, timeout=30) for _ in range(3)]
    assert all(r.status_code == 200 for r in fast)
    text = httpx.get(f"{service.url}/metrics").text
    # Off: every call of the entry function holds exactly one request.
    assert metric(text, "mlship_batch_requests_count") == metric(text, "mlship_batch_requests_sum") == 4
    service.stop()
    assert "micro-batching off" in service.output()


def test_entry_function_that_is_not_rowwise_is_not_batched(ipython):
    ok_cell(ipython, """
        import numpy as np
        X = np.random.default_rng(1).normal(size=(10, 3))
    """)
    ok_cell(ipython, """
        %%ship centred --sample X --no-verify
        def predict(x):
            return (x - x.mean(axis=0)).sum(axis=1)  # depends on the other rows of the call
    """)
    project = Path("services/centred").resolve()
    batching = json.loads((project / "ship.json").read_text())["batching"]
    assert batching["enabled"] is False and batching["reason"].startswith("not row-wise")
    review = (project / "REVIEW.md").read_text()
    assert "| no | not row-wise" in review
    assert re.search(r"^\| no \| not row-wise.* \| — \| — \|$", review, re.M)  # no batch size or wait when off


def test_single_row_sample_and_lists_of_strings(ipython):
    ok_cell(ipython, """
        import numpy as np
        X = np.random.default_rng(1).normal(size=(10, 3))
        texts = ["good film", "bad", "fine acting", "awful plot"]
    """)
    ok_cell(ipython, """
        %%ship onerow --sample X[:1] --no-verify
        def predict(x):
            return x.sum(axis=1)
    """)
    ok_cell(ipython, """
        %%ship lengths --sample texts --no-verify
        def predict(items):
            return [len(t) for t in items]
    """)
    onerow = json.loads(Path("services/onerow/ship.json").read_text())["batching"]
    assert onerow["enabled"] is False and "one row" in onerow["reason"]
    lengths = json.loads(Path("services/lengths/ship.json").read_text())["batching"]
    assert lengths["enabled"] is True


def test_dependences_the_sample_alone_hides_leave_batching_off(ipython):
    """The proof also runs on variants of the sample: with nulls where the schema allows them (a null in
    one request would turn another request's integer column into floats), with values shared by its rows
    (a per-key aggregate over a sample of unique keys), with texts of other lengths (padding to the
    call's longest text). Each of these entry functions is row-wise on its sample and not in service."""
    ok_cell(ipython, """
        import numpy as np
        import pandas as pd
        from sklearn.linear_model import LinearRegression
        rng = np.random.default_rng(3)
        sales = pd.DataFrame({"store_id": rng.choice([1042, 2001], 40), "units": rng.integers(0, 50, 40).astype(float)})
        raw = sales.astype({"store_id": "float"})
        raw.loc[:3, "store_id"] = np.nan
        BASE = {"1042": 100.0, "2001": 300.0}  # keys as text: str(1042.0) is "1042.0"
        def sales_features(frame):
            return pd.DataFrame({"units": frame["units"], "base": frame["store_id"].astype(str).map(BASE).fillna(0.0)})
        reg = LinearRegression().fit(sales_features(sales), sales.units + sales.store_id.map({1042: 100.0, 2001: 300.0}))
        tx = pd.DataFrame({"user": np.arange(30), "amount": rng.lognormal(3, 1, 30)})
        def amount_ratio(frame):
            return (frame["amount"] / frame.groupby("user")["amount"].transform("mean")).to_numpy()
        texts = ["good film", "bad plot", "fine cast", "dull story", "great show", "weak end"]
        def padded_mean(items):
            ids = [[len(word) for word in text.split()] for text in items]
            width = max(len(x) for x in ids)
            return np.array([x + [0] * (width - len(x)) for x in ids], dtype=float).mean(axis=1)
    """)
    ok_cell(ipython, """
        %%ship storesales --sample sales.head(12) --reference raw --no-verify
        def predict(frame):
            return reg.predict(sales_features(frame))
    """)
    ok_cell(ipython, """
        %%ship ratio --sample tx --no-verify
        def predict(frame):
            return amount_ratio(frame)
    """)
    ok_cell(ipython, """
        %%ship padded --sample texts --no-verify
        def predict(items):
            return padded_mean(items)
    """)
    reasons = {name: json.loads(Path(f"services/{name}/ship.json").read_text())["batching"]
               for name in ("storesales", "ratio", "padded")}
    assert all(not b["enabled"] for b in reasons.values()), reasons
    assert reasons["storesales"]["reason"].startswith("not row-wise: the sample with nulls in its nullable fields")
    assert reasons["ratio"]["reason"].startswith("not row-wise: the sample with every row taking the first row's field user")
    assert reasons["padded"]["reason"].startswith("not row-wise: the sample with texts of other lengths")
    review = Path("services/storesales/REVIEW.md").read_text()
    assert "not row-wise: the sample with nulls" in review
    assert "| `store_id` | int64 | integer | yes, as NaN; may be left out |" in review  # a DataFrame's null


def test_the_proof_takes_the_rows_with_nulls_of_a_long_sample():
    from jupyter_mlship.capture.batching import MAX_NULL_ROWS, MAX_PROOF_ROWS, proof_rows

    rows = [{"income": None if i >= 150 else float(i), "debt": 0.5} for i in range(200)]
    chosen = proof_rows(rows)
    assert len(chosen) == MAX_PROOF_ROWS and all(rows[i] in chosen for i in range(150, 150 + MAX_NULL_ROWS))
    assert chosen == sorted(chosen, key=rows.index)  # in the sample's order
    assert proof_rows(rows[:20]) == rows[:20]
    absent = [{"a": 1.0, "b": 2.0} for _ in range(100)] + [{"a": 1.0}]  # a field left out is a null too
    assert absent[-1] in proof_rows(absent)


def test_a_classifiers_classes_name_the_columns_of_its_probabilities(ipython):
    """The output schema records which class each probability column is (the monitor scores outcomes
    named by class with it); REVIEW.md shows them."""
    ok_cell(ipython, """
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        X = np.random.default_rng(2).normal(size=(40, 2))
        answers = np.where(X[:, 0] > 0, "yes", "no")
        clf = LogisticRegression().fit(X, answers)
    """)
    ok_cell(ipython, "%ship answers --model clf --sample X[:6] --method predict_proba --no-verify")
    ok_cell(ipython, """
        %%ship scores --sample X[:6] --no-verify
        def predict(x):
            return clf.predict_proba(x) * 2  # not probabilities: no classes
    """)
    output = json.loads(Path("services/answers/ship.json").read_text())["output"]
    assert output["labels"] == ["no", "yes"]
    assert "2 (classes: no, yes)" in Path("services/answers/REVIEW.md").read_text()
    assert json.loads(Path("services/scores/ship.json").read_text())["output"]["labels"] is None



def test_the_proof_allows_the_models_own_float_noise_at_another_batch_size():
    """A float32 network's outputs move by about 1e-6 relative when the call holds more rows; the proof
    measures that on the sample twice over and compares within four times it, at most 1e-5."""
    from jupyter_mlship.capture.batching import MAX_NOISE_TOLERANCE, _tolerance

    rows = [[float(i)] for i in range(1, 9)]

    def noisy(scale):
        return lambda batch: [r[0] * (1 + scale * (len(batch) > len(rows))) for r in batch]

    whole = noisy(0)(rows)
    assert _tolerance(noisy(0), rows, whole, 1e-6) == 1e-6  # exact at any size: the golden tests' tolerance
    assert _tolerance(noisy(1e-6), rows, whole, 1e-6) == pytest.approx(4e-6, rel=1e-3)
    assert _tolerance(noisy(0.1), rows, whole, 1e-6) == MAX_NOISE_TOLERANCE  # not noise: capped
