"""Load the model artifacts listed in model/manifest.json.

Every file is checked against the sha256 recorded when it was saved, and the libraries that
read it must be at the versions it was saved with: a changed file or a version skew stops the
service at start-up instead of serving different predictions. Objects that refer to functions
or classes defined in the notebook (``__main__`` there) find them in ``app.features``.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import io
import json
import os
import pickle
import sys
from pathlib import Path
from typing import Any, Callable

MODEL_DIR = Path(os.environ.get("MLSHIP_MODEL_DIR", Path(__file__).resolve().parent.parent / "model"))
FEATURES_MODULE = "app.features"  # where the notebook's own functions and classes live in the service
ALLOW_SKEW_ENV = "MLSHIP_ALLOW_VERSION_SKEW"


class ArtifactError(RuntimeError):
    """An artifact cannot be loaded faithfully; the message names the file and the reason."""


def read_manifest(model_dir: Path = MODEL_DIR) -> dict[str, dict[str, Any]]:
    path = model_dir / "manifest.json"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["artifacts"]
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactError(f"{path} is missing or not a valid manifest: {exc}") from exc
    return {entry["name"]: entry for entry in entries}


def load_artifact(name: str) -> Any:
    """Load one artifact for app/features.py, which calls this while it is being imported."""
    manifest = read_manifest(MODEL_DIR)
    if name not in manifest:
        raise ArtifactError(f"model/manifest.json lists no artifact named {name!r}")
    namespace = vars(sys.modules[FEATURES_MODULE])
    return load_artifact_file(manifest[name], MODEL_DIR, namespace)


def load_artifact_file(entry: dict[str, Any], model_dir: Path, namespace: dict[str, Any]) -> Any:
    """Check and load the file of one manifest entry; ``namespace`` holds the notebook's code."""
    path = model_dir / entry["file"]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ArtifactError(f"model/{entry['file']} cannot be read: {exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise ArtifactError(
            f"model/{entry['file']} has sha256 {digest}, but the manifest records {entry['sha256']}: "
            "the file was changed or damaged after export"
        )
    check_versions(entry)
    loader = LOADERS.get(entry["format"])
    if loader is None:
        raise ArtifactError(f"model/{entry['file']} has unknown format {entry['format']!r}")
    try:
        return loader(path, data, entry, namespace)
    except ArtifactError:
        raise
    except Exception as exc:  # a broken file must name itself, whatever the library raised
        raise ArtifactError(
            f"model/{entry['file']} ({entry['format']}) could not be loaded: {type(exc).__name__}: {exc}"
        ) from exc


def check_versions(entry: dict[str, Any]) -> None:
    """Refuse to load with other library versions than the notebook saved with."""
    if os.environ.get(ALLOW_SKEW_ENV) == "1":
        return
    skew = []
    for dist, saved in entry.get("frameworks", {}).items():
        try:
            installed = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != saved:
            skew.append(f"{dist} {installed} (saved with {saved})")
    if skew:
        raise ArtifactError(
            f"model/{entry['file']} was saved with other library versions: {', '.join(skew)}; "
            f"install requirements.txt, or set {ALLOW_SKEW_ENV}=1 to load anyway"
        )


def _notebook_global(namespace: dict[str, Any], module: str, name: str) -> Any:
    if name not in namespace:
        raise ArtifactError(
            f"the artifact refers to {name!r} from the notebook ({module}), which app/features.py does not define"
        )
    return namespace[name]


def unpickler_class(namespace: dict[str, Any], base: type = pickle.Unpickler) -> type:
    """An Unpickler that resolves the notebook's ``__main__`` names in the feature code."""

    class NotebookUnpickler(base):  # type: ignore[misc, valid-type]
        def find_class(self, module: str, name: str) -> Any:
            if module == "__main__":
                return _notebook_global(namespace, module, name)
            return super().find_class(module, name)

    return NotebookUnpickler


def _load_pickle(path: Path, data: bytes, entry: dict[str, Any], namespace: dict[str, Any]) -> Any:
    return unpickler_class(namespace)(io.BytesIO(data)).load()


def _load_skops(path: Path, data: bytes, entry: dict[str, Any], namespace: dict[str, Any]) -> Any:
    import skops.io

    # Only the types recorded at export are trusted; anything else in the file is refused.
    return skops.io.loads(data, trusted=entry["loader"].get("trusted_types", []))


def _import_qualified(qualified: str) -> Any:
    module, _, name = qualified.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _load_xgboost(path: Path, data: bytes, entry: dict[str, Any], namespace: dict[str, Any]) -> Any:
    model = _import_qualified(entry["type"])()
    model.load_model(str(path))
    return model


def _load_lightgbm(path: Path, data: bytes, entry: dict[str, Any], namespace: dict[str, Any]) -> Any:
    import lightgbm

    return lightgbm.Booster(model_str=data.decode("utf-8"))


def _load_npy(path: Path, data: bytes, entry: dict[str, Any], namespace: dict[str, Any]) -> Any:
    import numpy

    return numpy.load(io.BytesIO(data), allow_pickle=False)


def _torch_class(entry: dict[str, Any], namespace: dict[str, Any]) -> type:
    module, name = entry["loader"]["module"], entry["loader"]["class"]
    if module == "__main__":
        return _notebook_global(namespace, module, name)
    return getattr(importlib.import_module(module), name)


def _load_torch_state_dict(path: Path, data: bytes, entry: dict[str, Any], namespace: dict[str, Any]) -> Any:
    import torch

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    module = _torch_class(entry, namespace)(**entry["loader"].get("init_kwargs", {}))
    module.load_state_dict(state, strict=True)
    module.train(entry["loader"].get("training", False))
    return module


def _load_torch_pickle(path: Path, data: bytes, entry: dict[str, Any], namespace: dict[str, Any]) -> Any:
    import types

    import torch

    pickle_module = types.SimpleNamespace(Unpickler=unpickler_class(namespace), load=pickle.load)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=pickle_module)


LOADERS: dict[str, Callable[[Path, bytes, dict[str, Any], dict[str, Any]], Any]] = {
    "pickle": _load_pickle,
    "skops": _load_skops,
    "xgboost-json": _load_xgboost,
    "lightgbm-txt": _load_lightgbm,
    "npy": _load_npy,
    "torch-state-dict": _load_torch_state_dict,
    "torch-pickle": _load_torch_pickle,
}
