"""The kinds of sample a service is built from: one description of each, read wherever kinds matter.

jupyter-mlship reads this same file in the notebook kernel (schema inference names the supported
samples with it, the review and the generated app/schema.py describe an instance with it); the service
and its tests read it at run time (app/convert.py builds one converter per kind, the bad-input tests
shape their requests by it). Plain Python, no dependencies.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SampleKind:
    name: str
    sample: str  # what the notebook's sample is
    instance: str  # what one instance of a request is
    shape: str  # the JSON of one instance: "object" (named fields), "array" (fixed width) or "value"


KINDS = {
    kind.name: kind
    for kind in (
        SampleKind("dataframe", "a pandas DataFrame", "one row of the sample DataFrame", "object"),
        SampleKind("ndarray", "a 2-D numpy array", "one row of the sample array", "array"),
        SampleKind("records", "a list of dicts", "one record (a JSON object) like those of the sample", "object"),
        SampleKind("strings", "a list of str", "one string", "value"),
        SampleKind("scalars", "a 1-D numpy array or a list of numbers", "one value", "value"),
    )
}


def supported_samples() -> str:
    names = [kind.sample for kind in KINDS.values()]
    return ", ".join(names[:-1]) + " or " + names[-1]


def describe_instance(input_schema: dict) -> str:
    """What one instance of a request is, e.g. "one row of the sample DataFrame (12 columns)"."""
    kind = KINDS[input_schema["kind"]]
    if kind.shape == "object" and input_schema.get("columns"):
        return f"{kind.instance} ({len(input_schema['columns'])} fields)"
    if kind.shape == "array":
        return f"{kind.instance}: {input_schema.get('width')} {input_schema.get('json_type')} values"
    if kind.name == "scalars":
        return f"one {input_schema.get('json_type')} value"
    return kind.instance
