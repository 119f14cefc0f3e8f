"""rehearse: app/features.py's text runs in the kernel as the service will run it, and leaves no trace."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from jupyter_mlship.capture.artifacts import save_artifact
from jupyter_mlship.capture.rehearsal import rehearse

FEATURES = (
    "from app.loaders import load_artifact\n\n"
    'weights = load_artifact("weights")\n'
    'offset = load_artifact("offset")\n\n\n'
    "def predict(x):\n    return x @ weights + offset\n"
)


def test_live_objects_are_served_by_load_artifact(tmp_path):
    weights = np.array([1.0, 2.0])
    namespace = rehearse(FEATURES, {"weights": weights, "offset": 0.5}, {}, tmp_path)
    assert namespace["weights"] is weights  # not saved yet: the kernel's own object
    assert namespace["predict"](np.array([[1.0, 1.0]])).tolist() == [3.5]
    assert namespace["__file__"] == str(tmp_path / "app" / "features.py")


def test_saved_artifacts_are_loaded_from_their_files_with_the_services_loader(tmp_path):
    weights = np.array([1.0, 2.0])
    saved = save_artifact("weights", weights, "npy", tmp_path, {"numpy": np.__version__}, None)
    namespace = rehearse(FEATURES, {"weights": weights, "offset": 0.5}, {"weights": saved}, tmp_path)
    assert namespace["weights"] is not weights and namespace["weights"].tolist() == [1.0, 2.0]
    (tmp_path / saved.file).write_bytes(b"not an array")  # what is loaded is the file, checked by its sha256
    with pytest.raises(Exception, match="sha256"):
        rehearse(FEATURES, {"weights": weights, "offset": 0.5}, {"weights": saved}, tmp_path)


def test_the_kernels_modules_and_path_are_left_as_they_were(tmp_path, monkeypatch):
    users_app = types.ModuleType("app")  # the notebook's own `app` module must survive a rehearsal
    monkeypatch.setitem(sys.modules, "app", users_app)
    path = list(sys.path)
    source = "import sys\nsys.path.insert(0, 'app/local')\n" + FEATURES
    rehearse(source, {"weights": np.ones(2), "offset": 0.0}, {}, tmp_path)
    assert sys.modules["app"] is users_app
    assert "app.loaders" not in sys.modules and "app.features" not in sys.modules
    assert sys.path == path


def test_an_error_in_the_code_propagates_and_still_restores_the_kernel(tmp_path):
    path = list(sys.path)
    with pytest.raises(NameError, match="undefined_helper"):
        rehearse("import sys\nsys.path.append('x')\nvalue = undefined_helper()\n", {}, {}, tmp_path)
    assert "app" not in sys.modules and sys.path == path


def test_code_runs_under_its_service_file_name(tmp_path):
    with pytest.raises(ZeroDivisionError) as caught:
        rehearse("def predict(x):\n    return x / 0\n\npredict(1)\n", {}, {}, tmp_path)
    assert caught.value.__traceback__ and caught.traceback[-1].frame.code.raw.co_filename == "app/features.py"


def test_annotations_are_evaluated_as_in_the_service(tmp_path):
    # This module has `from __future__ import annotations`, and so does rehearsal.py: the service's file does
    # not, so a name its annotations need must be there when the def runs.
    with pytest.raises(NameError, match="Missing"):
        rehearse("def predict(x, **options: Missing):\n    return x\n", {}, {}, tmp_path)
