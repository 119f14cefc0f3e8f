"""What a safe model format does not keep, found at export: the service's loader (app/loaders.py) must
give back the notebook's object, not one that only agrees on the sample."""

from __future__ import annotations

import numpy as np
import pytest

from jupyter_mlship.capture.artifacts import load_saved, save_artifact


def test_an_xgboost_wrapper_keeps_its_missing_value(tmp_path):
    """XGBClassifier(missing=-999): the JSON file does not keep `missing`, so once loaded -999 was read as
    a number and rows holding it got other predictions. The lost parameter is set again after loading."""
    xgboost = pytest.importorskip("xgboost")
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(0, 1, 400), rng.integers(0, 120, 400).astype(float)])
    X[rng.random(400) < 0.3, 1] = -999
    y = ((X[:, 0] > 0.7) | ((X[:, 1] >= 0) & (X[:, 1] < 24))).astype(int)
    clf = xgboost.XGBClassifier(n_estimators=20, max_depth=3, missing=-999).fit(X, y)
    artifact = save_artifact("clf", clf, "xgboost-json", tmp_path, {}, None)
    assert artifact.loader["params"]["missing"] == -999
    loaded = load_saved(artifact, tmp_path, {})
    assert np.array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_a_torch_module_that_its_constructor_cannot_rebuild_is_not_saved_as_a_state_dict(tmp_path):
    """A constructor argument kept under another name (`self.limit = clip`) came back as its default."""
    torch = pytest.importorskip("torch")

    class Clipped(torch.nn.Module):
        def __init__(self, n_features, clip=10.0):
            super().__init__()
            self.n_features = n_features
            self.limit = clip
            self.lin = torch.nn.Linear(n_features, 1)

    with pytest.raises(ValueError, match=r"attribute limit is 3.0 in the notebook but 10.0 when rebuilt"):
        save_artifact("model", Clipped(4, clip=3.0), "torch-state-dict", tmp_path, {}, None)
    later = Clipped(4)
    later.lin.scale = 2.0  # set on a submodule after construction
    with pytest.raises(ValueError, match=r"attribute lin.scale is 2.0 in the notebook but missing"):
        save_artifact("model", later, "torch-state-dict", tmp_path, {}, None)


try:
    import torch

    class Double(torch.nn.Module):  # at module level: the service's loader imports the class by name
        def __init__(self, d_in):
            super().__init__()
            self.d_in = d_in
            self.lin = torch.nn.Linear(d_in, 1)

        def forward(self, x):
            return self.lin(x).squeeze(-1)
except ImportError:  # pragma: no cover - the test below is skipped
    pass


def test_a_float64_torch_module_is_served_in_float64(tmp_path):
    """A module made .double() in the notebook was rebuilt at float32 and its weights cast down."""
    torch = pytest.importorskip("torch")
    module = Double(6).double().eval()
    artifact = save_artifact("lr", module, "torch-state-dict", tmp_path, {}, None)
    assert artifact.loader["dtype"] == "float64"
    loaded = load_saved(artifact, tmp_path, {})
    x = torch.as_tensor(np.random.default_rng(1).normal(size=(50, 6)))
    with torch.no_grad():
        assert torch.equal(loaded(x), module(x))
