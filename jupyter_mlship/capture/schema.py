"""Request and response schemas inferred from the notebook's sample, and the golden test built from it.

Runs in the kernel. The sample fixes what one instance of a request looks like; the conversion back
from JSON instances to the sample's type is the service's own ``app/convert.py`` (imported through
``runtime_module``), so what is checked here is exactly what the service will do.
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterable

from ..runtime import runtime_module
from ..spec import Column, Golden, InputSchema, OutputSchema

SUPPORTED_SAMPLES = runtime_module("kinds").supported_samples()  # app/kinds.py: one description per kind
PROBE_ROWS = 5  # rows of the sample used to ask the entry function whether it accepts missing values


class UnsupportedSample(ValueError):
    """The sample cannot fix a request schema (its type, an empty sample, mixed types in a column)."""


def _convert():
    return runtime_module("convert")


# --- input ------------------------------------------------------------------------------------------


def infer_input_schema(
    sample: Any,
    reference: Any = None,
    accepts_missing: Callable[[object], bool] | None = None,
) -> InputSchema:
    """The schema of one request instance, from the sample (and a reference data set, if given).

    A column is nullable when the sample or the reference has a missing value there, or when
    ``accepts_missing`` returns True for a copy of the first rows with that column set to missing.
    """
    if _is_pandas(sample, "DataFrame"):
        schema = _dataframe_schema(sample, reference)
        if accepts_missing is not None:
            _probe_dataframe_columns(sample, schema, accepts_missing)
        return schema
    if _is_pandas(sample, "Series"):
        raise UnsupportedSample(
            f"the sample is a pandas Series; supported samples are {SUPPORTED_SAMPLES} "
            "(use series.to_frame() or series.tolist())"
        )
    if type(sample).__module__ == "numpy" and hasattr(sample, "ndim"):
        if sample.size == 0:
            raise UnsupportedSample("the sample is an empty array; it must hold at least one row")
        if sample.ndim == 2:
            schema = _ndarray_schema(sample, reference)
            if accepts_missing is not None and not schema.nullable:
                _probe_ndarray(sample, schema, accepts_missing)
            return schema
        if sample.ndim == 1:
            json_type = _array_json_type(sample, "the sample")
            return InputSchema(
                kind="scalars",
                dtype=str(sample.dtype),
                json_type=json_type,
                nullable=_array_has_missing(sample) or _array_has_missing(reference),
            )
        raise UnsupportedSample(
            f"the sample is a {sample.ndim}-D numpy array; supported samples are {SUPPORTED_SAMPLES}"
        )
    if isinstance(sample, (list, tuple)):
        if not sample:
            raise UnsupportedSample("the sample is empty; it must hold at least one instance")
        present = [v for v in sample if v is not None]
        if present and all(isinstance(v, str) for v in present):
            return InputSchema(kind="strings", json_type="string", nullable=len(present) < len(sample))
        if present and all(isinstance(v, dict) for v in present) and len(present) == len(sample):
            schema = InputSchema(kind="records", columns=_records_columns(sample))
            if accepts_missing is not None:
                _probe_records(sample, schema, accepts_missing)
            return schema
        if all(_is_plain_scalar(v) for v in sample):
            json_type = _values_json_type(sample, "the sample")
            return InputSchema(
                kind="scalars", json_type=json_type, nullable=any(_is_missing(v) for v in sample)
            )
        kinds = sorted({type(v).__name__ for v in sample})
        raise UnsupportedSample(
            f"the sample is a {type(sample).__name__} of {', '.join(kinds)}; supported samples are "
            f"{SUPPORTED_SAMPLES}"
        )
    raise UnsupportedSample(
        f"the sample is a {type(sample).__module__}.{type(sample).__qualname__}; "
        f"supported samples are {SUPPORTED_SAMPLES}"
    )


def _dataframe_schema(frame: Any, reference: Any) -> InputSchema:
    if len(frame) == 0 or frame.shape[1] == 0:
        raise UnsupportedSample("the sample DataFrame is empty; it must hold at least one row and column")
    labels = list(frame.columns)
    bad = [label for label in labels if not isinstance(label, str)]
    if bad:
        raise UnsupportedSample(
            f"the sample DataFrame has column labels that are not strings ({bad[:3]!r}); JSON field "
            "names are strings, so rename them, e.g. df.columns = df.columns.astype(str)"
        )
    if len(set(labels)) != len(labels):
        raise UnsupportedSample("the sample DataFrame has duplicate column names")
    columns = []
    for name in labels:
        series = frame[name]
        column = _series_column(name, series)
        seen = [series]
        if _is_pandas(reference, "DataFrame") and name in reference.columns:
            seen.append(reference[name])
        markers = {marker for s in seen for marker in _missing_markers(s)}
        if markers:
            column.nullable = True
            # An object column holding None hands None to the model; everything else holds NaN.
            column.missing = "none" if markers == {"none"} else "nan"
        columns.append(column)
    return InputSchema(kind="dataframe", columns=columns)


def _series_column(name: str, series: Any) -> Column:
    import pandas as pd

    dtype = series.dtype
    where = f"column {name!r}"
    if isinstance(dtype, pd.CategoricalDtype):
        if dtype.ordered:
            raise UnsupportedSample(f"{where} is an ordered categorical, which is not supported yet")
        categories = _convert().json_value(list(dtype.categories))
        return Column(
            name=name,
            dtype="category",
            json_type=_values_json_type(categories, where),
            categories=categories,
        )
    if pd.api.types.is_datetime64_any_dtype(dtype):
        present = series.dropna()
        if present.dt.unit == "ns" and bool((present.dt.nanosecond != 0).any()):
            raise UnsupportedSample(
                f"{where} holds times finer than a microsecond, which a request's ISO 8601 strings cannot "
                f"bring to the service (they are read to the microsecond); round them in the sample and the "
                f"training data, e.g. frame[{name!r}] = frame[{name!r}].dt.floor('us')"
            )
        return Column(name=name, dtype=str(dtype), json_type="string")
    if pd.api.types.is_string_dtype(dtype) and dtype != object:
        named = str(dtype)
        if named == "string" and getattr(dtype, "storage", None) == "python":
            named = "string[python]"  # str() drops the storage, and "string" reads back as pyarrow's
        return Column(name=name, dtype=named, json_type="string")
    if dtype == object:
        return Column(name=name, dtype="object", json_type=_values_json_type(list(series), where))
    if pd.api.types.is_bool_dtype(dtype):
        return Column(name=name, dtype=str(dtype), json_type="boolean")
    if pd.api.types.is_integer_dtype(dtype):
        return Column(name=name, dtype=str(dtype), json_type="integer")
    if pd.api.types.is_float_dtype(dtype):
        return Column(name=name, dtype=str(dtype), json_type="number")
    raise UnsupportedSample(
        f"{where} has dtype {dtype}, which cannot come from JSON; supported: numbers, booleans, "
        "strings, categories and datetimes"
    )


def _missing_markers(series: Any) -> set[str]:
    """How missing values appear in a column: "none" for None in an object column, else "nan"."""
    mask = series.isna()
    if not mask.any():
        return set()
    if series.dtype != object:
        return {"nan"}
    return {"none" if value is None else "nan" for value in series[mask]}


def _probe_dataframe_columns(frame: Any, schema: InputSchema, accepts_missing: Callable) -> None:
    """Ask the entry function whether each column without missing values in the sample accepts them."""
    instances = sample_to_instances(frame.head(PROBE_ROWS), schema)
    for column in schema.columns:
        if column.nullable:
            continue
        nulls = [{**instance, column.name: None} for instance in instances]
        if _accepts_variant(accepts_missing, schema, column.name, nulls, "nan"):
            column.nullable, column.missing = True, "nan"


def _probe_records(records: list[dict], schema: InputSchema, accepts_missing: Callable) -> None:
    """Ask the entry function whether each field that every sample record holds may be left out (code such
    as ``record.get("age", 40)``), and then what a null there should reach it as: None, NaN (numbers), or
    else the field left out. A field the sample holds null in, always present, that cannot be left out
    (``record["note"]``) must be sent, as null."""
    instances = sample_to_instances(records[:PROBE_ROWS], schema)
    for column in schema.columns:
        left_out = [{k: v for k, v in instance.items() if k != column.name} for instance in instances]
        if column.nullable:  # null in the sample: may a request also leave the field out?
            if column.missing != "absent" and all(column.name in record for record in records) \
                    and not _accepts_variant(accepts_missing, schema, column.name, left_out, column.missing):
                column.present = True
            continue
        if not _accepts_variant(accepts_missing, schema, column.name, left_out, None):
            continue
        nulls = [{**instance, column.name: None} for instance in instances]
        for missing in ("none", "nan") if column.json_type in ("integer", "number") else ("none",):
            if _accepts_variant(accepts_missing, schema, column.name, nulls, missing):
                break
        else:
            missing = "absent"
        column.nullable, column.missing = True, missing


def _accepts_variant(accepts_missing: Callable, schema: InputSchema, name: str, instances: list,
                     missing: str | None) -> bool:
    """Does the entry function take ``instances`` where field ``name`` is nullable, a null reaching it as
    ``missing``? The variant is built by the service's own converter: exactly what such a request gives."""
    trial = schema.model_copy(deep=True)
    column = next(c for c in trial.columns if c.name == name)
    column.nullable, column.missing = True, missing
    return _accepts(accepts_missing, _convert().instances_to_sample(instances, trial.model_dump()))


def _ndarray_schema(array: Any, reference: Any) -> InputSchema:
    return InputSchema(
        kind="ndarray",
        width=int(array.shape[1]),
        dtype=str(array.dtype),
        json_type=_array_json_type(array, "the sample"),
        nullable=_array_has_missing(array) or _array_has_missing(reference),
    )


def _probe_ndarray(array: Any, schema: InputSchema, accepts_missing: Callable) -> None:
    if array.dtype.kind not in "iuf":
        return  # NaN is a number: only numeric arrays can be asked about it
    instances = sample_to_instances(array[:PROBE_ROWS], schema)
    instances[0] = [None] * len(instances[0])
    trial = schema.model_copy(update={"nullable": True})
    variant = _convert().instances_to_sample(instances, trial.model_dump())
    if _accepts(accepts_missing, variant):
        schema.nullable = True


def _accepts(accepts_missing: Callable, variant: Any) -> bool:
    try:
        return bool(accepts_missing(variant))
    except Exception:  # a probe that fails means "no"; the caller reports its own errors
        return False


def _array_has_missing(array: Any) -> bool:
    if array is None or type(array).__module__ != "numpy" or not hasattr(array, "dtype"):
        return False
    if array.dtype.kind == "f":
        import numpy as np

        return bool(np.isnan(array).any())
    if array.dtype == object:
        return any(_is_missing(v) for v in array.ravel().tolist())
    return False


def _array_json_type(array: Any, where: str) -> str:
    kind = array.dtype.kind
    if kind == "b":
        return "boolean"
    if kind in "iu":
        return "integer"
    if kind == "f":
        return "number"
    if kind in "US":
        return "string"
    if kind == "O":
        return _values_json_type(array.ravel().tolist(), where)
    raise UnsupportedSample(f"{where} has dtype {array.dtype}, which cannot come from JSON")


def _records_columns(records: list[dict]) -> list[Column]:
    names: dict[str, None] = {}
    for record in records:
        for key in record:
            if not isinstance(key, str):
                raise UnsupportedSample(f"the sample records have a key that is not a string: {key!r}")
            names.setdefault(key)
    columns = []
    for name in names:
        values = [record.get(name) for record in records]
        column = Column(name=name, dtype="object", json_type=_values_json_type(values, f"field {name!r}"))
        markers = {
            "nan" if isinstance(v, float) else "none" for r in records if name in r for v in [r[name]] if _is_missing(v)
        }
        if markers or any(name not in record for record in records):
            column.nullable = True
            # A null reaches the entry function as the sample had it: NaN, None, or (where the sample only
            # left the field out) the field left out.
            column.missing = "nan" if markers == {"nan"} else "none" if markers else "absent"
        column.dtype = {"integer": "int", "number": "float", "string": "str", "boolean": "bool"}[
            column.json_type
        ]
        columns.append(column)
    return columns


def _values_json_type(values: list, where: str) -> str:
    """The one JSON type of the non-missing values; UnsupportedSample for mixed or unsupported ones."""
    import datetime

    present = [v for v in values if not _is_missing(v)]
    if not present:
        raise UnsupportedSample(f"{where} has only missing values in the sample, so its type is unknown")
    types = set()
    for value in present:
        value = _convert().json_value(value) if type(value).__module__ == "numpy" else value
        if isinstance(value, bool):
            types.add("boolean")
        elif isinstance(value, int):
            types.add("integer")
        elif isinstance(value, float):
            types.add("number")
        elif isinstance(value, str):
            types.add("string")
        elif isinstance(value, (datetime.date, datetime.time)):
            raise UnsupportedSample(f"{where} holds {type(value).__name__} objects; use a datetime64 column")
        else:
            if isinstance(value, (list, tuple, dict, set)):
                raise UnsupportedSample(
                    f"{where} holds a {type(value).__name__}: each field must hold one number, string or "
                    "boolean (nested lists and objects are not supported yet); flatten it in the sample and "
                    "the entry function, e.g. one string of joined values or one field per item"
                )
            raise UnsupportedSample(f"{where} holds a {type(value).__name__}, which cannot come from JSON")
    if types == {"integer", "number"}:
        return "number"
    if len(types) > 1:
        raise UnsupportedSample(f"{where} mixes types ({', '.join(sorted(types))}); give it one type")
    return types.pop()


# --- output -----------------------------------------------------------------------------------------


def infer_output_schema(result: Any, n_rows: int) -> OutputSchema:
    """What the entry function returns per instance, from its result on the sample."""
    rows = _convert().outputs_to_json(result, {}, n_rows)
    container = _container_name(result)
    dtype = str(getattr(result, "dtype", "") or "")  # an array's or Series' (a DataFrame's are per column)
    present = [row for row in rows if row is not None]
    if present and all(isinstance(row, dict) for row in present):
        names: dict[str, None] = {}
        for row in present:
            names.update(dict.fromkeys(row))
        dtypes = {str(k): str(v) for k, v in getattr(result, "dtypes", {}).items()}
        columns = []
        for name in names:
            column_dtype = dtypes.get(name, "object")
            json_type = _output_json_type([row.get(name) for row in present])
            if json_type == "any":  # e.g. NaN on every sample row: the column's dtype still says what it holds
                json_type = _dtype_json_type(column_dtype) or "string"
            columns.append(
                Column(
                    name=name,
                    dtype=column_dtype,
                    json_type=json_type,
                    nullable=json_type == "number" or _dtype_nullable(column_dtype)
                    or any(row.get(name) is None for row in present),
                )
            )
        return OutputSchema(kind="record", container=container, columns=columns)
    if present and all(isinstance(row, list) for row in present):
        widths = {len(row) for row in present}
        values = [v for row in present for v in row]
        json_type = _output_json_type(values)
        return OutputSchema(
            kind="vector",
            container=container,
            json_type=json_type,
            width=widths.pop() if len(widths) == 1 else None,
            # NaN/inf in a float output is sent as null, so float outputs are always nullable.
            nullable=json_type in ("number", "any") or any(v is None for v in values) or _dtype_nullable(dtype),
        )
    json_type = _output_json_type(rows)
    if json_type == "any" and not present:
        json_type = _dtype_json_type(dtype) or "any"
    return OutputSchema(
        kind="scalar",
        container=container,
        json_type=json_type,
        nullable=json_type in ("number", "any") or len(present) < len(rows) or _dtype_nullable(dtype),
    )


def class_labels(objects: Iterable[Any], output_schema: OutputSchema, predictions: list) -> list | None:
    """The class of each column of a probability output: the ``classes_`` of the classifier among the
    captured objects with as many classes as the output has columns. None when the outputs are not
    probabilities (every row within [0, 1], summing to 1), or when no one classifier, or two that
    disagree, say (a LabelEncoder beside a model trained on its codes)."""
    width = output_schema.width
    if output_schema.kind != "vector" or not width or width < 2:
        return None
    for row in predictions:
        if not (isinstance(row, list) and len(row) == width and all(_is_number(v) and 0 <= v <= 1 for v in row)
                and abs(sum(row) - 1) <= 1e-6):
            return None
    found = set()
    for value in objects:
        try:
            classes = getattr(value, "classes_", None)
            names = [c.item() if hasattr(c, "item") else c for c in classes] if classes is not None else []
        except Exception:  # an attribute that raises, or is not a sequence: not a classifier's classes
            continue
        if len(names) == width and all(isinstance(n, (str, int, float, bool)) for n in names):
            found.add(json.dumps(names))
    return json.loads(found.pop()) if len(found) == 1 else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _dtype_json_type(dtype: str) -> str | None:
    """The JSON type of a numpy/pandas dtype's values, or None when the dtype does not say."""
    name = dtype.lower()
    if name.startswith(("float", "double")):
        return "number"
    if name.startswith(("int", "uint")):
        return "integer"
    if name in ("bool", "boolean"):
        return "boolean"
    if name.startswith(("datetime64", "str", "string")):
        return "string"
    return None


def _dtype_nullable(dtype: str) -> bool:
    """Is this one of the dtypes made to hold missing values, which other inputs than the sample's may
    give: pandas' nullable ones (Int64, Float64, boolean, string) and times (NaT)."""
    return dtype[:1].isupper() or dtype == "boolean" or dtype.startswith(("string", "datetime64"))


def _output_json_type(values: list) -> str:
    try:
        return _values_json_type(values, "the output")
    except UnsupportedSample:
        return "any"  # nested or mixed outputs are passed through as they are


def _container_name(result: Any) -> str:
    cls = type(result)
    if cls.__module__ == "builtins":
        return cls.__name__
    return f"{cls.__module__.split('.')[0]}.{cls.__name__}"


# --- instances and golden -----------------------------------------------------------------------------


def sample_to_instances(sample: Any, schema: InputSchema) -> list:
    """The sample as JSON-ready request instances (NaN and other missing values become None)."""
    json_value = _convert().json_value
    if schema.kind == "dataframe":
        names = [column.name for column in schema.columns]
        columns = [json_value(sample[name].tolist()) for name in names]
        return [dict(zip(names, row)) for row in zip(*columns)]
    if schema.kind in ("ndarray", "scalars"):
        values = sample.tolist() if hasattr(sample, "tolist") else list(sample)
        return json_value(values)
    if schema.kind == "records":
        return [{key: json_value(value) for key, value in record.items()} for record in sample]
    return list(sample)  # strings


def make_golden(sample: Any, result: Any, input_schema: InputSchema, output_schema: OutputSchema) -> Golden:
    """The golden test: the sample as instances, the kernel's own result as predictions.

    Also checks that the service's conversion turns the instances back into the sample, because
    that is what makes the service predict what the notebook predicted.
    """
    convert = _convert()
    instances = sample_to_instances(sample, input_schema)
    rebuilt = convert.instances_to_sample(instances, input_schema.model_dump())
    difference = sample_difference(sample, rebuilt)
    if difference:
        raise UnsupportedSample(f"the sample does not survive the trip through JSON: {difference}")
    predictions = convert.outputs_to_json(result, output_schema.model_dump(), len(instances))
    return Golden(instances=instances, predictions=predictions)


def sample_difference(expected: Any, actual: Any) -> str | None:
    """Why ``actual`` is not the same sample as ``expected`` (type, columns, dtypes, values), or None."""
    if type(expected) is not type(actual) and not (
        isinstance(expected, (list, tuple)) and isinstance(actual, list)
    ):
        return f"a {type(expected).__name__} came back as a {type(actual).__name__}"
    if _is_pandas(expected, "DataFrame"):
        if list(expected.columns) != list(actual.columns):
            return f"columns {list(expected.columns)} came back as {list(actual.columns)}"
        for name in expected.columns:
            if expected[name].dtype != actual[name].dtype:
                return f"column {name!r} has dtype {actual[name].dtype}, not {expected[name].dtype}"
            want, got = expected[name].tolist(), actual[name].tolist()
            if not _same_values(want, got):
                return f"column {name!r} has values {got[:5]!r}..., not {want[:5]!r}..."
        return None
    if hasattr(expected, "dtype"):  # numpy
        if expected.dtype != actual.dtype or expected.shape != actual.shape:
            return f"array {actual.dtype}{actual.shape} is not {expected.dtype}{expected.shape}"
        return None if _same_values(expected.tolist(), actual.tolist()) else "array values differ"
    return None if _same_values(list(expected), list(actual)) else "values differ"


def _same_values(want: Any, got: Any) -> bool:
    """Equality that also holds for NaN == NaN, and keeps None and NaN apart."""
    if isinstance(want, list) and isinstance(got, list):
        return len(want) == len(got) and all(_same_values(w, g) for w, g in zip(want, got))
    if isinstance(want, dict) and isinstance(got, dict):
        return list(want) == list(got) and all(_same_values(want[k], got[k]) for k in want)
    if isinstance(want, float) and isinstance(got, float) and math.isnan(want) and math.isnan(got):
        return True
    if type(want).__name__ in ("NAType", "NaTType") or type(got).__name__ in ("NAType", "NaTType"):
        return type(want) is type(got)
    return type(want) is type(got) and bool(want == got)


# --- small helpers ------------------------------------------------------------------------------------


def _is_pandas(value: Any, name: str) -> bool:
    cls = type(value)
    return cls.__module__.startswith("pandas") and cls.__name__ == name


def _is_missing(value: Any) -> bool:
    if value is None or type(value).__name__ in ("NAType", "NaTType"):
        return True
    return isinstance(value, float) and math.isnan(value)


def _is_plain_scalar(value: Any) -> bool:
    if value is None or isinstance(value, (bool, int, float)):
        return True
    return type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0
