"""Property tests of generated services with Schemathesis (issue 12.1), one per sample kind.

A notebook model of each kind is exported (--no-verify: what is tested here is the live service), run
with uvicorn, and fuzzed from its own /openapi.json with valid and invalid requests. Three checks must
find nothing: no 5xx (input the model cannot take is a 422 naming it), every response matches the
documented schema, and every invalid request is refused with a 4xx.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import negative_data_rejection, not_a_server_error, response_schema_conformance

from support.notebooks import ok_cell

CHECKS = [not_a_server_error, response_schema_conformance, negative_data_rejection]
EXAMPLES = 40  # per operation and mode: a lean run that still sends huge, tiny, empty and wrong values

# Each kind: notebook cells that train, then the %%ship cell. The models are chosen so that values a
# fuzzer sends first (1e308, -1e308, long strings) make them fail or overflow.
KINDS = {
    "dataframe": ("""
        import numpy as np
        import pandas as pd
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        rng = np.random.default_rng(0)
        df = pd.DataFrame({"tenure": rng.uniform(1, 72, 80), "monthly": rng.uniform(10, 120, 80),
                           "plan": rng.choice(["basic", "pro"], 80), "age": rng.integers(18, 90, 80)})
        df.loc[3, "monthly"] = np.nan
        def add_features(frame):
            frame = frame.copy()
            frame["total"] = frame["tenure"] * frame["monthly"].fillna(0)
            frame["pro"] = (frame["plan"] == "pro").astype(int)
            return frame[["tenure", "total", "pro", "age"]]
        y = (df["tenure"] > 30).astype(int)
        clf = make_pipeline(StandardScaler(), LogisticRegression()).fit(add_features(df), y)
    """, """
        %%ship kind-dataframe --sample df.head(8) --no-verify
        def predict(frame):
            return clf.predict_proba(add_features(frame))[:, 1]
    """),
    "ndarray": ("""
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        X = np.random.default_rng(0).normal(size=(60, 3))
        clf = LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))
    """, "%ship kind-ndarray --model clf --sample X[:5] --method predict_proba --no-verify"),
    "strings": ("""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        texts = ["good film", "bad film", "great acting", "awful plot", "fine", "terrible"] * 3
        labels = [1, 0, 1, 0, 1, 0] * 3
        clf = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, labels)
    """, "%ship kind-strings --model clf --sample texts[:4] --no-verify"),
    "records": ("""
        import math
        records = [{"x": float(i), "label": "a" if i % 2 else "b", "n": i} for i in range(6)]
    """, """
        %%ship kind-records --sample records --no-verify
        def predict(rows):
            return [math.exp(r["x"]) * r["n"] + len(r["label"]) for r in rows]
    """),
    "scalars": ("""
        import numpy as np
        values = np.linspace(0.5, 3.0, 6)
    """, """
        %%ship kind-scalars --sample values --no-verify
        def predict(x):
            return np.exp(x) / (1 + np.log(np.abs(x)))
    """),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_generated_service_survives_schemathesis(ipython, serve, kind):
    train, ship_cell = KINDS[kind]
    ok_cell(ipython, train)
    ok_cell(ipython, ship_cell)
    project = Path(f"services/kind-{kind}").resolve()
    assert f'"kind": "{kind}"' in (project / "ship.json").read_text()
    service = serve(project)
    schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")

    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/predict", "/v1/models/{name}:predict"}
    for operation in operations:
        # GET routes take no input: there is no invalid request of them to generate.
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if operation.method.upper() == "POST" else [])
        for mode in modes:
            fuzz(operation, mode, failures)
    assert not failures, f"{len(failures)} Schemathesis failures:\n\n" + "\n\n".join(failures[:8])


def fuzz(operation, mode: GenerationMode, failures: list[str]) -> None:
    """EXAMPLES generated requests of one operation in one mode; failures collected, not raised."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case) -> None:
        try:
            case.call_and_validate(checks=CHECKS, timeout=30)
        except Exception as exc:  # collect: one report naming every failing operation and check
            failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {str(exc).strip()[:600]}")

    run()
