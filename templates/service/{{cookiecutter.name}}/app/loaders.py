"""Load the model artifacts listed in model/manifest.json.

Every file is checked against the sha256 recorded when it was saved, and the libraries that
read it must be at the versions it was saved with: a changed file or a version skew stops the
service at start-up instead of serving different predictions. Objects that refer to functions
or classes defined in the notebook (``__main__`` there) find them in ``app.features``.

Each torch model goes to the device it lived on in the notebook (recorded in the manifest) when
that device is here; ``MLSHIP_DEVICE=cpu|cuda|cuda:N`` overrides. With no GPU, a model that ran on
one falls back to the CPU only when the export allowed it (``device_fallback`` in the manifest);
otherwise loading fails and /readyz says why. ``PLACEMENTS`` records where each model went.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import io
import json
import os
import pickle
import re
import sys
import types
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

MODEL_DIR = Path(os.environ.get("MLSHIP_MODEL_DIR", Path(__file__).resolve().parent.parent / "model"))
FEATURES_MODULE = "app.features"  # where the notebook's own functions and classes live in the service
ALLOW_SKEW_ENV = "MLSHIP_ALLOW_VERSION_SKEW"
DEVICE_ENV = "MLSHIP_DEVICE"
DEVICE_PATTERN = re.compile(r"^(cpu|cuda(:\d+)?)$")
MOVABLE_FORMATS = {"torch-state-dict", "torchscript", "torch-pickle"}  # the formats whose objects can change device
# The same release without CUDA code: CPU images pin it instead (requirements.txt), same module, same version.
CPU_TWINS = {"xgboost": "xgboost-cpu"}
# Released as builds of one version (+cpu, +cu128...): a CPU image pins +cpu where the notebook ran a CUDA
# build, and a state dict loads on any build, so only the release before the "+" must match.
BUILDS_OF_ONE_RELEASE = {"torch", "torchvision", "torchaudio"}


class ArtifactError(RuntimeError):
    """An artifact cannot be loaded faithfully; the message names the file and the reason."""


class DeviceUnavailable(ArtifactError):
    """The device a model needs is not here, and the export did not allow the CPU instead."""


@dataclass
class Placement:
    """Where one artifact lives in this process, and why there."""

    device: str  # "cpu", "cuda:0", ...
    recorded: str  # where it lived in the notebook
    why: str

    def as_json(self) -> dict[str, str]:
        return asdict(self)


PLACEMENTS: dict[str, Placement] = {}


def _read_manifest_file(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        manifest["artifacts"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} is missing or not a valid manifest: {exc}") from exc
    return manifest


def read_manifest(model_dir: Path = MODEL_DIR) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in _read_manifest_file(model_dir)["artifacts"]}


def visible_gpus() -> int:
    """CUDA devices this process can use (0 without torch or without a GPU)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def choose_device(recorded: str, *, fallback_allowed: bool, override: str | None, gpus: int) -> Placement:
    """Where a movable (torch) model goes: a pure decision, so it is tested without a GPU."""
    if override:
        if not DEVICE_PATTERN.match(override):
            raise DeviceUnavailable(f"{DEVICE_ENV}={override!r} is not a device: use cpu, cuda or cuda:N")
        index = int(override.partition(":")[2] or 0)
        if override != "cpu" and index >= gpus:
            raise DeviceUnavailable(
                f"{DEVICE_ENV}={override} asks for a GPU, but {gpus} CUDA device(s) are visible here"
            )
        device = "cuda:0" if override == "cuda" else override
        return Placement(device, recorded, f"{DEVICE_ENV}={override}")
    if not recorded.startswith("cuda"):
        return Placement("cpu", recorded, "it ran on the CPU in the notebook")
    if gpus > 0:
        index = int(recorded.partition(":")[2] or 0)
        if index < gpus:
            return Placement(f"cuda:{index}", recorded, f"it ran on {recorded} in the notebook")
        return Placement("cuda:0", recorded, f"it ran on {recorded} in the notebook; {gpus} GPU(s) here, so cuda:0")
    if fallback_allowed:
        return Placement("cpu", recorded, f"it ran on {recorded} in the notebook; no GPU is visible here and "
                                          "the export allows the CPU instead (--allow-cpu-fallback)")
    raise DeviceUnavailable(
        f"the model ran on {recorded} in the notebook, but no GPU is visible here (torch.cuda.is_available() "
        f"is False) and the export did not allow the CPU: run it on a GPU node, set {DEVICE_ENV}=cpu, "
        "or export again with --allow-cpu-fallback"
    )


def placement_for(entry: dict[str, Any], fallback_allowed: bool) -> Placement:
    """The device of one manifest entry in this process."""
    recorded = entry.get("device", "cpu")
    if entry["format"] not in MOVABLE_FORMATS:
        return Placement("cpu", recorded, f"{entry['format']} objects run on the CPU")
    override = os.environ.get(DEVICE_ENV, "").strip() or None
    gpus = visible_gpus() if override != "cpu" and (override or recorded.startswith("cuda")) else 0
    return choose_device(recorded, fallback_allowed=fallback_allowed, override=override, gpus=gpus)


def load_artifact(name: str) -> Any:
    """Load one artifact for app/features.py, which calls this while it is being imported."""
    manifest = _read_manifest_file(MODEL_DIR)
    entries = {entry["name"]: entry for entry in manifest["artifacts"]}
    if name not in entries:
        raise ArtifactError(f"model/manifest.json lists no artifact named {name!r}")
    placement = placement_for(entries[name], bool(manifest.get("device_fallback", True)))
    namespace = vars(sys.modules[FEATURES_MODULE])
    loaded = load_artifact_file(entries[name], MODEL_DIR, namespace, device=placement.device)
    PLACEMENTS[name] = placement
    return loaded


def load_artifact_file(entry: dict[str, Any], model_dir: Path, namespace: dict[str, Any],
                       device: str | None = None) -> Any:
    """Check and load the file of one manifest entry; ``namespace`` holds the notebook's code.

    ``device``: where a torch model goes (default: the device it was recorded on)."""
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
        loaded = loader(path, data, entry, namespace)
        if entry["format"] in MOVABLE_FORMATS:
            loaded = _to_device(loaded, device or entry.get("device", "cpu"))
        return loaded
    except ArtifactError:
        raise
    except Exception as exc:  # a broken file must name itself, whatever the library raised
        raise ArtifactError(
            f"model/{entry['file']} ({entry['format']}) could not be loaded: {type(exc).__name__}: {exc}"
        ) from exc


def _installed_version(dist: str) -> str:
    for name in (dist, CPU_TWINS.get(dist.lower())):
        if name:
            try:
                return importlib.metadata.version(name)
            except importlib.metadata.PackageNotFoundError:
                pass
    return "not installed"


def check_versions(entry: dict[str, Any]) -> None:
    """Refuse to load with other library versions than the notebook saved with."""
    if os.environ.get(ALLOW_SKEW_ENV) == "1":
        return
    skew = []
    for dist, saved in entry.get("frameworks", {}).items():
        installed = _installed_version(dist)
        if dist.lower() in BUILDS_OF_ONE_RELEASE:
            same = installed.split("+")[0] == saved.split("+")[0]
        else:
            same = installed == saved
        if not same:
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
    recorded = entry["loader"]
    skops_io = _import_skops_io(by_name="estimator_types" in recorded)
    # Only the types recorded at export are trusted; anything else in the file is refused.
    trusted = recorded.get("trusted_types", []) + recorded.get("estimator_types", [])
    return skops_io.loads(data, trusted=trusted)


def _import_skops_io(by_name: bool) -> Any:
    """``skops.io``, with its module search made fast (``_fast_whichmodule``); where the export named the
    file's scikit-learn estimators, also without skops' estimator walk.

    On import skops builds its default trust list from ``sklearn.utils.all_estimators()``, which imports
    every scikit-learn module (0.2-0.7 s of the service's start, for estimators it never loads). The
    export records the estimators the file holds (``estimator_types``) and they are trusted by name, so
    the walk can find nothing: the trust is then exactly the manifest's lists, narrower than skops'
    default, never wider."""
    if "skops.io" in sys.modules:
        import skops.io

        return skops.io
    import sklearn.utils

    walk = sklearn.utils.all_estimators
    if by_name:
        sklearn.utils.all_estimators = lambda *args, **kwargs: []
    try:
        with _after_imports(_AfterImport("skops.io._utils", _fast_whichmodule)):
            import skops.io
    finally:
        sklearn.utils.all_estimators = walk
    return skops.io


class _AfterImport(importlib.abc.MetaPathFinder):
    """Finds the module ``name`` as the path finder does, and calls ``patch(module)`` once it has run: a
    start-up shortcut applied only where that module is imported (a service that never imports it pays
    nothing)."""

    def __init__(self, name: str, patch: Callable[[types.ModuleType], None]) -> None:
        self.name, self.patch = name, patch

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != self.name:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: types.ModuleType) -> None:
            exec_module(module)
            self.patch(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[union-attr]
        return spec


def _fast_whichmodule(module: types.ModuleType) -> None:
    """``skops.io._utils`` gets ``whichmodule`` below.

    On import skops names every ufunc of scipy.special (232 of them) by searching ``sys.modules`` for the
    module that holds it, with a ``getattr`` per module: in a service about 600 modules, 0.16 s of its
    start. The replacement finds the same module, in the same order, with a dictionary lookup where a
    plain module has no ``__getattr__`` of its own, and skops' own search everywhere else."""
    original = getattr(module, "whichmodule", None)
    if callable(original):
        module.whichmodule = functools.partial(whichmodule, original)


@contextlib.contextmanager
def _after_imports(*finders: _AfterImport) -> Iterator[None]:
    """The finders are asked first for the imports inside the block, and removed after it."""
    sys.meta_path[:0] = finders
    try:
        yield
    finally:
        for finder in finders:
            sys.meta_path.remove(finder)


def quick_start() -> contextlib.AbstractContextManager[None]:
    """Start-up shortcuts for the model's imports (the notebook's code and the artifacts' loaders), each
    applied only if that module is imported meanwhile. None changes what a model computes."""
    return _after_imports(_AfterImport("scipy._lib._array_api", _plain_capability_docstrings))


def _plain_capability_docstrings(module: types.ModuleType) -> None:
    """scipy's ``xp_capabilities`` decorator parses and re-renders the docstring of every function it marks,
    to add a table of the array backends it supports: about 600 functions when scikit-learn imports
    scipy.stats, 0.06-0.27 s of a service's start. A service never shows a docstring: with this, each
    keeps its own text, without the table. Tried once on a function of our own first: a scipy whose
    decorator uses the docstring object otherwise keeps its own FunctionDoc."""
    if not hasattr(module, "FunctionDoc") or not callable(getattr(module, "xp_capabilities", None)):
        return
    original = module.FunctionDoc
    module.FunctionDoc = _KeptDocstring

    def probe() -> None:
        """Summary.\n\nNotes\n-----\nText."""

    try:
        module.xp_capabilities(capabilities_table={})(probe)
        if not probe.__doc__ or not probe.__doc__.startswith("Summary.") or "Text." not in probe.__doc__:
            raise ValueError(probe.__doc__)
    except Exception:  # noqa: BLE001  another scipy: its decorator keeps its own docstring work
        module.FunctionDoc = original


class _KeptDocstring:
    """What ``xp_capabilities`` takes for a parsed docstring: sections to append to (dropped), and the text
    as it was, after the signature line the decorator cuts off."""

    def __init__(self, function: Any) -> None:
        self.text = getattr(function, "__doc__", None) or ""

    def __getitem__(self, section: str) -> list:
        return []

    def __setitem__(self, section: str, value: Any) -> None:
        pass

    def __str__(self) -> str:
        return "\n" + self.text


def whichmodule(original: Callable[[Any, str], str], obj: Any, name: str) -> str:
    """skops' ``whichmodule(obj, name)``: the first module in ``sys.modules`` whose attribute ``name`` is
    ``obj`` (for objects without ``__module__``, such as ufuncs), "__main__" when none is."""
    if getattr(obj, "__module__", None) is not None or "." in name or hasattr(types.ModuleType, name):
        return original(obj, name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # as skops: numpy.core's deprecation shims
        for module_name, module, namespace in _modules_in_order():
            if namespace is not None:
                found = namespace.get(name)
            else:  # a module that makes attributes up (lazy, deprecated): ask it as skops does
                try:
                    found = getattr(module, name, None)
                except (AttributeError, ImportError):
                    continue
            if found is obj:
                return module_name
    return "__main__"


_MODULES_SEEN: list = [None, []]  # [what sys.modules held (its size, its newest name), its entries]


def _modules_in_order() -> list[tuple[str, Any, dict | None]]:
    """(name, module, its namespace, or None for a module that makes attributes up) for every module in
    sys.modules, in order; taken again only when a module was imported since (skops asks 800 times)."""
    key = (len(sys.modules), next(reversed(sys.modules), None))
    if _MODULES_SEEN[0] != key:
        entries = []
        for module_name, module in sys.modules.copy().items():
            if module_name in ("__main__", "__mp_main__") or module is None:
                continue
            namespace = module.__dict__ if type(module) is types.ModuleType else None
            entries.append((module_name, module, None if namespace is None or "__getattr__" in namespace
                            else namespace))
        _MODULES_SEEN[:] = [key, entries]
    return _MODULES_SEEN[1]


def _import_qualified(qualified: str) -> Any:
    module, _, name = qualified.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _load_xgboost(path: Path, data: bytes, entry: dict[str, Any], namespace: dict[str, Any]) -> Any:
    model = _import_qualified(entry["type"])()
    model.load_model(str(path))
    params = entry.get("loader", {}).get("params")
    if params:  # the wrapper's parameters that the JSON file does not keep (e.g. missing=-999)
        model.set_params(**params)
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
    if entry["loader"].get("dtype"):  # a module made .double() in the notebook: its own dtype, not float32
        module = module.to(getattr(torch, entry["loader"]["dtype"]))
    module.load_state_dict(state, strict=True)
    module.train(entry["loader"].get("training", False))
    return module


def _load_torchscript(path: Path, data: bytes, entry: dict[str, Any], namespace: dict[str, Any]) -> Any:
    import torch

    module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    module.train(entry["loader"].get("training", False))
    return module


def _load_torch_pickle(path: Path, data: bytes, entry: dict[str, Any], namespace: dict[str, Any]) -> Any:
    import torch

    # torch.load reads pickle_module.__name__ (to special-case dill): a module object, not a namespace.
    pickle_module = types.ModuleType("mlship_notebook_pickle")
    pickle_module.Unpickler = unpickler_class(namespace)  # type: ignore[attr-defined]
    pickle_module.load = pickle.load  # type: ignore[attr-defined]
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False, pickle_module=pickle_module)


def _to_device(model: Any, device: str) -> Any:
    """Files load on the CPU (any machine can read them); the model then moves to its device."""
    to = getattr(model, "to", None)
    return to(device) if callable(to) else model


LOADERS: dict[str, Callable[[Path, bytes, dict[str, Any], dict[str, Any]], Any]] = {
    "pickle": _load_pickle,
    "skops": _load_skops,
    "xgboost-json": _load_xgboost,
    "lightgbm-txt": _load_lightgbm,
    "npy": _load_npy,
    "torch-state-dict": _load_torch_state_dict,
    "torchscript": _load_torchscript,
    "torch-pickle": _load_torch_pickle,
}
