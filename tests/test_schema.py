"""The sample fixes the request schema, and its instances turn back into exactly the sample."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from jupyter_mlship.runtime import runtime_module
from jupyter_mlship.capture.schema import (
    UnsupportedSample,
    infer_input_schema,
    infer_output_schema,
    make_golden,
    sample_difference,
    sample_to_instances,
)

convert = runtime_module("convert")


def round_trip(sample):
    schema = infer_input_schema(sample)
    instances = sample_to_instances(sample, schema)
    assert instances == convert.json_value(instances), "instances must be plain JSON values"
    return schema, instances, convert.instances_to_sample(instances, schema.model_dump())


def assert_same_frame(expected: pd.DataFrame, actual: pd.DataFrame) -> None:
    assert list(actual.columns) == list(expected.columns)
    assert actual.dtypes.to_dict() == expected.dtypes.to_dict()
    pd.testing.assert_frame_equal(actual, expected.reset_index(drop=True), check_exact=True)
    assert sample_difference(expected, actual) is None


MIXED = pd.DataFrame(
    {
        "age": [31, 45, 27],
        "income": [120.5, np.nan, 80.0],
        "plan": pd.Categorical(["basic", None, "plus"], categories=["basic", "plus", "gold"]),
        "city": ["Oslo", None, "Lima"],  # pandas 3: the str dtype, NaN for missing
        "member": [True, False, True],
        "note": pd.Series(["a", None, "c"], dtype=object, index=[10, 11, 12]),  # object column holding None
        "2nd col!": [1.5, 2.5, 3.5],  # not an identifier
        "class": [0, 1, 0],  # a Python keyword
        "level": pd.Categorical([1, 2, 1]),  # integer categories
    },
    index=[10, 11, 12],
)


def test_dataframe_round_trip_keeps_columns_dtypes_and_missing_values():
    schema, instances, rebuilt = round_trip(MIXED)
    assert_same_frame(MIXED, rebuilt)
    assert instances[1]["income"] is None and instances[1]["city"] is None and instances[1]["plan"] is None
    assert rebuilt["note"].tolist() == ["a", None, "c"]  # None stays None in an object column
    assert math.isnan(rebuilt["city"].tolist()[1])


def test_dataframe_schema_describes_each_column():
    columns = {c.name: c for c in infer_input_schema(MIXED).columns}
    assert [c for c in columns] == list(MIXED.columns)
    assert (columns["age"].json_type, columns["age"].dtype, columns["age"].nullable) == ("integer", "int64", False)
    assert (columns["income"].json_type, columns["income"].nullable, columns["income"].missing) == ("number", True, "nan")
    assert (columns["plan"].dtype, columns["plan"].categories) == ("category", ["basic", "plus", "gold"])
    assert (columns["city"].dtype, columns["city"].json_type, columns["city"].missing) == ("str", "string", "nan")
    assert (columns["note"].dtype, columns["note"].missing) == ("object", "none")
    assert columns["member"].json_type == "boolean"
    assert columns["level"].json_type == "integer" and columns["level"].categories == [1, 2]


def test_integer_column_receiving_null_becomes_float64_like_pandas():
    sample = pd.DataFrame({"n": [1, 2, 3], "x": [0.5, 0.5, 0.5]})
    schema = infer_input_schema(sample, accepts_missing=lambda variant: True)
    assert schema.columns[0].nullable and schema.columns[0].missing == "nan"
    rebuilt = convert.instances_to_sample([{"n": None, "x": 1.0}, {"n": 4, "x": 2.0}], schema.model_dump())
    by_pandas = pd.DataFrame({"n": [np.nan, 4], "x": [1.0, 2.0]})
    assert rebuilt.dtypes.to_dict() == by_pandas.dtypes.to_dict()
    pd.testing.assert_frame_equal(rebuilt, by_pandas)
    # Without nulls the column stays int64.
    assert convert.instances_to_sample([{"n": 4, "x": 2.0}], schema.model_dump())["n"].dtype == np.int64


def test_accepts_missing_is_asked_with_the_column_set_to_missing():
    sample = pd.DataFrame({"a": [1.0, 2.0], "b": [3, 4], "s": ["x", "y"]})
    seen = {}

    def accepts_missing(variant: pd.DataFrame) -> bool:
        missing = [name for name in variant.columns if variant[name].isna().all()]
        assert len(missing) == 1 and len(variant) == 2
        seen[missing[0]] = str(variant[missing[0]].dtype)
        return missing[0] != "b"

    schema = infer_input_schema(sample, accepts_missing=accepts_missing)
    assert seen == {"a": "float64", "b": "float64", "s": "str"}
    assert [c.nullable for c in schema.columns] == [True, False, True]


def test_accepts_missing_that_raises_means_no():
    def refuses(variant):
        raise ValueError("Input contains NaN")

    schema = infer_input_schema(np.array([[1.0, 2.0]]), accepts_missing=refuses)
    assert schema.nullable is False


def test_reference_data_makes_a_column_nullable():
    sample = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    reference = pd.DataFrame({"a": [np.nan, 1.0], "b": ["x", "z"]})
    schema = infer_input_schema(sample, reference=reference)
    assert [c.nullable for c in schema.columns] == [True, False]


def test_nullable_extension_and_datetime_columns_round_trip():
    sample = pd.DataFrame(
        {
            "count": pd.array([1, None, 3], dtype="Int64"),
            "name": pd.array(["a", None, "c"], dtype="string"),
            "flag": pd.array([True, None, False], dtype="boolean"),
            "when": pd.to_datetime(["2024-01-01 10:00", None, "2024-03-05 00:00:00.250"], format="ISO8601"),
            "when_utc": pd.to_datetime(["2024-01-01 10:00", "2024-02-01 00:00", None], utc=True).tz_convert("Europe/Oslo"),
        }
    )
    schema, instances, rebuilt = round_trip(sample)
    assert instances[0]["when"] == "2024-01-01T10:00:00"
    assert_same_frame(sample, rebuilt)


def test_bool_column_with_a_missing_value_is_object_like_pandas():
    sample = pd.DataFrame({"b": [True, None, False]})
    assert sample["b"].dtype == object
    schema, _, rebuilt = round_trip(sample)
    assert schema.columns[0].json_type == "boolean" and schema.columns[0].missing == "none"
    assert_same_frame(sample, rebuilt)


@pytest.mark.parametrize(
    "array",
    [
        np.array([[1.0, np.nan], [3.0, 4.5]]),
        np.array([[1, 2], [3, 4]], dtype=np.int32),
        np.array([[1.5, 2.5]], dtype=np.float32),
        np.array([[True, False]]),
        np.array([["a", "bc"]]),
    ],
)
def test_ndarray_round_trip(array):
    schema, instances, rebuilt = round_trip(array)
    assert schema.kind == "ndarray" and schema.width == array.shape[1] and schema.dtype == str(array.dtype)
    assert rebuilt.dtype == array.dtype and rebuilt.shape == array.shape
    np.testing.assert_array_equal(rebuilt, array)
    assert schema.nullable == bool(array.dtype.kind == "f" and np.isnan(array).any())


def test_ndarray_nullable_by_probe_puts_nan_in():
    seen = []
    schema = infer_input_schema(
        np.array([[1, 2], [3, 4]]), accepts_missing=lambda v: seen.append(v) or True
    )
    assert schema.nullable
    assert seen[0].dtype == np.float64 and np.isnan(seen[0][0]).all()
    rebuilt = convert.instances_to_sample([[None, 1], [2, 3]], schema.model_dump())
    assert rebuilt.dtype == np.float64 and math.isnan(rebuilt[0, 0])


def test_strings_records_and_scalars_round_trip():
    texts = ["good film", "bad", None]
    schema, _, rebuilt = round_trip(texts)
    assert (schema.kind, schema.json_type, schema.nullable) == ("strings", "string", True)
    assert rebuilt == texts

    records = [{"a": 1, "b": "x"}, {"a": 2, "b": None, "c": 1.5}, {"a": 3, "b": "z", "c": float("nan")}]
    schema, instances, rebuilt = round_trip(records)
    assert schema.kind == "records"
    assert [(c.name, c.json_type, c.nullable) for c in schema.columns] == [
        ("a", "integer", False), ("b", "string", True), ("c", "number", True)
    ]  # fmt: skip
    assert "c" not in instances[0] and instances[2]["c"] is None
    assert sample_difference(records, rebuilt) is None

    for scalars in ([1.5, float("nan"), 3.0], [1, 2, 3], np.array([0.5, np.nan]), np.array([1, 2], dtype=np.int16)):
        schema, _, rebuilt = round_trip(scalars)
        assert schema.kind == "scalars"
        assert sample_difference(scalars, rebuilt) is None, scalars


@pytest.mark.parametrize(
    ("sample", "words"),
    [
        ({"a": 1}, ["dict", "DataFrame"]),
        (pd.Series([1, 2]), ["Series", "to_frame"]),
        (np.zeros((2, 2, 2)), ["3-D"]),
        ([], ["empty"]),
        (pd.DataFrame({"a": []}), ["empty"]),
        (np.zeros((0, 3)), ["empty"]),
        (pd.DataFrame({"mixed": pd.Series([1, "a"], dtype=object)}), ["'mixed'", "mixes"]),
        (pd.DataFrame({0: [1.0]}), ["strings"]),
        (pd.DataFrame({"gone": pd.Series([None, None], dtype=object)}), ["'gone'", "only missing"]),
        (pd.DataFrame({"d": pd.to_timedelta([1], unit="s")}), ["'d'", "timedelta"]),
        ([object()], ["object"]),
        ("just a string", ["str"]),
    ],
)
def test_unsupported_samples_are_refused_in_one_sentence(sample, words):
    with pytest.raises(UnsupportedSample) as caught:
        infer_input_schema(sample)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_output_schema_from_results():
    assert infer_output_schema(np.array([0.1, 0.9]), 2).model_dump(include={"kind", "json_type", "nullable"}) == {
        "kind": "scalar", "json_type": "number", "nullable": True,
    }  # fmt: skip
    vector = infer_output_schema(np.array([[0.1, 0.9], [0.5, 0.5]]), 2)
    assert (vector.kind, vector.width, vector.container) == ("vector", 2, "numpy.ndarray")
    labels = infer_output_schema(pd.Series(["a", "b"]), 2)
    assert (labels.kind, labels.json_type, labels.nullable, labels.container) == ("scalar", "string", False, "pandas.Series")
    record = infer_output_schema(pd.DataFrame({"p": [0.5, 0.2], "label": [1, 0]}), 2)
    assert record.kind == "record" and [(c.name, c.json_type) for c in record.columns] == [
        ("p", "number"), ("label", "integer")
    ]  # fmt: skip
    assert infer_output_schema([True, False], 2).json_type == "boolean"
    with pytest.raises(ValueError, match="3 predictions for 2 instances"):
        infer_output_schema(np.array([1, 2, 3]), 2)


def test_golden_has_plain_json_predictions():
    sample = MIXED
    result = np.array([0.25, np.inf, 1.0], dtype=np.float32)
    golden = make_golden(sample, result, infer_input_schema(sample), infer_output_schema(result, 3))
    assert golden.predictions == [0.25, None, 1.0]
    assert golden.instances[0]["2nd col!"] == 1.5
    assert type(golden.instances[0]["age"]) is int


def test_outputs_to_json_and_compare_predictions():
    class FakeTensor:  # duck-typed like torch: detach().cpu().numpy()
        def detach(self):
            return self

        def cpu(self):
            return self

        def numpy(self):
            return np.array([[1.0, np.nan]])

    assert convert.outputs_to_json(FakeTensor(), {}, 1) == [[1.0, None]]
    assert convert.outputs_to_json([np.int64(3), np.bool_(True)], {}, 2) == [3, True]
    assert convert.compare_predictions([1, 0.5, "a", None], [1, 0.5 + 1e-9, "a", None], 1e-6) == []
    problems = convert.compare_predictions([1, 0.5, "a", True, [1.0]], [2, 0.6, "b", 1, [None]], 1e-6)
    assert [p.split(":")[0] for p in problems] == [
        "prediction 0", "prediction 1", "prediction 2", "prediction 3", "prediction 4[0]",
    ]  # fmt: skip
    assert convert.compare_predictions([1], [1, 2], 1e-6) == ["expected 1 predictions, got 2"]


def test_output_types_come_from_the_dtype_where_the_sample_cannot_tell():
    frame = pd.DataFrame({"total": [1.5, 2.5], "discount": [np.nan, np.nan], "flag": pd.array([True, False], dtype="boolean")})
    columns = {c.name: (c.json_type, c.nullable) for c in infer_output_schema(frame, 2).columns}
    # NaN on every sample row is still a number; a pandas nullable dtype may answer null on other rows.
    assert columns == {"total": ("number", True), "discount": ("number", True), "flag": ("boolean", True)}
    counts = infer_output_schema(pd.Series([1, 2], dtype="Int64"), 2)
    assert (counts.json_type, counts.nullable) == ("integer", True)
    plain = infer_output_schema(np.array([1, 2]), 2)
    assert (plain.json_type, plain.nullable) == ("integer", False)


def test_time_outputs_are_iso_strings_at_their_precision_and_time_differences_are_refused():
    stamps = np.array(["2024-05-25T02:23:16.947426539", "NaT"], dtype="datetime64[ns]")
    assert convert.result_rows(stamps) == ["2024-05-25T02:23:16.947426539", None]
    assert convert.result_rows(pd.Series(stamps)) == ["2024-05-25T02:23:16.947426539", None]
    schema = infer_output_schema(pd.Series(stamps), 2)
    assert (schema.json_type, schema.nullable) == ("string", True)
    with pytest.raises(ValueError, match="total_seconds"):
        convert.result_rows(np.array([1, 2], dtype="timedelta64[us]"))


def test_times_finer_than_a_microsecond_are_refused_with_the_fix():
    fine = pd.DataFrame({"at": pd.to_datetime([1.7e9 + 0.123456789], unit="s")})
    assert fine["at"].dt.nanosecond.iloc[0] != 0
    with pytest.raises(UnsupportedSample, match=r"finer than a microsecond.*dt.floor\('us'\)"):
        infer_input_schema(fine)
    infer_input_schema(fine.assign(at=fine["at"].dt.floor("us")))  # rounded: accepted


def test_python_backed_string_columns_keep_their_storage():
    sample = pd.DataFrame({"segment": pd.array(["a", None, "c"], dtype="string[python]")})
    schema, _, rebuilt = round_trip(sample)
    assert schema.columns[0].dtype == "string[python]"
    assert_same_frame(sample, rebuilt)
