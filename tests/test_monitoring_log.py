"""The inference log writer in-process (the service's own app/inference_log.py): a full queue drops and
counts, files rotate, every file on disk is complete, and stop() writes everything queued."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from jupyter_mlship.runtime import runtime_module

monitoring = runtime_module("monitoring")
inference_log = runtime_module("inference_log")
SCHEMA = {"kind": "dataframe", "columns": [{"name": "a", "dtype": "float64", "json_type": "number"},
                                           {"name": "d", "dtype": "object", "json_type": "string"}]}


def checked(n: int):
    instances = [{"a": float(i), "d": "x"} for i in range(n)]
    return monitoring.Checked(instances, monitoring.instance_features(instances, SCHEMA), {}, [])


def writer(root, **options):
    settings = dict(feature_columns={"a": "numeric", "d": "categorical"}, hashed=set(), excluded=set(),
                    category_key=monitoring.category_key,
                    flush_s=3600, queue_rows=1000, rotate_rows=100_000, rotate_bytes=2**30, rotate_s=3600)
    settings.update(options)
    return inference_log.InferenceLog(str(root), **settings)


def test_a_full_queue_drops_rows_and_counts_them(tmp_path):
    log = writer(tmp_path, queue_rows=10)  # not started yet: as if the writer could not keep up
    assert log.put_predictions("r1", "demo", "1", checked(8), [0] * 8, 0.001) == 0
    assert log.put_predictions("r2", "demo", "1", checked(5), [0] * 5, 0.001) == 5  # would pass 10: dropped
    assert log.put_outcomes("demo", "1", [("r1", 1), ("r2", 0)]) == 0
    log.start()
    log.stop()
    status = log.status()
    assert status["rows_dropped"] == {"predictions": 5, "outcomes": 0}
    assert status["rows_written"] == {"predictions": 8, "outcomes": 2}
    assert pq.read_table(tmp_path / "predictions").column("request_id").to_pylist() == ["r1"] * 8


def test_files_rotate_by_rows_and_each_flush_leaves_complete_files_only(tmp_path):
    log = writer(tmp_path, rotate_rows=20)
    log.start()
    for i in range(10):
        log.put_predictions(f"r{i}", "demo", "1", checked(7), [1] * 7, 0.002)
        log.flush()  # what the thread does every MLSHIP_LOG_FLUSH_S
    log.stop()
    files = sorted((tmp_path / "predictions").glob("date=*/*.parquet"))
    # a file takes a flush's rows while it stays under 20 rows; 14 + 7 would not, so they start the next
    assert [pq.read_table(f).num_rows for f in files] == [14, 14, 14, 14, 14]
    assert not list(tmp_path.rglob("*.tmp"))  # temporary names were all renamed into place
    table = pq.read_table(tmp_path / "predictions")
    assert table.num_rows == 70 and table.column("feature.a").type == "double"


def test_text_and_wide_arrays_are_profiled_by_length_and_norm():
    import numpy as np

    from jupyter_mlship.capture.reference import reference_profile
    from jupyter_mlship.capture.schema import infer_input_schema

    texts = ["short", "a bit longer", None, "the longest text of them all"]
    profile = reference_profile(texts, infer_input_schema(texts))
    assert list(profile["features"]) == ["length"]
    assert profile["features"]["length"]["null_rate"] == 0.25 and profile["features"]["length"]["max"] == 28
    pixels = np.random.default_rng(0).random((200, 64))
    profile = reference_profile(pixels, infer_input_schema(pixels))
    assert list(profile["features"]) == ["l2_norm", "mean"]  # 64 positions are summarised, not watched one by one
    assert profile["features"]["mean"]["min"] == pytest.approx(pixels.mean(axis=1).min())
    narrow = pixels[:, :3]
    assert list(reference_profile(narrow, infer_input_schema(narrow))["features"]) == ["x0", "x1", "x2"]


def test_mlship_monitor_reads_a_log_since_a_time_and_names_a_missing_log(tmp_path):
    import datetime as dt

    from jupyter_mlship.monitor.report import MonitorError, build_report, parse_since
    from support.notebooks import mlship

    log = writer(tmp_path / "logs")
    log.start()
    log.put_predictions("r1", "demo", "2", checked(3), [1, 0, 1], 0.004)
    log.put_outcomes("demo", "2", [("r1", [1, 1, 1])])  # one outcome per instance
    log.stop()
    report = build_report(str(tmp_path / "logs"))
    (row,) = report.rows
    assert (row.version, row.instances, row.labelled) == ("2", 3, 3)
    assert row.metrics["accuracy"] == pytest.approx(2 / 3)
    assert build_report(str(tmp_path / "logs"), since="1h").predictions == 3
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1)
    assert build_report(str(tmp_path / "logs"), since=later.isoformat()).predictions == 0
    assert parse_since("7d", now=dt.datetime(2026, 11, 8, tzinfo=dt.timezone.utc)).day == 1
    with pytest.raises(MonitorError, match="--since 'yesterday'"):
        parse_since("yesterday")
    result = mlship("monitor", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "no inference log here (no predictions/date=*/*.parquet files)" in result.stderr


LOG_TO_A_FOLDER = """
import sys
from jupyter_mlship.runtime import runtime_module
monitoring, inference_log = runtime_module("monitoring"), runtime_module("inference_log")
log = inference_log.InferenceLog({root!r}, feature_columns={{"a": "numeric"}}, hashed=set(), excluded=set(),
    category_key=monitoring.category_key, flush_s=3600, queue_rows=1000, rotate_rows=1000, rotate_bytes=2**30,
    rotate_s=3600)
instances = [{{"a": 1.0}}, {{"a": 2.0}}]
schema = {{"kind": "dataframe", "columns": [{{"name": "a", "dtype": "float64", "json_type": "number"}}]}}
log.put_predictions("r1", "demo", "1", monitoring.Checked(instances, monitoring.instance_features(instances, schema),
                    {{}}, []), [0, 1], 0.001)
print(log.flush(), log.flush(), "fsspec" in sys.modules, log.root)
"""


def test_a_folder_log_needs_no_fsspec_and_a_flush_says_how_many_rows_it_took(tmp_path):
    """A folder (the default) is written without importing fsspec (30 ms of the service's start); a relative
    folder is resolved once, as fsspec would. flush() returns the rows it took (the writer trims memory
    after quiet flushes by it)."""
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-c", LOG_TO_A_FOLDER.format(root="logs")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["2", "0", "False", str(tmp_path / "logs")]
    assert pq.read_table(tmp_path / "logs" / "predictions").num_rows == 2


def test_files_carry_min_max_statistics_for_the_columns_queries_filter_on(tmp_path):
    """A reader can skip row groups by time, request id or model version; the feature and prediction
    columns carry none (their statistics cost the writer 10-15% and no query filters on them)."""
    log = writer(tmp_path)
    log.start()
    log.put_predictions("r1", "demo", "1", checked(5), [1] * 5, 0.002)
    log.stop()
    (path,) = (tmp_path / "predictions").glob("date=*/*.parquet")
    group = pq.ParquetFile(path).metadata.row_group(0)
    with_statistics = {group.column(i).path_in_schema for i in range(group.num_columns)
                       if group.column(i).is_stats_set}
    assert {"request_id", "ts", "model", "version", "latency_ms"} <= with_statistics
    assert not {"feature.a", "feature.d", "prediction"} & with_statistics


def test_a_damaged_file_is_left_out_by_name_and_unscorable_outcomes_are_counted(tmp_path):
    from jupyter_mlship.monitor.report import MonitorError, build_report, outcome_metrics
    from support.notebooks import mlship

    log = writer(tmp_path / "logs")
    log.start()
    log.put_predictions("r1", "demo", "2", checked(2), [1.5, 2.5], 0.004)
    log.stop()
    (written,) = (tmp_path / "logs" / "predictions").rglob("*.parquet")
    cut = written.with_name("zz-other-replica.parquet")  # another writer's file, cut short by a crash
    cut.write_bytes(written.read_bytes()[: written.stat().st_size // 2])
    files = [written, cut]
    report = build_report(str(tmp_path / "logs"))
    assert report.predictions == 2 and report.warnings == [f"left out {files[1]}: not a readable Parquet file"]
    result = mlship("monitor", str(tmp_path / "logs"), "--html", str(tmp_path / "no" / "such" / "r.html"))
    assert "warning: left out" in result.stdout and result.returncode == 2
    assert "cannot write" in result.stderr and "Traceback" not in result.stderr
    files[0].write_bytes(b"not parquet")
    with pytest.raises(MonitorError, match="no readable prediction files"):
        build_report(str(tmp_path / "logs"))

    pairs = [(1.5, 1.0), (2.0, "cat"), (2.0, float("nan")), (1.0, 2.0)]
    assert outcome_metrics(pairs, "regression") == {"unscored": 2.0, "mae": 0.75, "rmse": pytest.approx(0.7905694)}


PREDICTIONS = [
    [1, 0, 1],
    [0.1, -2.5e-07, 1e22, 3, 2**70],  # orjson cannot encode 2**70: the standard library does
    [[0.1, 0.9], [0.5, 0.5], []],  # class probabilities
    [1, [2, 3]], [[1, 2], 3, [4]], [[[1]], [2]], [[[1], [2]], 5],  # mixed or deeper: value by value
    ["a", "b,c"], [None, 1], [float("nan"), 1.0], [True, 1], [{"a": 1, "b": [1, 2]}], [[1]], [],
]


@pytest.mark.parametrize("predictions", PREDICTIONS, ids=range(len(PREDICTIONS)))
def test_each_prediction_is_logged_as_its_own_json_text(tmp_path, predictions):
    """Numbers and lists of numbers are cut from one encoded text; anything else is encoded one by one.
    Either way each row holds exactly its own prediction's JSON."""
    import json

    import pyarrow as pa

    column = inference_log._json_column(pa, predictions)
    assert column.type == pa.string() and len(column) == len(predictions)
    expected = [None if isinstance(p, float) and p != p else p for p in predictions]  # NaN is logged as null
    assert [json.loads(text) for text in column.to_pylist()] == expected
    if predictions:  # and as written to the file, with the guard's flags on their instances only
        log = writer(tmp_path)
        rows = checked(len(predictions))
        rows.flags[len(predictions) - 1] = ["a:range", "d:unseen"]
        log.put_predictions("r1", "demo", "1", rows, predictions, 0.001)
        log.start()
        log.stop()
        table = pq.read_table(tmp_path / "predictions")
        assert [json.loads(text) for text in table.column("prediction").to_pylist()] == expected
        assert table.column("guard").to_pylist() == [""] * (len(predictions) - 1) + ["a:range;d:unseen"]
