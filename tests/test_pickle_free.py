"""Pipelines that hold the notebook's own functions are saved with skops, not pickle.

skops stores a function by module and name; the notebook's functions are written as
`app.features.<name>` (where the service defines them) and the service trusts exactly those names.
Real IPython shell, real export with verification (the project's golden test in a clean environment).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path


from support.notebooks import ok_cell

RATIO_PIPELINE = """
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

rng = np.random.default_rng(0)
df = pd.DataFrame({"a": rng.uniform(1, 5, 80), "b": rng.uniform(1, 5, 80)})
y = (df["a"] > df["b"]).astype(int)

def add_ratio(frame):
    out = frame.copy()
    out["ratio"] = out["a"] / out["b"]
    return out

def unused_helper(frame):
    return frame

model = make_pipeline(FunctionTransformer(add_ratio), StandardScaler(), LogisticRegression()).fit(df, y)
"""

TEXT_PIPELINE = """
import re
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

URL = re.compile(r"https?://\\S+")

def clean_text(text):
    return URL.sub(" link ", text.lower())

texts = ["Great product http://x.io", "awful, broke in a day", "love it", "terrible support"] * 10
labels = [1, 0, 1, 0] * 10
sentiment = make_pipeline(TfidfVectorizer(preprocessor=clean_text), LogisticRegression()).fit(texts, labels)
"""


def exported(ipython, setup: str, ship_line: str, name: str) -> tuple[Path, dict]:
    ok_cell(ipython, setup)
    ok_cell(ipython, ship_line)
    project = Path("services") / name
    review = (project / "REVIEW.md").read_text()
    assert "## Verification" in review
    manifest = json.loads((project / "model" / "manifest.json").read_text())
    (artifact,) = manifest["artifacts"]
    return project, artifact


def test_function_transformer_with_a_notebook_function_is_saved_with_skops(ipython, capsys):
    project, artifact = exported(ipython, RATIO_PIPELINE, "%ship ratio --model model --sample df.head(8) --method predict_proba", "ratio")
    out = capsys.readouterr().out
    assert "exported to" in out and "tests: " in out and ", 0 failed" in out, out[-2000:]  # golden test passed
    assert artifact["format"] == "skops"
    assert artifact["loader"]["trusted_types"] == ["app.features.add_ratio"]  # exactly that name, nothing else
    import skops.io

    assert skops.io.get_untrusted_types(file=project / "model" / artifact["file"]) == ["app.features.add_ratio"]
    assert "pickle (fallback)" not in (project / "REVIEW.md").read_text()
    assert ipython.user_ns["add_ratio"].__module__ == "__main__"  # the notebook's function is left as it was


def test_vectorizer_preprocessor_from_the_notebook_is_saved_with_skops(ipython, capsys):
    _project, artifact = exported(ipython, TEXT_PIPELINE, "%ship sentiment --model sentiment --sample texts[:4]", "sentiment")
    out = capsys.readouterr().out
    assert "tests: " in out and ", 0 failed" in out, out[-2000:]
    assert artifact["format"] == "skops"
    assert artifact["loader"]["trusted_types"] == ["app.features.clean_text"]


def test_a_function_not_in_the_trusted_list_is_refused_at_load(ipython):
    """A skops file that names another notebook function than the export trusted does not load."""
    project, artifact = exported(ipython, RATIO_PIPELINE,
                                 "%ship ratio --model model --sample df.head(8) --no-verify", "ratio")
    # The same pipeline calling another function, defined in app/features.py too: still not trusted.
    ok_cell(ipython, "model.steps[0][1].func = unused_helper")
    from jupyter_mlship.capture.artifacts import skops_dumps

    data = skops_dumps(ipython.user_ns["model"])
    path = project / "model" / artifact["file"]
    path.write_bytes(data)
    manifest_path = project / "model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"][0]["sha256"] = hashlib.sha256(data).hexdigest()  # the checksum alone would stop it
    manifest_path.write_text(json.dumps(manifest))
    features = project / "app" / "features.py"
    features.write_text(features.read_text() + "\n\ndef unused_helper(frame):\n    return frame\n")
    result = subprocess.run([sys.executable, "-c", "import app.features"], cwd=project, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0
    assert f"model/{artifact['file']}" in result.stderr and "app.features.unused_helper" in result.stderr, result.stderr


LOAD_AND_REPORT = """
import sys
import app.features as features
walked = ("sklearn.neural_network", "sklearn.gaussian_process", "sklearn.semi_supervised", "sklearn.mixture")
print(type(features.model).__name__, any(module in sys.modules for module in walked))
"""


def test_the_service_trusts_the_files_estimators_by_name_and_skips_skops_estimator_walk(ipython):
    """The export names the scikit-learn estimators in the file; the service trusts exactly those and imports
    skops without importing every scikit-learn module (its cold start). One left out of the list: refused."""
    project, artifact = exported(ipython, RATIO_PIPELINE,
                                 "%ship ratio --model model --sample df.head(8) --no-verify", "ratio")
    estimators = artifact["loader"]["estimator_types"]
    assert {"sklearn.pipeline.Pipeline", "sklearn.preprocessing._data.StandardScaler",
            "sklearn.linear_model._logistic.LogisticRegression"} <= set(estimators), estimators
    assert not any(name.startswith("app.") for name in estimators)  # the notebook's own stay in trusted_types
    loaded = subprocess.run([sys.executable, "-c", LOAD_AND_REPORT], cwd=project, capture_output=True, text=True,
                            timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    # skops' walk imports these modules; neither the pipeline nor skops itself needs them.
    assert loaded.stdout.split() == ["Pipeline", "False"], loaded.stdout

    manifest_path = project / "model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"][0]["loader"]["estimator_types"].remove("sklearn.linear_model._logistic.LogisticRegression")
    manifest_path.write_text(json.dumps(manifest))
    refused = subprocess.run([sys.executable, "-c", LOAD_AND_REPORT], cwd=project, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode != 0
    assert f"model/{artifact['file']}" in refused.stderr, refused.stderr[-2000:]
    assert "sklearn.linear_model._logistic.LogisticRegression" in refused.stderr, refused.stderr[-2000:]


def test_skops_bytes_depend_only_on_the_model():
    """Equal models saved as separate objects give the same bytes (skops names files and shared objects
    after memory addresses, stamps entries with the time, and a tree's node records carry uninitialised
    padding), and the bytes load back to the same model."""
    import copy
    import zipfile
    from io import BytesIO

    import numpy as np
    import skops.io
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    from jupyter_mlship.capture.artifacts import ZIP_EPOCH, skops_dumps

    rng = np.random.default_rng(0)
    X = np.column_stack([rng.normal(size=300), rng.integers(0, 3, 300)])
    y = (X[:, 0] + rng.normal(size=300) > 0).astype(int)
    for model in (RandomForestClassifier(n_estimators=3, random_state=0),
                  make_pipeline(make_column_transformer((StandardScaler(), [0]), (OneHotEncoder(), [1])),
                                HistGradientBoostingClassifier(max_iter=10))):
        model.fit(X, y)
        saved = [skops_dumps(m) for m in (model, copy.deepcopy(model), copy.deepcopy(model))]
        assert saved[0] == saved[1] == saved[2], type(model).__name__
        with zipfile.ZipFile(BytesIO(saved[0])) as archive:
            assert {info.date_time for info in archive.infolist()} == {ZIP_EPOCH}
        loaded = skops.io.loads(saved[1], trusted=skops.io.get_untrusted_types(data=saved[1]))
        assert (loaded.predict_proba(X) == model.predict_proba(X)).all()
