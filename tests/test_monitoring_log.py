"""The inference log writer in-process (the service's own app/inference_log.py): a full queue drops and
counts, files rotate, every file on disk is complete, and stop() writes everything queued."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from jupyter_mlship.runtime import runtime_module
from support.notebooks import wait_for

monitoring = runtime_module("monitoring")
inference_log = runtime_module("inference_log")
SCHEMA = {"kind": "dataframe", "columns": [{"name": "a", "dtype": "float64", "json_type": "number"},
                                           {"name": "d", "dtype": "object", "json_type": "string"}]}


def checked(n: int, a: list[float] | None = None):
    instances = [{"a": float(i) if a is None else a[i], "d": "x"} for i in range(n)]
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


def drained(log) -> None:
    """Wait until the writer thread has taken the queue and finished that flush."""
    wait_for(lambda: not log.status()["queued_rows"], 30, "the writer taking the queue", interval=0.005)
    with log.flush_lock:  # the thread holds it from taking the queue to the end of its flush
        pass


def test_under_load_a_file_is_written_once_when_complete_not_at_every_early_flush(tmp_path):
    """A half-full queue wakes the writer early; such a flush encodes its rows and writes the file only when
    the file is complete (or flush_s after the last write). Each write is the whole file, so writing at every
    early flush wrote a file as many times as it had row groups."""
    log = writer(tmp_path, queue_rows=20, rotate_rows=50)  # early wake at 10 queued rows
    log.start()
    for i in range(8):
        log.put_predictions(f"r{i}", "demo", "1", checked(10), [1] * 10, 0.002)
        drained(log)
    status = log.status()
    # the first flush writes (nothing written yet); the fifth would take the file to 50 rows, so the file
    # of 40 is written, once, and the next one starts; the rest wait for a timed flush, rotation or stop()
    assert status["files_written"] == 2 and status["rows_written"]["predictions"] == 40
    files = sorted((tmp_path / "predictions").glob("date=*/*.parquet"))
    assert [pq.read_table(f).num_rows for f in files] == [40]
    log.stop()  # SIGTERM: everything encoded is written
    files = sorted((tmp_path / "predictions").glob("date=*/*.parquet"))
    assert [pq.read_table(f).num_rows for f in files] == [40, 40]
    assert log.status()["files_written"] == 3 and not list(tmp_path.rglob("*.tmp"))


def test_a_timed_flush_under_light_load_writes_at_every_interval(tmp_path):
    """Without early wakes (light load) every timed flush writes what it took: at most flush_s of rows wait."""
    log = writer(tmp_path, flush_s=0.2)
    log.start()
    log.put_predictions("r1", "demo", "1", checked(3), [1] * 3, 0.002)
    wait_for(lambda: log.status()["rows_written"]["predictions"] >= 3, 10, "a timed write", interval=0.02)
    assert pq.read_table(tmp_path / "predictions").num_rows == 3
    log.put_predictions("r2", "demo", "1", checked(2), [1] * 2, 0.002)
    wait_for(lambda: log.status()["rows_written"]["predictions"] >= 5, 10, "the next timed write", interval=0.02)
    assert pq.read_table(tmp_path / "predictions").num_rows == 5
    log.stop()


def test_rows_survive_a_storage_failure_and_are_dropped_and_counted_only_past_the_queue(tmp_path):
    """A write that fails (here: a file where the table's folder must be) keeps the rows, raises (the writer
    thread counts it) and writes them once storage works again, into complete files; a failure that outlasts the queue's
    size drops the rows it holds, counted, rather than growing without bound."""
    log = writer(tmp_path, queue_rows=100, rotate_rows=30)
    blocker = tmp_path / "predictions"
    blocker.write_text("not a folder")
    for i in range(5):  # 35 rows while storage fails: past rotate_rows, still under the queue's 100
        log.put_predictions(f"r{i}", "demo", "1", checked(7), [1] * 7, 0.002)
        with pytest.raises(OSError):
            log.flush()
    status = log.status()
    assert status["rows_written"]["predictions"] == 0 and status["rows_dropped"]["predictions"] == 0
    blocker.unlink()
    log.flush()
    assert log.status()["rows_written"]["predictions"] == 35
    table = pq.read_table(tmp_path / "predictions")
    assert sorted(set(table.column("request_id").to_pylist())) == [f"r{i}" for i in range(5)]
    assert table.num_rows == 35 and not list(tmp_path.rglob("*.tmp"))

    (tmp_path / "predictions").rename(tmp_path / "kept")
    blocker.write_text("not a folder")
    for i in range(16):  # 112 rows while storage fails: the fifteenth put takes the file past the queue's 100
        log.put_predictions(f"s{i}", "demo", "1", checked(7), [1] * 7, 0.002)
        with pytest.raises(OSError):
            log.flush()
    assert log.status()["rows_dropped"]["predictions"] == 105  # the first 15 puts' rows, counted
    blocker.unlink()
    log.flush()
    status = log.status()
    assert status["rows_written"]["predictions"] == 35 + 7
    assert pq.read_table(tmp_path / "predictions").column("request_id").to_pylist() == ["s15"] * 7


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

    column = inference_log._json_column(predictions)
    assert len(column) == len(predictions)
    expected = [None if isinstance(p, float) and p != p else p for p in predictions]  # NaN is logged as null
    assert [json.loads(text) for text in column.to_list()] == expected
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


def project(folder, name: str, version: str, output: dict, reference: dict | None = None):
    """What `mlship monitor --project` reads: ship.json (name, version, output) and model/reference.json."""
    import json

    (folder / "model").mkdir(parents=True)
    ship = {"name": name, "version": version, "output": output, "monitoring": {}}
    (folder / "ship.json").write_text(json.dumps(ship))
    if reference is not None:
        (folder / "model" / "reference.json").write_text(json.dumps(reference))
    return folder


LABELS = {"kind": "scalar", "container": "numpy.ndarray", "json_type": "integer"}


def test_a_correction_later_in_the_same_feedback_post_wins(tmp_path):
    """The items of one POST /feedback share a millisecond; the order they came in decides (seq). A log
    written before seq existed is still read."""
    import pyarrow as pa

    from jupyter_mlship.monitor.report import build_report

    log = writer(tmp_path / "logs")
    ids = [f"r{i}" for i in range(50)]
    for rid in ids:
        log.put_predictions(rid, "demo", "1", checked(1), [1], 0.001)
    log.put_outcomes("demo", "1", [item for rid in ids for item in ((rid, 0), (rid, 1))])  # 0, then corrected
    log.start()
    log.stop()
    assert pq.read_table(tmp_path / "logs" / "outcomes").column("seq").type == pa.int64()
    (row,) = build_report(str(tmp_path / "logs")).rows
    assert row.metrics["accuracy"] == 1.0  # every request's latest outcome: 1

    (path,) = (tmp_path / "logs" / "outcomes").rglob("*.parquet")
    pq.write_table(pq.read_table(path).drop(["seq"]).slice(0, 2), path)  # as an older service wrote it
    report = build_report(str(tmp_path / "logs"))
    assert (report.outcomes, report.rows[0].labelled) == (1, 1)


def test_labelled_counts_only_the_instances_a_list_outcome_reaches(tmp_path):
    from jupyter_mlship.monitor.report import build_report

    log = writer(tmp_path / "logs")
    log.put_predictions("r1", "demo", "1", checked(3), [1, 0, 1], 0.001)
    log.put_outcomes("demo", "1", [("r1", [1])])  # an outcome for the first instance only
    log.start()
    log.stop()
    report = build_report(str(tmp_path / "logs"))
    (row,) = report.rows
    assert (row.instances, row.labelled, row.metrics["accuracy"], report.joined) == (3, 1, 1.0, 1)


def test_drift_is_for_the_project_version_only_and_rows_are_per_model_and_version(tmp_path):
    """Two versions log into one folder (a canary): each --project's drift is over its own rows, against
    its own reference, and says which version it is for. Another model with the same version number has
    its own rows."""
    import numpy as np

    from jupyter_mlship.monitor.report import build_report, terminal_table

    rng = np.random.default_rng(0)
    training = rng.normal(0, 1, 2000).tolist()
    reference = {"source": "reference", "features": {"a": monitoring.profile_values("numeric", training)},
                 "prediction": None}
    served = {"1": rng.normal(0, 1, 600).tolist(), "2": rng.normal(1.5, 1, 600).tolist()}  # v2: shifted
    log = writer(tmp_path / "logs", queue_rows=2000)
    for version, values in served.items():
        log.put_predictions(f"v{version}", "demo", version, checked(600, values), [1] * 600, 0.001)
    log.put_predictions("other", "other", "1", checked(2), [1, 1], 0.001)
    log.start()
    log.stop()
    for version, values in served.items():
        folder = project(tmp_path / f"demo-{version}", "demo", version, LABELS, reference)
        report = build_report(str(tmp_path / "logs"), folder)
        (a,) = report.drift
        assert a.psi == pytest.approx(monitoring.drift(reference["features"]["a"], values)["psi"])
        assert report.drift_version == f"demo version {version}"
        assert f"drift of demo version {version} against the reference profile" in terminal_table(report)
    assert [(r.model, r.version, r.instances) for r in report.rows] == [("demo", "1", 600), ("demo", "2", 600),
                                                                        ("other", "1", 2)]
    elsewhere = build_report(str(tmp_path / "logs"), project(tmp_path / "demo-3", "demo", "3", LABELS, reference))
    assert elsewhere.drift == [] and "no predictions of demo version 3" in elsewhere.warnings[0]


def test_outcomes_named_by_class_against_probabilities_say_why_there_is_no_metric(tmp_path):
    from jupyter_mlship.monitor.report import build_report, terminal_table

    log = writer(tmp_path / "logs")
    log.put_predictions("r1", "demo", "1", checked(2), [[0.3, 0.7], [0.9, 0.1]], 0.001)
    log.put_outcomes("demo", "1", [("r1", ["yes", "no"])])
    log.start()
    log.stop()
    vector = {"kind": "vector", "container": "numpy.ndarray", "json_type": "number", "width": 2, "columns": []}
    report = build_report(str(tmp_path / "logs"), project(tmp_path / "demo", "demo", "1", vector))
    (row,) = report.rows
    assert row.labelled == 2 and row.metrics == {}  # not accuracy 0.000
    reason = "outcomes are labels, predictions are probability vectors without class names"
    assert row.metrics_unavailable == reason
    assert f"warning: no outcome metric for demo version 1: {reason}" in terminal_table(report)


def test_days_are_utc_days_whatever_the_machine_zone(tmp_path):
    """Rows logged at 20:40 and 20:50 UTC are on that UTC day in Tokyo too (05:40 the next day there), and
    --since without a zone is UTC."""
    import datetime as dt
    import os
    import subprocess
    import sys

    log = writer(tmp_path / "logs")
    for minute in (40, 50):
        at = dt.datetime(2024, 3, 1, 20, minute, tzinfo=dt.timezone.utc).timestamp()
        log.put_requests([(f"r{minute}", at, 0.001, 1)], "demo", "1", checked(1), [1])
    log.start()
    log.stop()
    result = subprocess.run([sys.executable, "-m", "jupyter_mlship.cli", "monitor", str(tmp_path / "logs"),
                             "--since", "2024-03-01T20:45"], env={**os.environ, "TZ": "Asia/Tokyo"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "1 predictions" in result.stdout, result.stdout
    days = [line.split()[2] for line in result.stdout.splitlines() if line.startswith("demo ")]
    assert days == ["2024-03-01"], result.stdout


def test_request_ids_are_random_unique_and_never_shared_with_a_forked_worker():
    """Ids come from a pool of random bytes read 4 KB at a time: all distinct across refills, uuid4-hex
    shaped, and a forked process draws its own rather than handing out the parent's remaining ones."""
    import os
    import re

    ids = [monitoring.new_request_id() for _ in range(3000)]  # several refills of 128 ids
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write, monitoring.new_request_id().encode())
        os._exit(0)
    os.waitpid(child, 0)
    from_child = os.read(read, 64).decode()
    assert from_child != monitoring.new_request_id()
    remaining = list(monitoring._REQUEST_IDS)
    assert from_child not in remaining and re.fullmatch(r"[0-9a-f]{32}", from_child)


def test_a_missing_hashed_value_is_logged_as_null_not_as_the_hash_of_nan(tmp_path):
    """--log-exclude a:hash on a numeric field: a present value is logged as its hash, a missing one
    (NaN in the feature column, None in the instance) as null, as an unhashed missing value is."""
    log = writer(tmp_path, hashed={"a", "d"})
    log.start()
    rows = [{"a": 1.5, "d": "x"}, {"a": None, "d": None}, {"a": float("nan"), "d": "x"}]
    log.put_predictions("r1", "demo", "1", monitoring.Checked(rows, monitoring.instance_features(rows, SCHEMA), {}, []),
                        [0, 1, 0], 0.001)
    log.stop()
    table = pq.read_table(tmp_path / "predictions").to_pydict()
    a, d = table["feature.a"], table["feature.d"]
    assert a[1] is None and a[2] is None and d[1] is None
    assert a[0] == log._hash(1.5) and len(a[0]) == 16 and d[0] == d[2] == log._hash("x")
