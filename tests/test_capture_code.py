"""Code capture in a real IPython shell: only what the entry function reaches, as readable source."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from support.notebooks import ok_cell


def features(project: Path) -> str:
    return (project / "app" / "features.py").read_text()


def test_capture_follows_names_across_cells_and_keeps_the_live_definition(ipython):
    ok_cell(ipython, """
        import numpy as np
        import pandas as pd
        from numpy import log1p as safe_log
        from sklearn.linear_model import LinearRegression
        import functools
        LOOKUP = {"a": 1, "b": 2}
        UNUSED_FRAME = pd.DataFrame({"x": range(1000)})
        password = "correct horse battery staple 123!"
    """)
    ok_cell(ipython, """
        def scale(v):
            return v * 10
        def add_features(frame):
            return frame.assign(code=frame["cat"].map(LOOKUP), logx=safe_log(frame["x"]))
    """)
    ok_cell(ipython, """
        def scale(v):  # redefined: this one must be shipped
            return v * 100
        def traced(fn):
            @functools.wraps(fn)
            def wrapper(*args, **kwargs):
                return fn(*args, **kwargs)
            return wrapper
        frame = pd.DataFrame({"x": np.arange(1.0, 21.0), "cat": ["a", "b"] * 10})
        reg = LinearRegression().fit(add_features(frame)[["code", "logx"]], frame["x"])
        def plot_things():
            import matplotlib  # never reached from the entry function
    """)
    ok_cell(ipython, """
        %%ship reg --sample frame.head(5) --no-verify
        @traced
        def predict(frame):
            x = add_features(frame)
            return scale(reg.predict(x[["code", "logx"]]))
    """)
    source = features(Path("services/reg"))
    assert "return v * 100" in source and "return v * 10\n" not in source
    assert "from numpy import log1p as safe_log" in source and "import functools" in source
    assert "LOOKUP = {'a': 1, 'b': 2}" in source
    assert "@traced\ndef predict(frame):" in source and "def traced(fn):" in source
    for left_behind in ("UNUSED_FRAME", "password", "plot_things", "matplotlib"):
        assert left_behind not in source
    # Definitions keep the notebook's order; the entry comes last, after the artifacts.
    assert source.index("def add_features") < source.index("def scale") < source.index('reg = load_artifact("reg")')
    assert source.rstrip().endswith('return scale(reg.predict(x[["code", "logx"]]))')
    spec = json.loads(Path("services/reg/ship.json").read_text())
    cells = {c["name"]: c["cell"] for c in spec["captured"]}
    # In[1] is the fixture's %load_ext.
    assert cells["scale"] == 4 and cells["add_features"] == 3 and cells["LOOKUP"] == 2 and cells["reg"] == 4
    assert cells["predict"] == 5
    review = Path("services/reg/REVIEW.md").read_text()
    assert "| `scale` | function | In[4] |" in review and "| `reg` | artifact | In[4] |" in review


def test_custom_transformer_class_from_the_notebook_loads_in_the_service_code(ipython):
    ok_cell(ipython, """
        import numpy as np
        from sklearn.base import BaseEstimator, TransformerMixin
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        class ClipOutliers(BaseEstimator, TransformerMixin):
            def __init__(self, limit=3.0):
                self.limit = limit
            def fit(self, X, y=None):
                self.center_ = np.median(X, axis=0)
                return self
            def transform(self, X):
                return np.clip(X - self.center_, -self.limit, self.limit)

        X = np.random.default_rng(3).normal(size=(60, 3))
        y = (X[:, 1] > 0).astype(int)
        clf = make_pipeline(ClipOutliers(limit=2.0), LogisticRegression()).fit(X, y)
    """)
    ok_cell(ipython, "%ship clipper --model clf --sample X[:6] --method predict_proba --no-verify")
    project = Path("services/clipper")
    source = features(project)
    assert "class ClipOutliers(BaseEstimator, TransformerMixin):" in source
    assert "from sklearn.base import BaseEstimator" in source and "TransformerMixin" in source
    assert "def predict_proba(instances):" in source and "return clf.predict_proba(instances)" in source
    manifest = json.loads((project / "model" / "manifest.json").read_text())
    # skops names the notebook class by where the service defines it, and trusts exactly that name.
    assert manifest["artifacts"][0]["format"] == "skops"
    assert manifest["artifacts"][0]["loader"]["trusted_types"] == ["app.features.ClipOutliers"]
    assert "pickle (fallback)" not in (project / "REVIEW.md").read_text()


def test_reexport_replaces_the_project_and_a_foreign_folder_is_never_overwritten(ipython):
    ok_cell(ipython, """
        import numpy as np
        from sklearn.linear_model import LinearRegression
        X = np.arange(20.0).reshape(10, 2)
        reg = LinearRegression().fit(X, X.sum(axis=1))
    """)
    ok_cell(ipython, "%ship twice --model reg --sample X[:3] --no-verify --version 1")
    ok_cell(ipython, "%ship twice --model reg --sample X[:4] --no-verify --version 2")
    spec = json.loads(Path("services/twice/ship.json").read_text())
    assert spec["version"] == "2" and len(spec["golden"]["instances"]) == 4
    assert sorted(p.name for p in Path("services").iterdir()) == ["twice"]  # no temp or backup folders left
    Path("services/mine").mkdir()
    (Path("services/mine") / "notes.txt").write_text("keep me")
    result = ipython.run_cell("%ship mine --model reg --sample X[:3] --no-verify", store_history=True)
    assert "is not a jupyter-mlship project" in str(result.error_in_exec)
    assert (Path("services/mine") / "notes.txt").read_text() == "keep me"


def test_the_notebook_folders_own_module_is_shipped_with_the_service(ipython, serve):
    Path("textutils").mkdir()
    Path("textutils/__init__.py").write_text("from .clean import normalise\n")
    Path("textutils/clean.py").write_text("import re\n\nSPACES = re.compile(r'\\s+')\n\n"
                                          "def normalise(text):\n    return SPACES.sub(' ', text.strip().lower())\n")
    ok_cell(ipython, """
        import sys, os
        sys.path.insert(0, os.getcwd())
        from textutils import normalise
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.naive_bayes import MultinomialNB
        docs = ["Good  movie", "BAD film", "good   good", "bad bad film"] * 3
        nb = MultinomialNB().fit(CountVectorizer().fit_transform(docs), [1, 0, 1, 0] * 3)
        vec = CountVectorizer().fit(docs)
    """)
    ok_cell(ipython, """
        %%ship reviews --sample docs[:4] --no-verify
        def predict(texts):
            return nb.predict(vec.transform([normalise(t) for t in texts]))
    """)
    project = Path("services/reviews").resolve()
    assert (project / "app/local/textutils/clean.py").read_text().startswith("import re")
    assert "from textutils import normalise" in features(project)
    service = serve(project)
    response = service.post("/predict", {"instances": ["  GOOD   film ", "bad"]})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [int(v) for v in ipython.user_ns["predict"](["  GOOD   film ", "bad"])]


def test_decorated_helpers_and_defaults_that_read_model_objects_are_shipped_as_the_notebook_has_them(ipython, serve):
    ok_cell(ipython, """
        from functools import lru_cache
        import numpy as np
        import pandas as pd
        from sklearn.preprocessing import FunctionTransformer
        CUTOFF = pd.Timestamp("2024-06-30")  # not a literal: saved as a model object
        sample = pd.DataFrame({"d": ["2024-01-01", "2024-03-01", "2024-06-01"], "x": [5.0, 50.0, 12.0]})
    """)
    ok_cell(ipython, """
        def age_days(frame, cutoff=CUTOFF):  # the default is read when the def runs
            return (cutoff - pd.to_datetime(frame["d"])).dt.days

        @lru_cache(maxsize=None)
        def factor(x):
            return 2.0 if x > 10 else 1.0

        @np.vectorize
        def bucket(x):
            return 0 if x < 10 else 1

        def doubled(values):
            return np.asarray(values) * factor(3.0)

        twice = FunctionTransformer(doubled)  # a model object that refers to notebook code
    """)
    ok_cell(ipython, """
        %%ship helpers --sample sample --no-verify
        def predict(frame):
            x = frame["x"].to_numpy()
            return age_days(frame).to_numpy() + frame["x"].map(factor).to_numpy() + bucket(x) + twice.transform(x)
    """)
    project = Path("services/helpers").resolve()
    source = features(project)
    assert "@lru_cache(maxsize=None)\ndef factor(x):" in source and "@np.vectorize\ndef bucket(x):" in source
    assert "from functools import lru_cache" in source
    # CUTOFF is loaded before the def whose default reads it; twice after the function its pickle names.
    assert source.index('CUTOFF = load_artifact("CUTOFF")') < source.index("def age_days")
    assert source.index("def doubled") < source.index('twice = load_artifact("twice")')
    service = serve(project)
    rows = [{"d": "2024-02-01", "x": 3.0}, {"d": "2024-05-01", "x": 30.0}]
    response = service.post("/predict", {"instances": rows})
    assert response.status_code == 200, response.text
    frame = ipython.user_ns["pd"].DataFrame(rows)
    assert response.json()["predictions"] == ipython.user_ns["predict"](frame).tolist()


def test_a_model_object_holding_the_function_inside_a_decorator_is_refused_with_the_true_reason(ipython):
    ok_cell(ipython, """
        import numpy as np
        from sklearn.preprocessing import FunctionTransformer
        @np.vectorize
        def bucket(x):
            return 0 if x < 10 else 1
        raw = FunctionTransformer(bucket.pyfunc)
        X = np.array([[1.0], [20.0]])
    """)
    result = ipython.run_cell("""%%ship raw --sample X --no-verify
def predict(x):
    return raw.transform(x)
""")
    message = str(result.error_in_exec)
    assert "function inside the decorated `bucket`" in message and "older definition" not in message


def test_annotations_of_every_parameter_kind_and_imports_inside_bodies_are_shipped(ipython):
    Path("scoring_utils.py").write_text("def squash(v):\n    return v / (1 + abs(v))\n")
    Path("textkit").mkdir()
    Path("textkit/tokens.py").write_text("def count(v):\n    return v * 2\n")  # a namespace package: no __init__
    ok_cell(ipython, """
        import sys, os
        sys.path.insert(0, os.getcwd())
        from typing import Any, Sequence
        import numpy as np
        from textkit.tokens import count
        X = np.array([[1.0, 2.0], [3.0, 4.0]])
    """)
    ok_cell(ipython, """
        def prepare(x, /, *extra: Sequence, scale: float = 1.0, **opts: Any):
            from scoring_utils import squash   # a local module, imported when it runs
            import packaging.version            # an installed distribution, imported when it runs
            return squash(count(x)) * scale
    """)
    ok_cell(ipython, """
        %%ship bodies --sample X --no-verify
        def predict(x):
            return prepare(x).sum(axis=1)
    """)
    project = Path("services/bodies")
    source = features(project)
    assert "from typing import Any, Sequence" in source or (
        "from typing import Any" in source and "from typing import Sequence" in source)
    assert (project / "app/local/scoring_utils.py").is_file()
    assert (project / "app/local/textkit/tokens.py").is_file()
    pins = (project / "requirements.txt").read_text().lower()
    assert "packaging==" in pins


def test_functions_made_by_other_calls_and_stale_aliases_are_refused_with_the_reason(ipython):
    ok_cell(ipython, """
        import numpy as np
        X = np.array([[1.0, 2.0], [3.0, 4.0]])
        def make_clipper(lo, hi):
            def clip(x):
                return np.clip(x, lo, hi)
            return clip
        clip_first = make_clipper(-2.5, 2.5)
        def build(x):
            return x * 2
        make_X = build
    """)
    ok_cell(ipython, """
        def build(x):  # redefined after make_X was bound to the old one
            return x * 3
    """)
    closure = ipython.run_cell("%%ship c --sample X --no-verify\ndef predict(x):\n    return clip_first(x)\n")
    assert "made inside a call of another function" in str(closure.error_in_exec)
    assert "(hi, lo)" in str(closure.error_in_exec)
    stale = ipython.run_cell("%%ship s --sample X --no-verify\ndef predict(x):\n    return make_X(x)\n")
    assert "`make_X`" in str(stale.error_in_exec) and "older definition of `build`" in str(stale.error_in_exec)
    assert not Path("services/c").exists() and not Path("services/s").exists()


def test_a_top_level_lambda_ships_as_its_line_and_global_state_is_reported(ipython):
    ok_cell(ipython, """
        import numpy as np
        X = np.array([[1.0, 2.0], [3.0, 4.0]])
        squash = lambda v: v / (1 + np.abs(v))
        STOPWORDS = frozenset({"a", "the"})
        EMPTY = set()
        CALLS = 0
        CACHE = {}
        def count_call():
            global CALLS
            CALLS += 1
        def remember(x):
            seen = []          # a local list: not a global
            seen.append(x)
            CACHE[x.shape] = len(seen)
    """)
    ok_cell(ipython, """
        %%ship lam --sample X --no-verify
        def predict(x):
            count_call()
            remember(x)
            return squash(x).sum(axis=1) + len(STOPWORDS) + len(EMPTY)
    """)
    source = features(Path("services/lam"))
    assert "squash = lambda v: v / (1 + np.abs(v))" in source
    assert "STOPWORDS = frozenset({'a', 'the'})" in source and "EMPTY = set()" in source
    warnings = json.loads(Path("services/lam/ship.json").read_text())["warnings"]
    assert any("`count_call` assigns the global `CALLS`" in w for w in warnings), warnings
    assert any("`remember` changes `CACHE` in place" in w for w in warnings), warnings
    assert not any("`seen`" in w for w in warnings)
    assert "assigns the global \\`CALLS\\`" in Path("services/lam/REVIEW.md").read_text()  # Markdown-escaped


def test_code_and_models_made_under_time_magics_are_found_and_credited(ipython):
    ok_cell(ipython, """
        import numpy as np
        from sklearn.linear_model import Ridge, LinearRegression
        X = np.random.default_rng(0).normal(size=(30, 2))
        model = LinearRegression().fit(X, X[:, 0])
    """)
    ok_cell(ipython, """
        %%time
        SCALE = 2.0
        def scale_feats(x):
            return x * SCALE
        ridge = Ridge().fit(scale_feats(X), X[:, 1])
    """)
    ok_cell(ipython, """
        %time model = Ridge(alpha=0.5).fit(X, X[:, 0])
    """)
    ok_cell(ipython, """
        %%ship timed --sample X[:5] --no-verify
        def predict(x):
            return ridge.predict(scale_feats(x)) + model.predict(x)
    """)
    assert "def scale_feats(x):" in features(Path("services/timed"))
    cells = {c["name"]: c["cell"] for c in json.loads(Path("services/timed/ship.json").read_text())["captured"]}
    # In[1] is the fixture's %load_ext: the %%time cell is In[3], the %time line In[4].
    assert (cells["scale_feats"], cells["ridge"], cells["SCALE"], cells["model"]) == (3, 3, 3, 4)


def test_an_entry_function_whose_answers_change_between_runs_is_refused_with_that_reason(ipython):
    ok_cell(ipython, """
        import numpy as np
        X = np.ones((4, 2))
    """)
    result = ipython.run_cell("%%ship noisy --sample X --no-verify\ndef predict(x):\n"
                              "    return x.sum(axis=1) + np.random.normal(size=len(x))\n")
    message = str(result.error_in_exec)
    assert "different outputs when run twice" in message and "seed" in message
    assert not Path("services/noisy").exists()


def test_notebook_code_deleted_after_a_model_was_built_with_it_is_still_shipped(ipython, serve):
    ok_cell(ipython, """
        import numpy as np
        from sklearn.linear_model import LinearRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer
        X = np.random.default_rng(1).normal(size=(30, 2))
        def add_ctr(x):
            return np.c_[x, x[:, 0] * x[:, 1]]
        pipe = make_pipeline(FunctionTransformer(add_ctr), LinearRegression()).fit(X, X[:, 0] * 3)
        del add_ctr
    """)
    ok_cell(ipython, """
        %ship deleted --model pipe --sample X[:5] --no-verify
    """)
    assert "def add_ctr(x):" in features(Path("services/deleted"))
    service = serve(Path("services/deleted").resolve())
    rows = [[0.5, -1.0], [2.0, 3.0]]
    response = service.post("/predict", {"instances": rows})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == ipython.user_ns["pipe"].predict(np.array(rows)).tolist()


def test_reads_of_files_and_environment_variables_at_run_time_are_reported(ipython, tmp_path):
    Path("rates.csv").write_text("region,rate\nn,1.5\ns,2.0\n")
    ok_cell(ipython, """
        import os
        import numpy as np
        import pandas as pd
        X = np.ones((3, 2))
        def rate_table():
            return pd.read_csv("rates.csv")
    """)
    ok_cell(ipython, """
        %%ship outside --sample X --no-verify
        def predict(x):
            threshold = float(os.environ.get("THRESHOLD", "0.5"))
            return x.sum(axis=1) * rate_table()["rate"].iloc[0] > threshold
    """)
    warnings = json.loads(Path("services/outside/ship.json").read_text())["warnings"]
    assert any("`rate_table` reads files" in w and "read_csv('rates.csv')" in w for w in warnings), warnings
    assert any("`predict` reads the environment ('THRESHOLD')" in w for w in warnings), warnings


def test_a_constant_of_a_local_module_changed_in_the_notebook_is_refused_by_name(ipython):
    Path("feats.py").write_text("SCALE = 3.0\n\ndef scaled(x):\n    return x * SCALE\n")
    ok_cell(ipython, """
        import sys, os
        sys.path.insert(0, os.getcwd())
        import numpy as np
        import feats
        feats.SCALE = 6.0   # the notebook's value; the file still says 3.0
        X = np.ones((2, 2))
    """)
    result = ipython.run_cell("%%ship patched --sample X --no-verify\ndef predict(x):\n"
                              "    return feats.scaled(x).sum(axis=1)\n")
    assert "feats.SCALE is 6.0 in the notebook but 3.0 in feats.py" in str(result.error_in_exec)
    assert not Path("services/patched").exists()
    ok_cell(ipython, "feats.SCALE = 3.0")
    ok_cell(ipython, "%%ship patched --sample X --no-verify\ndef predict(x):\n    return feats.scaled(x).sum(axis=1)\n")


def test_a_class_defined_under_an_if_is_shipped(ipython):
    ok_cell(ipython, """
        import numpy as np
        X = np.ones((2, 2))
        USE_LOG = True
        if USE_LOG:
            class Scaler:
                factor = 2.0
                def apply(self, x):
                    return np.log1p(x) * self.factor
        else:
            class Scaler:
                def apply(self, x):
                    return x
        scaler_class = Scaler
    """)
    ok_cell(ipython, """
        %%ship branch --sample X --no-verify
        def predict(x):
            return Scaler().apply(x).sum(axis=1)
    """)
    source = features(Path("services/branch"))
    assert "class Scaler:\n    factor = 2.0" in source and "np.log1p(x)" in source


def test_a_verify_that_fails_on_a_file_read_at_run_time_names_the_read(ipython):
    Path("rates.csv").write_text("rate\n1.5\n")
    ok_cell(ipython, """
        import numpy as np
        import pandas as pd
        X = np.ones((3, 2))
    """)
    result = ipython.run_cell("%%ship rated --sample X\ndef predict(x):\n"
                              "    return x.sum(axis=1) * pd.read_csv('rates.csv')['rate'].iloc[0]\n")
    message = str(result.error_in_exec)
    assert "tests failed in a clean environment" in message, message
    assert "note: `predict` reads files when it runs (`pd.read_csv('rates.csv')`" in message
    assert not Path("services/rated").exists()


def test_a_torch_model_left_in_training_mode_is_refused_with_eval_as_the_fix(ipython):
    """Dropout left on changes every answer; seeding would keep it on in the service."""
    pytest.importorskip("torch")
    ok_cell(ipython, """
        import numpy as np
        import torch
        net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
        X = np.random.default_rng(0).normal(size=(6, 3)).astype("float32")
    """)
    result = ipython.run_cell("%%ship dropout --sample X --no-verify\ndef predict(x):\n"
                              "    with torch.no_grad():\n        return net(torch.as_tensor(x)).numpy()\n")
    message = str(result.error_in_exec)
    assert "`net` is a torch module in training mode" in message and "call `net.eval()`" in message
    assert "seed" not in message


def test_a_torchscript_model_is_shipped_as_torchscript(ipython):
    """torch.jit.script / trace: saved with torch.jit.save (no Python objects to pickle) and loaded with
    torch.jit.load by the service, giving the notebook's outputs."""
    pytest.importorskip("torch")
    ok_cell(ipython, """
        import numpy as np
        import torch
        class Reg(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lin = torch.nn.Linear(2, 1)
            def forward(self, x):
                return self.lin(x).squeeze(-1)
        torch.manual_seed(0)
        scripted = torch.jit.script(Reg().eval())
        traced = torch.jit.trace(Reg().eval(), torch.zeros(1, 2))
        X = np.random.default_rng(0).normal(size=(5, 2)).astype("float32")
    """)
    ok_cell(ipython, """
        %%ship scripted --sample X --no-verify
        def predict(x):
            with torch.no_grad():
                return (scripted(torch.as_tensor(x)) + traced(torch.as_tensor(x))).numpy()
    """)
    project = Path("services/scripted")
    artifacts = {a["name"]: a for a in json.loads((project / "ship.json").read_text())["artifacts"]}
    assert {artifacts[n]["format"] for n in ("scripted", "traced")} == {"torchscript"}
    assert "torch" in (project / "requirements.txt").read_text()
    from jupyter_mlship.capture.artifacts import load_saved
    from jupyter_mlship.spec import ArtifactSpec

    import torch
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(7, 2)).astype("float32"))
    for name in ("scripted", "traced"):
        loaded = load_saved(ArtifactSpec(**artifacts[name]), project / "model", {})
        with torch.no_grad():
            assert torch.equal(loaded(x), ipython.user_ns[name](x))
