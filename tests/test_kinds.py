"""One description of each sample kind (app/kinds.py) drives inference, conversion, review and tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jupyter_mlship.capture.schema import UnsupportedSample, infer_input_schema
from jupyter_mlship.runtime import runtime_module

KINDS = runtime_module("kinds").KINDS
SAMPLES = {
    "dataframe": pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]}),
    "ndarray": np.ones((2, 3)),
    "records": [{"a": 1}, {"a": 2}],
    "strings": ["hello", "world"],
    "scalars": [1.5, 2.5],
}


def test_every_kind_has_a_converter_and_a_sample_that_infers_to_it():
    assert set(runtime_module("convert").CONVERTERS) == set(KINDS) == set(SAMPLES)
    for name, sample in SAMPLES.items():
        schema = infer_input_schema(sample)
        assert schema.kind == name
        converted = runtime_module("convert").instances_to_sample(_instances(sample), schema.model_dump())
        assert type(converted).__name__ == type(sample).__name__


def _instances(sample):
    if isinstance(sample, pd.DataFrame):
        return sample.to_dict(orient="records")
    if isinstance(sample, np.ndarray):
        return sample.tolist()
    return list(sample)


def test_an_unsupported_sample_names_every_supported_kind():
    with pytest.raises(UnsupportedSample) as error:
        infer_input_schema({1, 2, 3})
    for kind in KINDS.values():
        assert kind.sample in str(error.value)


def test_the_instance_description_follows_the_schema():
    describe = runtime_module("kinds").describe_instance
    frame = infer_input_schema(SAMPLES["dataframe"]).model_dump()
    assert describe(frame) == "one row of the sample DataFrame (2 fields)"
    assert describe(infer_input_schema(SAMPLES["ndarray"]).model_dump()) == "one row of the sample array: 3 number values"
