"""Save model objects in the safest format that round-trips for their type.

Each object gets an ordered list of candidate formats, safest first. The exporter saves with a
candidate, loads it back with the service's own loader (``app/loaders.py`` of the template) and
keeps the first candidate whose reloaded object gives the kernel's outputs. Pickle is the
declared last resort, always sha256-checked at load.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import pickle
import sys
import zipfile
from pathlib import Path
from typing import Any, Callable, Iterable

from ..errors import ShipError
from ..imports import without_modules
from .code import MainReferenceScanner, constant_source, is_torchscript
from ..runtime import runtime_module
from ..spec import ArtifactSpec

SAFE_FORMATS = {"skops", "xgboost-json", "lightgbm-txt", "npy", "torch-state-dict", "torchscript"}


def qualified_type(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def is_torch_module(value: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.nn.Module)


def object_device(value: Any) -> str:
    """The device a model lives on: a torch module's parameters (or buffers), a tensor's; else "cpu"."""
    torch = sys.modules.get("torch")
    if torch is None:
        return "cpu"
    if isinstance(value, torch.Tensor):
        return str(value.device)
    if isinstance(value, torch.nn.Module):
        for tensor in (*value.parameters(), *value.buffers()):
            return str(tensor.device)
    return "cpu"


def device_fallback(devices: Iterable[str], allowed_by_flag: bool) -> bool:
    """May the service run these models on the CPU when it finds no GPU? Yes for models that ran on
    the CPU; for a model that ran on a GPU only when the export said so (its entry may name "cuda")."""
    return allowed_by_flag or all(not device.startswith("cuda") for device in devices)


def format_candidates(value: Any, refers_to_notebook: bool) -> list[str]:
    """Formats to try for ``value``, safest first."""
    module = type(value).__module__.split(".")[0]
    if is_torchscript(value):  # its own format: the compiled code and tensors, no Python objects
        return ["torchscript"]
    if is_torch_module(value):
        return ["torch-state-dict", "torch-pickle"]
    if module == "xgboost" and hasattr(value, "save_model"):
        return ["xgboost-json"] + ([] if refers_to_notebook else ["skops"]) + ["pickle"]
    if module == "lightgbm" and type(value).__name__ == "Booster":
        return ["lightgbm-txt", "pickle"]
    numpy = sys.modules.get("numpy")
    if numpy is not None and type(value) is numpy.ndarray and value.dtype != object:
        return ["npy"]
    # Notebook functions and classes inside (FunctionTransformer(add_ratio), a preprocessor=) are saved
    # by skops as app.features.<name> and trusted by exactly those names (see skops_dumps).
    if module in {"sklearn", "lightgbm", "xgboost", "numpy", "scipy"} or _holds_sklearn(value):
        return ["skops", "pickle"]
    return ["pickle"]


def _holds_sklearn(value: Any) -> bool:
    return any(cls.__module__.startswith("sklearn.") for cls in type(value).__mro__)


def save_artifact(
    name: str, value: Any, fmt: str, directory: Path, frameworks: dict[str, str], cell: int | None
) -> ArtifactSpec:
    """Write ``value`` in ``fmt`` under ``directory``; raises whatever the library raises."""
    loader: dict[str, Any] = {}
    if fmt == "pickle":
        data, suffix = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL), "pkl"
    elif fmt == "skops":
        skops_io = import_skops_io()
        data, suffix = skops_dumps(value), "skops"
        # We trust exactly the types we wrote ourselves; the service passes this list at load.
        loader["trusted_types"] = sorted(skops_io.get_untrusted_types(data=data))
        estimators = estimator_types(data, loader["trusted_types"])
        if estimators is not None:
            loader["estimator_types"] = estimators
    elif fmt == "xgboost-json":
        data, suffix = _via_file(lambda path: value.save_model(str(path)), "json"), "json"
        params = xgboost_lost_params(value, data)
        if params:
            loader["params"] = params
    elif fmt == "lightgbm-txt":
        data, suffix = value.model_to_string().encode("utf-8"), "txt"
    elif fmt == "npy":
        import numpy

        buffer = io.BytesIO()
        numpy.save(buffer, value, allow_pickle=False)
        data, suffix = buffer.getvalue(), "npy"
    elif fmt == "torch-state-dict":
        import torch

        init_kwargs = torch_init_kwargs(value)
        if init_kwargs is None:
            raise ValueError(
                f"{type(value).__name__}.__init__ takes arguments that are not kept as attributes of the same name"
            )
        dtype = torch_rebuild_dtype(value, init_kwargs)
        buffer = io.BytesIO()
        torch.save(value.state_dict(), buffer)
        data, suffix = buffer.getvalue(), "pt"
        loader.update(
            module=type(value).__module__, init_kwargs=init_kwargs, training=bool(value.training),
            **{"class": type(value).__qualname__}, **({"dtype": dtype} if dtype else {}),
        )
    elif fmt == "torchscript":
        import torch

        buffer = io.BytesIO()
        torch.jit.save(value, buffer)
        data, suffix = buffer.getvalue(), "pt"
        loader["training"] = bool(value.training)
    elif fmt == "torch-pickle":
        import torch

        buffer = io.BytesIO()
        torch.save(value, buffer)
        data, suffix = buffer.getvalue(), "pt"
    else:
        raise ValueError(f"unknown artifact format {fmt!r}")
    filename = f"{name}.{suffix}"
    (directory / filename).write_bytes(data)
    return ArtifactSpec(
        name=name,
        file=filename,
        format=fmt,  # type: ignore[arg-type]
        sha256=hashlib.sha256(data).hexdigest(),
        size_bytes=len(data),
        type=qualified_type(value),
        frameworks=frameworks,
        loader=loader,
        cell=cell,
        device=object_device(value),
    )


FEATURES_MODULE = "app.features"  # where the service defines the notebook's functions and classes


def skops_dumps(value: Any) -> bytes:
    """skops bytes of ``value``, with the notebook's functions and classes named ``app.features.<name>``.

    skops stores a function or class by module and name. Notebook code has the module ``__main__``,
    which means nothing in the service; there it lives in app/features.py, so that is the name written,
    and the service trusts exactly those names at load (the manifest's ``trusted_types``). Only
    top-level definitions qualify: a lambda or nested function has no name to import."""
    skops_io = import_skops_io()
    scanner = MainReferenceScanner()
    scanner.dump(value)
    notebook_objects = list(scanner.main_objects.items())
    for qualname, _obj in notebook_objects:
        if not qualname.isidentifier():
            raise ValueError(f"{qualname!r} from the notebook is not a top-level function or class")
    try:
        for _qualname, obj in notebook_objects:
            obj.__module__ = FEATURES_MODULE
        return reproducible_skops(skops_io.dumps(value))
    finally:  # the notebook's own objects are left as they were
        for _qualname, obj in notebook_objects:
            obj.__module__ = "__main__"


# A zip entry's time when none should be recorded: the earliest a zip can hold (as reproducible builds use).
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def reproducible_skops(data: bytes) -> bytes:
    """The same skops archive, in bytes that depend only on the object saved.

    skops names each array file and each shared object after ``id()``, a memory address, and stamps
    every zip entry with the time of saving: two exports of one unchanged notebook differed in every
    model byte, so each re-export was a new registry version and a binary change in the project's git
    history. Here every such number is renumbered in order of first appearance in schema.json (the
    files renamed to match; skops uses them only as names and memo keys) and the entries are written
    in name order with a fixed time."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = {info.filename: (info, archive.read(info)) for info in archive.infolist()}
    schema = json.loads(entries["schema.json"][1])
    numbers: dict[str, int] = {}

    def renumber(token: str) -> int:
        return numbers.setdefault(token, len(numbers))

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        copy = {}
        for key, value in node.items():
            if key == "__id__" and type(value) is int:
                copy[key] = renumber(str(value))
            elif key == "file" and isinstance(value, str) and value in entries and value != "schema.json":
                stem, dot, suffix = value.partition(".")
                copy[key] = f"{renumber(stem)}{dot}{suffix}"
            else:
                copy[key] = walk(value)
        return copy

    schema = walk(schema)
    renamed = {"schema.json": json.dumps(schema, indent=2).encode()}
    for name, (_info, blob) in entries.items():
        if name != "schema.json":
            stem, dot, suffix = name.partition(".")
            if stem not in numbers:  # a file that schema.json does not name: keep it as it is
                return data
            renamed[f"{numbers[stem]}{dot}{suffix}"] = _zero_padding(blob) if suffix == "npy" else blob
    compression = entries["schema.json"][0].compress_type
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name in sorted(renamed):
            info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
            info.compress_type = compression
            info.external_attr = 0o644 << 16
            archive.writestr(info, renamed[name])
    return buffer.getvalue()


def _zero_padding(blob: bytes) -> bytes:
    """An .npy file of a structured array with its padding bytes zeroed. A record dtype aligned like a C
    struct (a scikit-learn tree's nodes) has unused bytes between fields, and numpy writes whatever
    memory held there: the same tree saved twice differed. The fields' values are unchanged."""
    import numpy

    try:
        array = numpy.load(io.BytesIO(blob), allow_pickle=False)
    except ValueError:  # object arrays: skops writes those otherwise; keep the bytes as they are
        return blob
    fields = array.dtype.fields
    if not fields or sum(dtype.itemsize for dtype, *_ in fields.values()) >= array.dtype.itemsize:
        return blob
    clean = numpy.zeros(array.shape, array.dtype, order="F" if numpy.isfortran(array) else "C")  # calloc'd
    for name in array.dtype.names:
        clean[name] = array[name]
    buffer = io.BytesIO()
    numpy.save(buffer, clean, allow_pickle=False)
    return buffer.getvalue()


# Array-namespace adapters in scikit-learn that import their library (torch, cupy, dask) when imported.
_ARRAY_API_ADAPTERS = ("sklearn.externals.array_api_compat.torch", "sklearn.externals.array_api_compat.cupy",
                       "sklearn.externals.array_api_compat.dask")


def import_skops_io() -> Any:
    """``skops.io``, imported without importing torch (or cupy, dask) along with it.

    At import skops lists scikit-learn's estimators (``sklearn.utils.all_estimators``), whose package walk
    imports every subpackage to look inside, the array-namespace adapters among them, and the torch
    adapter imports torch: 2.4 s of a 5 s capture where torch is installed. The walk leaves
    ``sklearn.externals`` out of the list it returns, and skips a package that does not import, so hiding
    the adapters while skops imports gives the same list of trusted types."""
    with without_modules(*_ARRAY_API_ADAPTERS):
        import skops.io
    return skops.io


def estimator_types(data: bytes, untrusted: list[str]) -> list[str] | None:
    """The scikit-learn estimators in a skops file that skops trusts by default, by type name.

    The service trusts these by name and so imports skops without its estimator walk, which imports every
    scikit-learn module to build that default list (app/loaders.py, ``_import_skops_io``). They are the
    types that turn untrusted when skops' list of estimators is empty (``untrusted``: the file's untrusted
    types with that list as it is). None where this skops keeps that list elsewhere: the service then
    imports skops as usual."""
    skops_io = import_skops_io()
    from skops.io import _trusted_types

    names = getattr(_trusted_types, "SKLEARN_ESTIMATOR_TYPE_NAMES", None)
    if not isinstance(names, list):
        return None
    kept = list(names)
    names.clear()  # the list object the audit reads; put back whatever happens
    try:
        without_defaults = set(skops_io.get_untrusted_types(data=data))
    finally:
        names[:] = kept
    return sorted(without_defaults - set(untrusted))


def _via_file(write: Any, suffix: str) -> bytes:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"artifact.{suffix}"
        write(path)
        return path.read_bytes()


def torch_init_kwargs(module: Any) -> dict[str, Any] | None:
    """Constructor arguments recovered from same-named attributes (the common `self.x = x`)."""
    kwargs: dict[str, Any] = {}
    parameters = list(inspect.signature(type(module).__init__).parameters.values())[1:]
    for parameter in parameters:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        value = getattr(module, parameter.name, inspect.Parameter.empty)
        if value is not inspect.Parameter.empty and constant_source(value) is not None and _json_safe(value):
            kwargs[parameter.name] = value
        elif parameter.default is inspect.Parameter.empty:
            return None
    return kwargs


def torch_rebuild_dtype(module: Any, init_kwargs: dict[str, Any]) -> str | None:
    """Check that the service's rebuild (the class called with ``init_kwargs``, then the state dict) is
    this module: every plain attribute of it and of its submodules as in the notebook (a value kept under
    another name than its constructor argument, or changed after construction, comes back as the default
    otherwise, and only inputs the sample happens to reach would show it), and every tensor of its own
    dtype. Returns the floating dtype to move the rebuilt module to first ("float64" for a module made
    ``.double()``; loading a state dict casts into the new module's float32 tensors), None for the default.
    Raises ValueError naming the difference."""
    import torch

    rebuilt = type(module)(**init_kwargs)
    floating = {t.dtype for t in module.state_dict().values() if t.is_floating_point()}
    dtype = None
    if floating and floating != {torch.get_default_dtype()}:
        if len(floating) > 1:
            raise ValueError(f"its tensors mix {sorted(str(d) for d in floating)}: one dtype is rebuilt only")
        (only,) = floating
        rebuilt, dtype = rebuilt.to(only), str(only).removeprefix("torch.")
    rebuilt.load_state_dict(module.state_dict(), strict=True)
    rebuilt.train(module.training)
    for (path, mine), (_, theirs) in zip(module.named_modules(), rebuilt.named_modules()):
        for key, value in vars(mine).items():
            if key.startswith("_") or key == "training":
                continue
            again = vars(theirs).get(key, inspect.Parameter.empty)
            if not _same_plain_value(value, again):
                where = f"{path}.{key}" if path else key
                raise ValueError(f"attribute {where} is {_short(value)} in the notebook but {_short(again)} when "
                                 f"rebuilt from {type(module).__name__}({', '.join(init_kwargs)})")
    return dtype


def _same_plain_value(a: Any, b: Any) -> bool:
    if b is inspect.Parameter.empty:
        return False
    try:
        import numpy

        if isinstance(a, numpy.ndarray) or isinstance(b, numpy.ndarray):
            return bool(numpy.array_equal(a, b))
        return bool(a == b) if type(a) is type(b) else False
    except Exception:  # tensors, objects without a usable ==: compared as what they print
        return repr(a) == repr(b)


def _short(value: Any) -> str:
    if value is inspect.Parameter.empty:
        return "missing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# Parameters of xgboost's scikit-learn wrappers used only while fitting: not needed to predict again.
XGBOOST_FIT_ONLY = {"callbacks", "eval_metric", "early_stopping_rounds", "random_state"}


def xgboost_lost_params(model: Any, data: bytes) -> dict[str, Any]:
    """The scikit-learn wrapper's parameters that its JSON file does not bring back, to be set again
    after loading. ``missing`` is one: a classifier trained with missing=-999 read -999 as a number once
    loaded, and a sample without -999 could not show it. Raises ValueError for such a parameter that
    JSON cannot hold (a callable objective)."""
    import math

    if not hasattr(model, "get_params"):
        return {}
    fresh = type(model)()
    _via_file(lambda path: (path.write_bytes(data), fresh.load_model(str(path))), "json")
    loaded = fresh.get_params(deep=False)
    lost: dict[str, Any] = {}
    for key, value in model.get_params(deep=False).items():
        again = loaded.get(key, inspect.Parameter.empty)
        both_nan = isinstance(value, float) and isinstance(again, float) and math.isnan(value) and math.isnan(again)
        try:
            same = both_nan or (type(value) is type(again) and bool(value == again))
        except Exception:
            same = False
        if same or value is None or key in XGBOOST_FIT_ONLY:  # None: the booster's own value stands
            continue
        if not _json_safe(value):
            raise ValueError(f"parameter {key}={_short(value)} is lost by the JSON format and is not JSON")
        lost[key] = value
    return lost


def _json_safe(value: Any) -> bool:
    try:
        return json.loads(json.dumps(value)) == value
    except (TypeError, ValueError):
        return False


MAX_SCANNED_PICKLE_BYTES = 64 * 1024 * 1024  # beyond this an artifact is tensors, not text worth scanning


def artifact_strings(value: Any, min_length: int = 8) -> list[str]:
    """The text an object carries (parameters, vocabularies, column names), one string a line.

    Read from the opcodes of its pickle, so tokens hidden in a model's attributes are scanned
    for credentials like exported code is. Large objects are skipped: their bulk is numbers."""
    import pickletools

    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return []
    if len(data) > MAX_SCANNED_PICKLE_BYTES:
        return []
    strings = []
    for _opcode, arg, _position in pickletools.genops(data):
        if isinstance(arg, str) and len(arg) >= min_length and "\n" not in arg:
            strings.append(arg)
    return sorted(set(strings))


def load_saved(artifact: ArtifactSpec, directory: Path, namespace: dict[str, Any]) -> Any:
    """Load with the service's own loader, so the kernel checks exactly what the service runs."""
    loaders = runtime_module("loaders")
    return loaders.load_artifact_file(artifact.model_dump(), directory, namespace)


def choose_format(name: str, value: Any, cell: int | None, refers_to_notebook: bool, frameworks: dict[str, str],
                  staging: Path, check: "Callable[[dict[str, ArtifactSpec]], list[str]]",
                  warnings: list[str]) -> ArtifactSpec:
    """Save with the safest format whose reloaded object reproduces the kernel's outputs.

    ``check`` runs the rehearsal with the given saved artifacts and returns mismatches (empty: faithful).
    """
    reasons = []
    for fmt in format_candidates(value, refers_to_notebook=refers_to_notebook):
        try:
            artifact = save_artifact(name, value, fmt, staging, frameworks, cell)
            mismatches = check({name: artifact})
        except Exception as exc:
            reasons.append(f"{fmt}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        if mismatches:
            reasons.append(f"{fmt}: reloaded object predicts differently ({mismatches[0]})")
            continue
        if reasons and fmt not in SAFE_FORMATS:
            warnings.append(f"artifact `{name}`: safer formats did not round-trip ({'; '.join(reasons)})")
        return artifact
    raise ShipError(f"`{name}`{f' (In[{cell}])' if cell else ''} cannot be saved faithfully: {'; '.join(reasons)}")
