"""A ShipSpec written by hand, for tests that need a project's ship.json but not a real capture."""

from __future__ import annotations

from typing import Any

from jupyter_mlship.spec import ShipSpec


def tiny_spec_dict(name: str = "tiny-svc", **overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": name,
        "version": "3",
        "source": {"notebook": "notebooks/churn.ipynb", "kernel_python": "3.11.7",
                   "captured_at": "2026-01-01T00:00:00+00:00", "mlship_version": "0.1.0"},
        "entry": {"name": "predict", "kind": "function"},
        "python_version": "3.11.7",
        "features_source": "def predict(x):\n    return x.sum(axis=1)\n",
        "captured": [],
        "artifacts": [{"name": "model", "file": "model.skops", "format": "skops", "sha256": "ab" * 32,
                       "size_bytes": 10, "type": "sklearn.linear_model.LogisticRegression"}],
        "requirements": [{"name": "numpy", "version": "2.4.6"}, {"name": "fastapi", "version": "0.165.0"}],
        "test_requirements": [],
        "input": {"kind": "ndarray", "width": 2, "dtype": "float64", "json_type": "number"},
        "output": {"kind": "scalar", "container": "numpy.ndarray", "json_type": "number"},
        "golden": {"instances": [[1.0, 2.0]], "predictions": [3.0]},
    }
    spec.update(overrides)
    return spec


def tiny_spec(name: str = "tiny-svc", **overrides: Any) -> ShipSpec:
    return ShipSpec.model_validate(tiny_spec_dict(name, **overrides))
