"""The inference log writer in-process (the service's own app/monitoring.py): a full queue drops and
counts, files rotate, every file on disk is complete, and stop() writes everything queued."""

from __future__ import annotations

import pyarrow.parquet as pq

from jupyter_mlship.runtime import runtime_module

monitoring = runtime_module("monitoring")
SCHEMA = {"kind": "dataframe", "columns": [{"name": "a", "dtype": "float64", "json_type": "number"},
                                           {"name": "d", "dtype": "object", "json_type": "string"}]}


def checked(n: int):
    instances = [{"a": float(i), "d": "x"} for i in range(n)]
    return monitoring.Checked(instances, monitoring.instance_features(instances, SCHEMA), [[] for _ in instances], [])


def writer(root, **options):
    settings = dict(feature_columns={"a": "numeric", "d": "categorical"}, hashed=set(), excluded=set(),
                    flush_s=3600, queue_rows=1000, rotate_rows=100_000, rotate_bytes=2**30, rotate_s=3600)
    settings.update(options)
    return monitoring.InferenceLog(str(root), **settings)


def test_a_full_queue_drops_rows_and_counts_them(tmp_path):
    log = writer(tmp_path, queue_rows=10)
    log.start()
    assert log.put_predictions("r1", "demo", "1", checked(8), [0] * 8, 0.001) == 0
    assert log.put_predictions("r2", "demo", "1", checked(5), [0] * 5, 0.001) == 5  # would pass 10: dropped
    assert log.put_outcomes("demo", "1", [("r1", 1), ("r2", 0)]) == 0
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
    assert [pq.read_table(f).num_rows for f in files] == [21, 21, 21, 7]  # a file closes once it passes 20 rows
    assert not list(tmp_path.rglob("*.tmp"))  # temporary names were all renamed into place
    table = pq.read_table(tmp_path / "predictions")
    assert table.num_rows == 70 and table.column("feature.a").type == "double"
