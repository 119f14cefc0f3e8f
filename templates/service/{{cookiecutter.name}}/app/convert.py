"""Conversions between the JSON of a request and the Python objects the notebook code works with.

The entry function was written against the notebook's sample (a DataFrame, a 2-D array, a list of
strings...). Each request's instances are turned back into exactly that type -- same columns, order,
dtypes and missing-value markers -- so the service predicts what the notebook predicted. Results go
the other way: arrays, Series, DataFrames, tensors and numpy scalars become plain JSON values.

This module is plain runtime code: jupyter-mlship imports this same file inside the notebook kernel to
build the golden test, so kernel and service share one implementation. numpy and pandas are imported
only when the input kind needs them, because a service for a pure-Python model may have neither.
"""

from __future__ import annotations

import datetime as _datetime
import functools
import itertools
import math
import sys
from typing import Any, Callable

MISSING_MARKERS = {"nan": float("nan"), "none": None}
MAX_REPORTED_MISMATCHES = 20


# --- requests: JSON instances -> the sample's type ---------------------------------------------------


def sample_converter(input_schema: dict) -> Callable[[list], Any]:
    """Build, once, the function that turns a list of validated JSON instances into the sample's type.

    The service calls this at start-up so that per-request work is only the conversion itself.
    """
    kind = input_schema["kind"]
    if kind not in CONVERTERS:
        raise ValueError(f"unknown input kind {kind!r}; known: {', '.join(CONVERTERS)}")
    return CONVERTERS[kind](input_schema)


def instances_to_sample(instances: list, input_schema: dict) -> Any:
    """Turn JSON instances into the sample's type (see ``sample_converter``, which caches the set-up)."""
    return sample_converter(input_schema)(instances)


# What a JSON number or whitespace is made of: a numbers-only body without them is its brackets and commas.
_NUMBER_BYTES = b"0123456789.eE+- \t\r\n"


def float_rows(body: bytes, width: int, limit: float | None = None) -> Any | None:
    """``{"instances": [[number, ...], ...]}`` straight to a float64 matrix of ``width`` columns, else None.

    The usual body of an array model, parsed once into one numpy array, which the converter, the batcher
    and monitoring then take as it is: no per-value validation and no list of lists to copy twice. Any
    other body (a null, a string, NaN, another key, a ragged row, a number the parsers refuse) gives None,
    and the schema's strict validation decides and names the problem, as for every kind; so does a value
    beyond ``limit`` (the range of a float32 model's input).

    The shape is checked on the bytes: with the numbers and whitespace taken out, the body must be exactly
    the brackets and commas of a rows x ``width`` matrix (a letter, quote or brace left over is a value of
    another type). The numbers are then read by simdjson straight into a buffer of doubles where it is
    installed (no Python float per value), else by orjson; both round each number to the nearest float64,
    as pydantic does, and a number simdjson refuses (an integer beyond 64 bits) is left to orjson."""
    import numpy as np

    key, _, rest = body.partition(b":")
    rest = rest.rstrip()
    array = rest[:-1]
    if b"".join(key.split()) != b'{"instances"' or rest[-1:] != b"}":
        return None
    skeleton = array.translate(None, _NUMBER_BYTES)
    count = skeleton.count(b"[") - 1
    # the length first: the pattern is only built for a body as long as it (a body of brackets alone
    # must not make a pattern of rows x width bytes)
    if count < 1 or len(skeleton) != count * (width + 2) + 1 or skeleton != _matrix_skeleton(count, width):
        return None
    values = _simdjson_floats(array, count * width)
    if values is None:
        values = _orjson_floats(array, count * width)
    if values is None or limit is not None and not (np.abs(values) < limit).all():
        return None  # infinite as float32: validation names it
    return values.reshape(count, width)


@functools.lru_cache(maxsize=64)
def _matrix_skeleton(rows: int, width: int) -> bytes:
    """The brackets and commas of a JSON matrix of ``rows`` x ``width`` numbers."""
    row = b"[" + b"," * (width - 1) + b"]"
    return b"[" + b",".join([row] * rows) + b"]"


def _simdjson_floats(array: bytes, count: int) -> Any | None:
    """The numbers of a numbers-only JSON array of arrays, flat, as float64 (a writable copy: the entry
    function may change its input in place); None where simdjson is missing or refuses a number."""
    try:
        import numpy as np
        import simdjson
    except ImportError:
        return None
    try:
        values = np.frombuffer(simdjson.Parser().parse(array).as_buffer(of_type="d"), np.float64).copy()
    except Exception:  # noqa: BLE001  malformed or out-of-range numbers: orjson and validation decide
        return None
    return values if len(values) == count else None


def _orjson_floats(array: bytes, count: int) -> Any | None:
    try:
        import numpy as np
        import orjson

        rows = orjson.loads(array)
        # One pass over the values (np.array would first walk the lists to find their shape).
        return np.fromiter(itertools.chain.from_iterable(rows), dtype=np.float64, count=count)
    except (ImportError, ValueError, TypeError, OverflowError):  # orjson.JSONDecodeError is a ValueError
        return None


def join_instances(parts: list) -> Any:
    """Several requests' instances as one: a list, or one float matrix where ``float_rows`` made any part.

    A part that came through validation instead (a nullable row with a null) joins as floats, None
    as NaN: what the array converter makes of it anyway."""
    if len(parts) == 1:
        return parts[0]
    numpy = sys.modules.get("numpy")
    if numpy is not None and any(isinstance(part, numpy.ndarray) for part in parts):
        return numpy.concatenate([numpy.asarray(part, dtype=numpy.float64) for part in parts])
    return [instance for part in parts for instance in part]


def _missing_value(column: dict) -> Any:
    return MISSING_MARKERS[column.get("missing") or "nan"]


def _dataframe_converter(columns: list[dict]) -> Callable[[list], Any]:
    import pandas as pd

    builders = [(column["name"], _column_builder(column)) for column in columns]

    def to_dataframe(instances: list) -> Any:
        return pd.DataFrame(
            {name: build([instance.get(name) for instance in instances]) for name, build in builders}
        )

    return to_dataframe


def _column_builder(column: dict) -> Callable[[list], Any]:
    """One column's values (None for missing) -> an array with the sample's dtype."""
    import numpy as np
    import pandas as pd

    dtype_name = column["dtype"]
    missing = _missing_value(column)

    if dtype_name == "category":
        categories = pd.CategoricalDtype(pd.Index(column["categories"] or []))
        return lambda values: pd.Categorical(values, dtype=categories)

    dtype = pd.api.types.pandas_dtype(dtype_name)
    # Date-times: ISO 8601 strings (kernel) or datetime objects (pydantic) both parse; None becomes NaT.
    if isinstance(dtype, pd.DatetimeTZDtype):
        return lambda values: pd.to_datetime(values, format="ISO8601", utc=True).tz_convert(dtype.tz).astype(dtype)
    if isinstance(dtype, np.dtype) and dtype.kind == "M":
        return lambda values: pd.to_datetime(values, format="ISO8601").astype(dtype)
    if not isinstance(dtype, np.dtype):
        # Extension dtypes (str, string, Int64, boolean, Float64...) handle None themselves.
        return lambda values: pd.array(values, dtype=dtype)
    if dtype.kind in "iu":
        return lambda values: _int_array(values, dtype)
    if dtype.kind == "f":
        return lambda values: np.array(values, dtype=dtype)  # numpy turns None into NaN
    if dtype.kind == "b":
        return lambda values: _bool_array(values, missing)
    return lambda values: _object_column(values, missing)


def _int_array(values: list, dtype: Any) -> Any:
    import numpy as np

    try:
        return np.array(values, dtype=dtype)
    except TypeError:
        # A null in an integer column: pandas would hold that column as float64 with NaN.
        return np.array(values, dtype="float64")


def _bool_array(values: list, missing: Any) -> Any:
    import numpy as np

    if any(value is None for value in values):
        # pandas keeps a boolean column with a missing value as object dtype.
        return _object_column(values, missing)
    return np.array(values, dtype=bool)


def _object_column(values: list, missing: Any) -> Any:
    import pandas as pd

    if missing is not None:
        values = [missing if v is None else v for v in values]
    # A Series, not an array: pandas 3 would turn an object array of strings into its str dtype.
    return pd.Series(values, dtype=object)


def _ndarray_converter(schema: dict) -> Callable[[list], Any]:
    import numpy as np

    dtype = np.dtype(schema["dtype"])
    nullable = schema.get("nullable", False)
    if dtype.kind in "iu":
        return lambda instances: _int_array(instances, dtype)
    if dtype.kind == "f":
        return lambda instances: np.array(instances, dtype=dtype)
    if dtype.kind in "US":
        # Let numpy size the strings from the request: the sample's width would truncate longer ones.
        kind = dtype.kind

        def strings(instances: list) -> Any:
            if nullable and any(v is None for row in instances for v in row):
                return np.array(instances, dtype=object)
            return np.array(instances, dtype=kind)

        return strings
    if dtype.kind == "b":

        def booleans(instances: list) -> Any:
            if nullable and any(v is None for row in instances for v in row):
                return np.array([[math.nan if v is None else v for v in row] for row in instances], dtype=object)
            return np.array(instances, dtype=bool)

        return booleans
    return lambda instances: np.array(instances, dtype=object)


def _records_converter(columns: list[dict]) -> Callable[[list], Any]:
    """Records as dicts; a null becomes NaN or the field left out where the column's ``missing`` says so
    (a field left out in the request stays left out)."""
    nan_fields = [c["name"] for c in columns if c.get("nullable") and c.get("missing") == "nan"]
    absent_fields = [c["name"] for c in columns if c.get("nullable") and c.get("missing") == "absent"]
    if not nan_fields and not absent_fields:
        return lambda instances: [dict(instance) for instance in instances]

    def records(instances: list) -> list:
        converted = []
        for instance in instances:
            record = dict(instance)
            for name in nan_fields:
                if name in record and record[name] is None:
                    record[name] = math.nan
            for name in absent_fields:
                if name in record and record[name] is None:
                    del record[name]
            converted.append(record)
        return converted

    return records


def _scalars_converter(schema: dict) -> Callable[[list], Any]:
    if schema.get("dtype"):  # the sample was a 1-D numpy array
        import numpy as np

        dtype = np.dtype(schema["dtype"])
        if dtype.kind in "iu":
            return lambda instances: _int_array(instances, dtype)
        if dtype.kind in "US":
            return lambda instances: np.array(instances, dtype=dtype.kind)
        return lambda instances: np.array(instances, dtype=dtype)
    if schema.get("json_type") == "number":
        # A list of floats: missing values were NaN in the sample, sent as null.
        return lambda instances: [math.nan if v is None else v for v in instances]
    return list


# One converter per kind of sample (app/kinds.py describes the kinds; a test keeps the two in step).
CONVERTERS: dict[str, Callable[[dict], Callable[[list], Any]]] = {
    "dataframe": lambda schema: _dataframe_converter(schema["columns"]),
    "ndarray": lambda schema: _ndarray_converter(schema),
    "records": lambda schema: _records_converter(schema["columns"]),
    "strings": lambda schema: list,
    "scalars": lambda schema: _scalars_converter(schema),
}


# --- results -> JSON ---------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """One value as plain JSON: numpy scalars become Python, NaN/inf/NA/NaT become None."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str(value)  # numpy.str_ too
    module = type(value).__module__
    if module == "numpy" and hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalar -> Python scalar
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, (_datetime.datetime, _datetime.date, _datetime.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v) for v in value]
    if hasattr(value, "tolist"):  # numpy arrays inside a list or a record
        return json_value(value.tolist())
    if hasattr(value, "__float__"):  # Decimal, numpy longdouble...
        return json_value(float(value))
    raise TypeError(f"a value of type {type(value).__name__} cannot be sent as JSON")


def _array_rows(array: Any) -> list:
    import numpy as np

    if array.ndim == 0:
        raise ValueError("the entry function returned a single value, not one per instance")
    if array.dtype.kind in "iub":
        return array.tolist()  # cannot hold NaN: no per-value work
    if array.dtype.kind == "f" and np.isfinite(array).all():
        return array.tolist()
    if array.dtype.kind == "M":  # ISO 8601 at the array's own precision (tolist gives integers for ns)
        text = np.datetime_as_string(array)
        return np.where(np.isnat(array), None, text).tolist()
    if array.dtype.kind == "m":
        raise ValueError("the entry function returned time differences (timedelta64), which JSON has no type "
                         "for; return numbers, e.g. .dt.total_seconds()")
    return json_value(array.tolist())


def result_rows(result: Any) -> list:
    """The entry function's result as a list of JSON values, one per instance."""
    if hasattr(result, "detach") and hasattr(result, "cpu"):  # torch tensor, without importing torch
        result = result.detach().cpu().numpy()
    module = type(result).__module__.split(".")[0]
    if module == "numpy" and hasattr(result, "ndim"):
        return _array_rows(result)
    if module == "pandas":
        if hasattr(result, "columns"):  # DataFrame: one record per row
            names = [str(name) for name in result.columns]
            return [
                {name: json_value(v) for name, v in zip(names, row)}
                for row in result.itertuples(index=False, name=None)
            ]
        if hasattr(result, "to_numpy"):  # Series, Index, Categorical...
            values = result.to_numpy()
            return _array_rows(values) if values.dtype != object else json_value(values.tolist())
    if isinstance(result, (list, tuple)):
        return json_value(list(result))
    raise ValueError(
        f"the entry function returned {type(result).__name__}; expected an array, a pandas Series or "
        "DataFrame, a list or a tensor with one element per instance"
    )


def outputs_to_json(result: Any, output_schema: dict, n: int) -> list:
    """The result as JSON predictions; a ValueError when it does not hold one row per instance."""
    rows = result_rows(result)
    if len(rows) != n:
        raise ValueError(f"the entry function returned {len(rows)} predictions for {n} instances")
    return rows


# --- comparing predictions (golden test, start-up self-check) ----------------------------------------


def compare_predictions(expected: list, actual: list, rel_tol: float) -> list[str]:
    """Human-readable differences: exact for ints, strings and bools, relative tolerance for floats."""
    if len(expected) != len(actual):
        return [f"expected {len(expected)} predictions, got {len(actual)}"]
    problems: list[str] = []
    for index, (want, got) in enumerate(zip(expected, actual)):
        _compare(want, got, f"prediction {index}", rel_tol, problems)
    if len(problems) > MAX_REPORTED_MISMATCHES:
        extra = len(problems) - MAX_REPORTED_MISMATCHES
        problems = problems[:MAX_REPORTED_MISMATCHES] + [f"... and {extra} more differences"]
    return problems


def _compare(want: Any, got: Any, where: str, rel_tol: float, problems: list[str]) -> None:
    if isinstance(want, dict) and isinstance(got, dict):
        if list(want) != list(got):
            problems.append(f"{where}: expected keys {list(want)}, got {list(got)}")
            return
        for key in want:
            _compare(want[key], got[key], f"{where}.{key}", rel_tol, problems)
        return
    if isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            problems.append(f"{where}: expected {len(want)} values, got {len(got)}")
            return
        for index, (w, g) in enumerate(zip(want, got)):
            _compare(w, g, f"{where}[{index}]", rel_tol, problems)
        return
    if _is_number(want) and _is_number(got):
        if isinstance(want, int) and isinstance(got, int):
            same = want == got
        else:
            # abs_tol: values that are zero in one run and 1e-17 in the other are the same prediction.
            same = math.isclose(want, got, rel_tol=rel_tol, abs_tol=1e-12)
        if not same:
            problems.append(f"{where}: expected {want!r}, got {got!r} (relative tolerance {rel_tol:g})")
        return
    if type(want) is not type(got) or want != got:
        problems.append(f"{where}: expected {want!r}, got {got!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
