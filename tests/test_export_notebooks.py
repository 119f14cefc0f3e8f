"""The user's story end to end: a notebook, a ship cell, `mlship export`, a verified project, a live service.

Each notebook runs for real in a fresh kernel (nbclient, through the CLI), the export verifies the
project in a clean environment (reused across runs by its requirements' hash), and the generated
service is started with uvicorn and asked about rows the notebook never showed it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from support.notebooks import mlship, write_notebook

HOLDOUT = """
import json
holdout = {HOLDOUT_EXPR}
with open("expected.json", "w") as fh:
    json.dump({{"instances": {INSTANCES}, "predictions": {PREDICTIONS}}}, fh, default=float)
"""


def export(tmp_path: Path, cells: list[str]) -> Path:
    notebook = write_notebook(tmp_path / "model.ipynb", ["%load_ext jupyter_mlship", *cells])
    result = mlship("export", str(notebook), "--out", str(tmp_path / "services"), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "without encryption" not in result.stderr  # the headless kernel talks over local sockets
    # The person at the shell sees each step with its timing as it happens.
    assert "[mlship] capture: done (" in result.stderr and "[mlship] verify:tests: done (" in result.stderr
    return tmp_path / "services"


def close(a, b) -> bool:
    if isinstance(a, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def check_service(project: Path, serve, expected_file: Path) -> dict:
    expected = json.loads(expected_file.read_text())
    service = serve(project)
    same_id = {"X-Request-ID": "same-request"}  # the body carries the request id
    response = service.post("/predict", {"instances": expected["instances"]}, same_id)
    assert response.status_code == 200, response.text
    body = response.json()
    assert close(body["predictions"], expected["predictions"]), (body["predictions"], expected["predictions"])
    assert body["model"]["name"] == project.name
    assert service.post(f"/v1/models/{project.name}:predict", {"instances": expected["instances"]}, same_id).json() == body
    return body


def common_project_checks(project: Path) -> dict:
    for path in ["README.md", "REVIEW.md", "ship.json", "requirements.txt", "Dockerfile", ".dockerignore",
                 "app/main.py", "app/schema.py", "app/features.py", "model/manifest.json", ".github/workflows/ci.yml"]:
        assert (project / path).is_file(), path
    assert list((project / "tests").glob("test_*.py"))
    # Pins only, but for the index of a torch build from PyTorch's own index (+cpu) and its comment.
    lines = [l for l in (project / "requirements.txt").read_text().splitlines()
             if l.strip() and not l.startswith(("# torch's +", "--extra-index-url https://download.pytorch.org/"))]
    assert lines and all("==" in line for line in lines)
    names = {line.split("==")[0].lower() for line in lines}
    assert not names & {"ipython", "ipykernel", "jupyterlab", "jupyter-mlship", "matplotlib", "notebook"}
    review = (project / "REVIEW.md").read_text()
    assert "## Verification" in review and "passed" in review
    assert "jupyter_mlship" not in (project / "app" / "main.py").read_text()
    manifest = json.loads((project / "model" / "manifest.json").read_text())
    return {"manifest": manifest, "requirements": names, "features": (project / "app/features.py").read_text(),
            "spec": json.loads((project / "ship.json").read_text())}


def test_sklearn_pipeline_with_feature_function_and_missing_values(tmp_path, serve):
    services = export(tmp_path, [
        """
        import numpy as np
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler
        """,
        """
        GITHUB_TOKEN = "ghp_0123456789abcdefghijklmnopqrstuvwxyzAB"  # used nowhere near the model
        rng = np.random.default_rng(7)
        n = 400
        df = pd.DataFrame({
            "customer age": rng.integers(18, 80, n),  # not a plain word: quoted in error paths
            "income": rng.normal(50_000, 15_000, n),
            "plan": rng.choice(["basic", "pro", "team"], n),
        })
        df.loc[df.index % 13 == 0, "income"] = np.nan
        churned = ((df["customer age"] < 35) & (df["plan"] == "basic")).astype(int)
        """,
        """
        INCOME_UNIT = 1000.0

        def add_features(frame):
            out = frame.copy()
            out["income_k"] = out["income"] / INCOME_UNIT
            out["young"] = (out["customer age"] < 30).astype(int)
            return out.drop(columns=["income"])
        """,
        """
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        prep = ColumnTransformer([
            ("num", numeric, ["customer age", "income_k", "young"]),
            ("cat", OneHotEncoder(handle_unknown="ignore"), ["plan"]),
        ])
        model = Pipeline([("prep", prep), ("clf", LogisticRegression(max_iter=500))])
        model.fit(add_features(df), churned)
        """,
        """
        %%ship churn --sample df.head(25) --version 3
        def predict(frame):
            return model.predict_proba(add_features(frame))[:, 1]
        """,
        HOLDOUT.format(
            HOLDOUT_EXPR="df.iloc[300:320].copy()",
            INSTANCES="json.loads(holdout.to_json(orient='records'))",
            PREDICTIONS="predict(holdout).tolist()",
        ),
    ])
    project = services / "churn"
    facts = common_project_checks(project)
    assert "def add_features" in facts["features"] and "INCOME_UNIT = 1000.0" in facts["features"]
    assert "GITHUB_TOKEN" not in facts["features"] and "ghp_" not in (project / "ship.json").read_text()
    assert "rng" not in facts["features"] and "df =" not in facts["features"]
    assert {"scikit-learn", "pandas", "numpy"} <= facts["requirements"]
    assert facts["manifest"]["artifacts"][0]["format"] == "skops"
    columns = {c["name"]: c for c in facts["spec"]["input"]["columns"]}
    assert list(columns) == ["customer age", "income", "plan"]
    assert columns["income"]["nullable"] is True
    assert columns["customer age"]["nullable"] is True  # found by trying the pipeline (median imputer) with it missing
    body = check_service(project, serve, tmp_path / "expected.json")
    assert body["model"]["version"] == "3"


def test_xgboost_on_an_array_through_the_line_magic(tmp_path, serve):
    pytest.importorskip("xgboost")
    services = export(tmp_path, [
        """
        import numpy as np
        import xgboost as xgb
        rng = np.random.default_rng(1)
        X = rng.normal(size=(300, 6)).astype("float32")
        X[::11, 2] = np.nan
        y = (X[:, 0] + np.nan_to_num(X[:, 2]) > 0).astype(int)
        clf = xgb.XGBClassifier(n_estimators=20, max_depth=3, tree_method="hist").fit(X, y)
        """,
        "%ship boost --model clf --sample X[:10] --method predict_proba",
        HOLDOUT.format(HOLDOUT_EXPR="X[200:215]",
                       INSTANCES="[[None if v != v else float(v) for v in row] for row in holdout]",
                       PREDICTIONS="clf.predict_proba(holdout).tolist()"),
    ])
    project = services / "boost"
    facts = common_project_checks(project)
    assert facts["manifest"]["artifacts"][0]["format"] == "xgboost-json"
    # A CPU model: the CPU-only build of the same release, without the CUDA library xgboost's wheel needs.
    assert "xgboost-cpu" in facts["requirements"] and "nvidia-nccl-cu12" not in facts["requirements"]
    assert facts["spec"]["input"]["kind"] == "ndarray" and facts["spec"]["input"]["width"] == 6
    assert facts["spec"]["input"]["nullable"] is True
    check_service(project, serve, tmp_path / "expected.json")


def test_text_pipeline_whose_vectorizer_uses_a_notebook_function(tmp_path, serve):
    services = export(tmp_path, [
        """
        import re
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        URL = re.compile(r"https?://\\S+")
        """,
        """
        def clean_text(text):
            return URL.sub(" link ", text.lower())
        """,
        """
        texts = ["Great product http://x.io", "awful, broke in a day", "love it", "terrible support",
                 "works great", "never again http://y.io"] * 10
        labels = [1, 0, 1, 0, 1, 0] * 10
        sentiment = make_pipeline(TfidfVectorizer(preprocessor=clean_text), LogisticRegression()).fit(texts, labels)
        """,
        """
        %%ship sentiment --sample texts[:6]
        def predict(batch):
            return sentiment.predict(batch)
        """,
        HOLDOUT.format(HOLDOUT_EXPR="['GREAT support http://z.io', 'it broke', 'never seen this']",
                       INSTANCES="holdout", PREDICTIONS="[int(v) for v in predict(holdout)]"),
    ])
    project = services / "sentiment"
    facts = common_project_checks(project)
    assert "def clean_text" in facts["features"] and "URL = re.compile(" in facts["features"]
    assert facts["spec"]["input"]["kind"] == "strings"
    assert facts["manifest"]["artifacts"][0]["format"] == "skops"  # clean_text saved as app.features.clean_text
    check_service(project, serve, tmp_path / "expected.json")


def test_torch_module_defined_in_the_notebook(tmp_path, serve):
    pytest.importorskip("torch")
    services = export(tmp_path, [
        """
        import numpy as np
        import torch
        from torch import nn
        torch.manual_seed(0)
        """,
        """
        class TinyNet(nn.Module):
            def __init__(self, n_in, hidden=8):
                super().__init__()
                self.n_in, self.hidden = n_in, hidden
                self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, 2))

            def forward(self, x):
                return torch.softmax(self.body(x), dim=-1)
        """,
        """
        net = TinyNet(4, hidden=16).eval()
        X = np.random.default_rng(2).normal(size=(50, 4)).astype("float32")
        """,
        """
        %%ship tiny --sample X[:8]
        def predict(batch):
            with torch.no_grad():
                return net(torch.from_numpy(batch)).numpy()
        """,
        HOLDOUT.format(HOLDOUT_EXPR="X[30:40]", INSTANCES="holdout.tolist()", PREDICTIONS="predict(holdout).tolist()"),
    ])
    project = services / "tiny"
    facts = common_project_checks(project)
    artifact = facts["manifest"]["artifacts"][0]
    assert artifact["format"] == "torch-state-dict" and artifact["loader"]["init_kwargs"] == {"n_in": 4, "hidden": 16}
    assert "class TinyNet(nn.Module)" in facts["features"]
    assert any(r.startswith("torch") for r in facts["requirements"])
    # The receiving engineer's CI and image build find the pinned local build (+cpu) on PyTorch's own index.
    torch = next(r for r in facts["spec"]["requirements"] if r["name"] == "torch")
    if torch["version"].endswith("+cpu"):  # this machine's kernel runs torch's CPU build
        assert "--extra-index-url https://download.pytorch.org/whl/cpu\n" in (project / "requirements.txt").read_text()
    check_service(project, serve, tmp_path / "expected.json")


def test_headless_failure_names_the_cell_and_leaves_nothing(tmp_path):
    notebook = write_notebook(tmp_path / "broken.ipynb", [
        "%load_ext jupyter_mlship",
        "import numpy as np\nfrom sklearn.linear_model import LinearRegression\nX = np.ones((5, 2))\nreg = LinearRegression().fit(X, [1, 2, 3, 4, 5])",
        "%%ship broken --sample X\ndef predict(x):\n    return reg.predict(x[:, :1])",
    ])
    result = mlship("export", str(notebook), "--out", str(tmp_path / "services"), cwd=tmp_path)
    assert result.returncode == 1
    assert "cell 3" in result.stderr and "raised ValueError on the sample" in result.stderr
    # No "[IPKernelApp] WARNING | Kernel is running over TCP without encryption": a local transport.
    assert "IPKernelApp" not in result.stderr and "without encryption" not in result.stderr, result.stderr
    assert not (tmp_path / "services").exists() or not any((tmp_path / "services").iterdir())


def test_cli_rejects_a_broken_notebook_file(tmp_path):
    bad = tmp_path / "bad.ipynb"
    bad.write_text("{not json")
    result = mlship("export", str(bad), "--out", str(tmp_path / "out"))
    assert result.returncode == 1 and "is not a valid notebook" in result.stderr
