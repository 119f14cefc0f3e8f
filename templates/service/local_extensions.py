"""Jinja filters that turn ShipSpec schema data into Python source for the generated ``app/schema.py``.

Cookiecutter loads this module through ``_extensions`` in cookiecutter.json. The logic lives here, in
Python, so the template itself stays a readable picture of the generated file.
"""

from __future__ import annotations

import json
import keyword
import re
from pathlib import Path
from typing import Any

from jinja2.ext import Extension
from pydantic import BaseModel

INPUT_TYPES = {"integer": "StrictInt", "number": "StrictFloat", "string": "StrictStr", "boolean": "StrictBool"}
OUTPUT_TYPES = {"integer": "int", "number": "float", "string": "str", "boolean": "bool", "any": "Any"}
# Names a field must not take: pydantic's own attributes and the names the annotations use.
RESERVED_NAMES = {name for name in dir(BaseModel) if not name.startswith("_")} | {
    "Annotated", "Any", "AwareIsoDatetime", "BeforeValidator", "Field", "Literal", "NaiveIsoDatetime", "StrictBool", "StrictFloat", "StrictInt",
    "StrictStr", "BaseModel", "ConfigDict", "NotRequired", "TypedDict", "with_config",
}  # fmt: skip


def field_names(names: list[str]) -> list[str]:
    """Python identifiers for column names, unique, in order (the JSON names stay as aliases)."""
    used: set[str] = set()
    result = []
    for name in names:
        base = re.sub(r"[^0-9A-Za-z_]", "_", str(name)).lstrip("_") or "field"
        if base[0].isdigit():
            base = f"field_{base}"
        if keyword.iskeyword(base) or base in RESERVED_NAMES:
            base = f"{base}_"
        candidate, counter = base, 2
        while candidate in used:
            candidate, counter = f"{base}_{counter}", counter + 1
        used.add(candidate)
        result.append(candidate)
    return result


def input_annotation(column: dict) -> str:
    if column.get("dtype") == "category":
        annotation = f"Literal[{', '.join(repr(c) for c in column.get('categories') or [])}]"
    elif str(column.get("dtype", "")).startswith("datetime64["):
        # "datetime64[us, UTC]" holds time-zone-aware values, "datetime64[us]" naive ones.
        annotation = "AwareIsoDatetime" if "," in column["dtype"] else "NaiveIsoDatetime"
    else:
        annotation = INPUT_TYPES[column["json_type"]]
        limits = value_limits(str(column.get("dtype") or ""), column["json_type"])
        if limits:
            annotation = f"Annotated[{annotation}, Field({limits})]"
    return f"{annotation} | None" if column.get("nullable") else annotation


def value_limits(dtype: str, json_type: str) -> str:
    """Field arguments that keep a value inside what its column's dtype holds: an int8 column refuses 300
    with a 422 naming the field (not an OverflowError in the model's conversion); numbers are finite
    (pydantic's JSON reader takes NaN, Infinity and 1e400), and within float32's range for float32."""
    numpy_dtype = _numpy_dtype(dtype)
    if json_type == "integer" and numpy_dtype is not None and numpy_dtype.kind in "iu":
        import numpy as np

        info = np.iinfo(numpy_dtype)
        return f"ge={int(info.min)}, le={int(info.max)}"
    if json_type == "number":
        top = float_limit(dtype)
        return f"allow_inf_nan=False, gt={-top!r}, lt={top!r}" if top else "allow_inf_nan=False"
    return ""


def float_limit(dtype: str) -> float | None:
    """For a float dtype narrower than float64, the magnitude from which a value becomes infinite in it
    (float32: 3.4028235677973366e38, halfway past its largest value; 3.4028235e38 itself still fits), else
    None."""
    numpy_dtype = _numpy_dtype(dtype)
    if numpy_dtype is None or numpy_dtype.kind != "f" or numpy_dtype.itemsize >= 8:
        return None
    import numpy as np

    largest = np.finfo(numpy_dtype).max
    step = float(largest) - float(np.nextafter(largest, numpy_dtype.type(0)))
    return float(largest) + step / 2


def _numpy_dtype(dtype: str) -> Any:
    """numpy's dtype for a sample's dtype name (pandas' Int8, Float32 too), or None."""
    try:
        import numpy as np

        return np.dtype(dtype.lower()) if dtype else None
    except (ImportError, TypeError):
        return None


def has_datetimes(input_schema: dict) -> bool:
    return any(str(c.get("dtype", "")).startswith("datetime64[") for c in input_schema.get("columns", []))


def output_annotation(json_type: str, nullable: bool) -> str:
    annotation = OUTPUT_TYPES[json_type]
    # A float output may be NaN or infinite on inputs the sample never had; JSON sends those as null,
    # so the documented schema says so (Schemathesis' response_schema_conformance holds us to it).
    nullable = nullable or json_type == "number"
    return f"{annotation} | None" if nullable and annotation != "Any" else annotation


def model_fields(columns: list[dict], kind: str = "input") -> list[str]:
    """Lines of a pydantic model body: ``name: Type`` plus defaults and aliases where needed."""
    lines = []
    for field, column in zip(field_names([c["name"] for c in columns]), columns):
        if kind == "input":
            annotation = input_annotation(column)
        else:
            annotation = output_annotation(column["json_type"], column.get("nullable", False))
        arguments = []
        if column.get("nullable"):
            arguments.append("None")  # a nullable column may also be left out
        if field != column["name"]:
            arguments.append(f"alias={column['name']!r}")
        if not arguments:
            lines.append(f"{field}: {annotation}")
        elif arguments == ["None"]:
            lines.append(f"{field}: {annotation} = None")
        else:
            lines.append(f"{field}: {annotation} = Field({', '.join(arguments)})")
    return lines


def typed_dict_fields(columns: list[dict]) -> list[str]:
    """Entries of a functional TypedDict: ``"json name": Type,``; nullable fields may be left out, unless
    the code reads them without a default (``present``: sent as null)."""
    lines = []
    for column in columns:
        annotation = input_annotation(column)
        if column.get("nullable") and not column.get("present"):
            annotation = f"NotRequired[{annotation}]"
        lines.append(f"{str(column['name'])!r}: {annotation},")
    return lines


def pyrepr(value: Any) -> str:
    """A JSON value as Python source."""
    return repr(value)


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _kinds() -> Any:
    """The template's own app/kinds.py (the one description of each sample kind)."""
    import importlib.util

    path = Path(__file__).resolve().parent / "{{cookiecutter.name}}" / "app" / "kinds.py"
    import sys

    name = "_mlship_template_kinds"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    return sys.modules[name]


def describe_instance(input_schema: dict) -> str:
    return _kinds().describe_instance(input_schema)


class PythonSourceExtension(Extension):
    def __init__(self, environment):
        super().__init__(environment)
        environment.filters.update(
            field_names=field_names,
            has_datetimes=has_datetimes,
            input_annotation=input_annotation,
            float_limit=float_limit,
            output_annotation=output_annotation,
            model_fields=model_fields,
            typed_dict_fields=typed_dict_fields,
            pyrepr=pyrepr,
            pretty_json=pretty_json,
            describe_instance=describe_instance,
        )
