"""Kernel-side listing of what the lab panel can offer: models, entry functions and samples.

The panel evaluates ``candidates()`` through ``user_expressions`` (docs/panel-protocol.md), so this
runs inside the user's kernel on every refresh. The answer is a rich display object: the kernel's own
display formatter sends it as an ``application/json`` bundle, which the panel reads as JSON as it is. It therefore only reads: it never assigns into the
namespace, never prints, and never imports a framework. A framework's types are looked up in
``sys.modules`` so an object can only be one of them if the user already imported that framework.
"""

from __future__ import annotations

import inspect as pyinspect
import sys
import types
from dataclasses import asdict, dataclass, field
from typing import Any

# Methods a service can call on a model, in the order the panel offers them.
MODEL_METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "transform", "score_samples")
# IPython's own names in the user namespace, never candidates.
IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython"})
# Lists longer than this are judged by their first elements, so a huge list costs no more than a small one.
LIST_PROBE = 1000


@dataclass
class ModelCandidate:
    name: str
    type: str  # class name, e.g. "LogisticRegression"
    module: str  # module of the class, e.g. "sklearn.linear_model._logistic"
    methods: list[str] = field(default_factory=list)  # callable methods from MODEL_METHODS (or "forward")


@dataclass
class FunctionCandidate:
    name: str
    signature: str  # e.g. "(x, threshold=0.5)"
    doc: str = ""  # first line of the docstring


@dataclass
class SampleCandidate:
    name: str
    type: str  # "DataFrame", "ndarray", "list[str]", "list[dict]"
    shape: list[int]
    nbytes: int  # approximate size in memory
    detail: str = ""  # e.g. dtype of an array, first columns of a frame


@dataclass
class Candidates:
    models: list[ModelCandidate] = field(default_factory=list)
    functions: list[FunctionCandidate] = field(default_factory=list)
    samples: list[SampleCandidate] = field(default_factory=list)


def _loaded(module: str, attribute: str) -> type | None:
    """A class of a framework the user already imported, or None (never imports it)."""
    mod = sys.modules.get(module)
    found = getattr(mod, attribute, None) if mod is not None else None
    return found if isinstance(found, type) else None


def _has_callable(obj: Any, name: str) -> bool:
    # getattr runs arbitrary properties (sklearn's available_if, proxies): any error means "no".
    try:
        return callable(getattr(obj, name, None))
    except Exception:
        return False


def _model(name: str, obj: Any) -> ModelCandidate | None:
    cls = type(obj)
    torch_module = _loaded("torch.nn", "Module")
    if torch_module is not None and isinstance(obj, torch_module):
        methods = [m for m in MODEL_METHODS if _has_callable(obj, m)] or ["forward"]
        return ModelCandidate(name, cls.__name__, cls.__module__, methods)
    boosters = [b for b in (_loaded("xgboost", "Booster"), _loaded("lightgbm", "Booster")) if b is not None]
    if boosters and isinstance(obj, tuple(boosters)):
        return ModelCandidate(name, cls.__name__, cls.__module__, ["predict"])
    methods = [m for m in MODEL_METHODS[:2] if _has_callable(obj, m)]
    if not methods:
        return None
    methods += [m for m in MODEL_METHODS[2:] if _has_callable(obj, m)]
    return ModelCandidate(name, cls.__name__, cls.__module__, methods)


def _function(name: str, obj: Any) -> FunctionCandidate | None:
    if not isinstance(obj, types.FunctionType) or getattr(obj, "__module__", None) != "__main__":
        return None
    try:
        signature = str(pyinspect.signature(obj))
    except (TypeError, ValueError):
        signature = "(...)"
    doc = (obj.__doc__ or "").strip().splitlines()
    return FunctionCandidate(name, signature, doc[0] if doc else "")


def _list_kind(items: list) -> str | None:
    probe = items[:LIST_PROBE]
    if not probe:
        return None
    if all(isinstance(item, str) for item in probe):
        return "str"
    if all(isinstance(item, dict) for item in probe):
        return "dict"
    return None


def _list_nbytes(items: list) -> int:
    # Shallow sizes of a probe, scaled to the whole list: "approximate" is what the panel shows.
    probe = items[:LIST_PROBE]
    per_item = sum(sys.getsizeof(item) for item in probe) / len(probe)
    return int(sys.getsizeof(items) + per_item * len(items))


def _sample(name: str, obj: Any) -> SampleCandidate | None:
    frame = _loaded("pandas", "DataFrame")
    if frame is not None and isinstance(obj, frame):
        columns = [str(c) for c in obj.columns[:5]]
        more = ", ..." if len(obj.columns) > 5 else ""
        return SampleCandidate(name, "DataFrame", list(obj.shape), int(obj.memory_usage(deep=False).sum()),
                               ", ".join(columns) + more)
    array = _loaded("numpy", "ndarray")
    if array is not None and isinstance(obj, array) and obj.ndim == 2:
        return SampleCandidate(name, "ndarray", list(obj.shape), int(obj.nbytes), str(obj.dtype))
    if type(obj) is list:
        kind = _list_kind(obj)
        if kind is not None:
            return SampleCandidate(name, f"list[{kind}]", [len(obj)], _list_nbytes(obj))
    return None


def list_candidates(namespace: dict[str, Any]) -> Candidates:
    """What in ``namespace`` can be shipped: models, notebook functions and samples, sorted by name."""
    found = Candidates()
    for name in sorted(namespace):
        if name.startswith("_") or name in IPYTHON_NAMES:
            continue
        obj = namespace[name]
        # Modules and classes have `predict` as plain functions; only instances are models.
        if isinstance(obj, (types.ModuleType, type)):
            continue
        function = _function(name, obj)
        if function is not None:
            found.functions.append(function)
            continue
        sample = _sample(name, obj)
        if sample is not None:
            found.samples.append(sample)
            continue
        model = _model(name, obj)
        if model is not None:
            found.models.append(model)
    return found


class CandidatesDisplay:
    """The candidates as a display object: ``application/json`` for the panel, a short text otherwise."""

    def __init__(self, found: Candidates) -> None:
        self.found = found

    def _repr_json_(self) -> dict[str, Any]:
        return asdict(self.found)

    def __repr__(self) -> str:
        f = self.found
        return f"<{len(f.models)} models, {len(f.functions)} functions, {len(f.samples)} samples>"


def candidates() -> CandidatesDisplay:
    """The candidates of the running IPython kernel, displayed as ``application/json``."""
    from IPython import get_ipython

    shell = get_ipython()
    namespace = shell.user_ns if shell is not None else {}
    return CandidatesDisplay(list_candidates(namespace))
