"""A trained model exported once per test module, and request streams drawn like its training data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from support.notebooks import ok_cell

TRAIN = """
import numpy as np, pandas as pd
from sklearn.linear_model import LogisticRegression
rng = np.random.default_rng(0)
n = 3000
X = pd.DataFrame({"a": rng.normal(0, 1, n), "b": rng.normal(5, 2, n), "c": rng.uniform(0, 10, n),
                  "d": rng.choice(["red", "green", "blue"], n)})
y = (X.a + 0.3 * X.b + rng.normal(0, 1, n) > 1.5).astype(int)
model = LogisticRegression().fit(X[["a", "b", "c"]], y)
"""

SHIP = """%%ship demo --sample X.head(20) {reference} --out {out} --no-verify {flags}
def predict(x):
    return model.predict(x[["a", "b", "c"]])
"""

QUIET = {"UVICORN_ACCESS_LOG": "false"}  # the test does not read the service's pipe: keep it from filling


def export_demo(out: Path, flags: str = "", reference: str = "--reference X") -> Path:
    """Train in a real IPython shell and %%ship it (no verify: what is tested here is the service)."""
    from IPython.core.interactiveshell import InteractiveShell

    with pytest.MonkeyPatch.context() as patch:
        out.mkdir(parents=True, exist_ok=True)
        patch.setenv("MLSHIP_HISTORY", str(out / "history.jsonl"))
        patch.chdir(out)
        shell = InteractiveShell.instance()
        shell.reset(new_session=True)
        shell.run_cell("%load_ext jupyter_mlship", store_history=True)
        ok_cell(shell, TRAIN)
        ok_cell(shell, SHIP.format(out=out, flags=flags, reference=reference))
        shell.reset(new_session=True)
    return out / "demo"


def instances(n: int, seed: int, shift: bool = False) -> list[dict]:
    """Rows like the training data; shifted: a by +2.5 sd and b by +2 sd, c and d unchanged."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(0, 1, n), rng.normal(5, 2, n), rng.uniform(0, 10, n)
    d = rng.choice(["red", "green", "blue"], n)
    if shift:
        a, b = a + 2.5, b + 4
    return [{"a": float(a[i]), "b": float(b[i]), "c": float(c[i]), "d": str(d[i])} for i in range(n)]


def gauges(metrics_text: str, name: str) -> dict[str, float]:
    """{feature: value} of one labelled gauge in Prometheus text."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == name:
            return {s.labels["feature"]: s.value for s in family.samples}
    return {}
