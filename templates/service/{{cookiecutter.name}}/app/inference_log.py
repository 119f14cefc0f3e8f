"""The inference log: every answered prediction and every outcome, as Parquet, off the request path.

Request threads put rows on a bounded in-memory queue (never I/O; a full queue drops the rows and
counts them). A background thread wakes every ``flush_s`` seconds and rewrites the replica's current
file whole: under a temporary name, fsync, renamed into place (a folder), or put as one complete
object (object storage, through fsspec). So a reader, a crash or ``kill -9`` never sees a half-written
file, and at most the last flush interval is lost. A file is closed (the next flush starts a new one)
after ``rotate_rows`` rows, ``rotate_bytes`` bytes, ``rotate_s`` seconds or at midnight UTC. Layout:
``ROOT/predictions/date=YYYY-MM-DD/<start>-<host>-<pid>-<seq>.parquet`` and the same under ``outcomes/``.

Plain runtime code: the standard library at import, pyarrow and fsspec when started.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import logging
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

log = logging.getLogger("app.inference_log")


@dataclass
class _Stream:
    """One table of the log (predictions or outcomes): the file being filled, rewritten at each flush."""

    table: str
    pending: list = field(default_factory=list)  # rows not yet in any file
    batches: list = field(default_factory=list)  # Arrow tables of the current file
    rows: int = 0
    nbytes: int = 0
    path: str | None = None
    opened: float = 0.0
    date: str = ""
    seq: int = 0


class InferenceLog:
    """Bounded queue -> background thread -> Parquet files in a folder or at any fsspec URL."""

    def __init__(self, url: str, feature_columns: dict[str, str], hashed: set[str], excluded: set[str],
                 category_key: Callable[[Any], str], flush_s: float,
                 queue_rows: int, rotate_rows: int, rotate_bytes: int, rotate_s: float,
                 storage_options: dict | None = None) -> None:
        import fsspec
        from fsspec.implementations.local import LocalFileSystem

        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.local = isinstance(self.fs, LocalFileSystem)
        self.feature_columns, self.hashed, self.excluded = feature_columns, hashed, excluded
        self.category_key = category_key  # app.monitoring's, so logged categories match the reference's keys
        self.flush_s, self.queue_rows = flush_s, queue_rows
        self.rotate_rows, self.rotate_bytes, self.rotate_s = rotate_rows, rotate_bytes, rotate_s
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.stopping = False
        self.queued: list = []  # (table, row) appended by request threads, swapped out by the writer
        self.queued_rows = 0
        self.written = {"predictions": 0, "outcomes": 0}
        self.dropped = {"predictions": 0, "outcomes": 0}
        self.files_written = 0
        self.write_errors = 0
        self.last_error = ""
        self.streams = {"predictions": _Stream("predictions"), "outcomes": _Stream("outcomes")}
        self.host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname())[:40]
        self.thread = threading.Thread(target=self._run, name="inference-log", daemon=True)
        self.hash_salt = os.environ.get("MLSHIP_LOG_HASH_SALT", "")  # set it: unsalted hashes of few values are guessable

    # producers (request threads): O(1), never blocking on I/O
    def _put(self, table: str, rows: list, count: int) -> int:
        """Queue ``rows`` (``count`` log rows); when the queue is full drop them and count the loss."""
        with self.lock:
            if self.queued_rows + count > self.queue_rows:
                self.dropped[table] += count
                return count
            self.queued.append((table, rows, count))
            self.queued_rows += count
        return 0

    def put_predictions(self, rid: str, name: str, version: str, checked: Any, predictions: list,
                        seconds: float) -> int:
        now = time.time()
        return self._put("predictions", [(rid, now, name, version, seconds, checked, predictions)],
                         len(checked.instances))

    def put_outcomes(self, name: str, version: str, items: list[tuple[str, Any]]) -> int:
        now = time.time()
        return self._put("outcomes", [(rid, now, name, version, outcome) for rid, outcome in items], len(items))

    def status(self) -> dict:
        with self.lock:
            return {"url": self.url, "rows_written": dict(self.written), "rows_dropped": dict(self.dropped),
                    "queued_rows": self.queued_rows, "files_written": self.files_written,
                    "write_errors": self.write_errors, "last_error": self.last_error,
                    "flush_seconds": self.flush_s}

    # the writer thread
    def start(self) -> None:
        if self.local:
            os.makedirs(self.root, exist_ok=True)
        self.thread.start()

    def stop(self) -> None:
        """Write everything queued, then close the files (SIGTERM -> lifespan shut-down -> here)."""
        self.stopping = True
        self.wake.set()
        self.thread.join(timeout=60)

    def _run(self) -> None:
        while True:
            self.wake.wait(self.flush_s)
            stopping = self.stopping
            try:
                self.flush()
            except Exception as exc:  # keep the rows, try again at the next flush
                with self.lock:
                    self.write_errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("writing the inference log failed")
            if stopping:
                return

    def flush(self) -> None:
        with self.lock:
            items, self.queued, self.queued_rows = self.queued, [], 0
        for table, rows, _ in items:
            self.streams[table].pending.extend(rows)
        for stream in self.streams.values():  # storage failing for long: keep memory bounded, count the loss
            excess = len(stream.pending) - self.queue_rows
            if excess > 0:
                del stream.pending[:excess]
                with self.lock:
                    self.dropped[stream.table] += excess
        for stream in self.streams.values():
            self._flush_stream(stream)

    def _flush_stream(self, stream: _Stream) -> None:
        now = time.time()
        today = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y-%m-%d")
        if stream.path and (stream.rows >= self.rotate_rows or stream.nbytes >= self.rotate_bytes
                            or now - stream.opened >= self.rotate_s or today != stream.date):
            stream.path, stream.batches, stream.rows, stream.nbytes = None, [], 0, 0  # the file stays as written
        if not stream.pending:
            return
        batch = self._arrow(stream.table, stream.pending)
        if stream.path is None:
            stream.seq += 1
            stream.opened, stream.date = now, today
            started = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
            stream.path = (f"{self.root.rstrip('/')}/{stream.table}/date={today}/"
                           f"{started}-{self.host}-{os.getpid()}-{stream.seq:05d}.parquet")
        batches = [*stream.batches, batch]
        self._write_whole(stream.path, batches)
        stream.batches, stream.rows = batches, stream.rows + batch.num_rows
        stream.nbytes += batch.nbytes
        with self.lock:
            self.written[stream.table] += batch.num_rows
            self.files_written += 1
        stream.pending = []

    def _write_whole(self, path: str, batches: list) -> None:
        """The complete file: under a temporary name then renamed (local), or one whole object (remote)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.concat_tables(batches)
        if self.local:
            folder, name = os.path.split(path)
            os.makedirs(folder, exist_ok=True)
            temporary = os.path.join(folder, f".{name}.tmp")
            with open(temporary, "wb") as handle:
                pq.write_table(table, handle, compression="zstd")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)  # atomic: readers see the old file or the new one
        else:
            buffer = io.BytesIO()
            pq.write_table(table, buffer, compression="zstd")
            self.fs.pipe_file(path, buffer.getvalue())  # an object appears only when it is complete

    def _arrow(self, table: str, rows: list) -> Any:
        import pyarrow as pa

        if table == "outcomes":
            return pa.table({
                "request_id": pa.array([r[0] for r in rows], pa.string()),
                "ts": pa.array([int(r[1] * 1000) for r in rows], pa.timestamp("ms", tz="UTC")),
                "model": pa.array([r[2] for r in rows], pa.string()),
                "version": pa.array([r[3] for r in rows], pa.string()),
                "outcome": pa.array([json.dumps(r[4]) for r in rows], pa.string()),
            })
        columns: dict[str, list] = {k: [] for k in ("request_id", "instance", "ts", "model", "version",
                                                     "latency_ms", "guard", "instance_json", "prediction")}
        features: dict[str, list] = {name: [] for name in self.feature_columns}
        for rid, ts, name, version, seconds, checked, predictions in rows:
            for index, (instance, prediction) in enumerate(zip(checked.instances, predictions)):
                columns["request_id"].append(rid)
                columns["instance"].append(index)
                columns["ts"].append(int(ts * 1000))
                columns["model"].append(name)
                columns["version"].append(version)
                columns["latency_ms"].append(seconds * 1000)
                columns["guard"].append(";".join(checked.flags[index]) if index < len(checked.flags) else "")
                columns["instance_json"].append(json.dumps(self._private(instance)))
                columns["prediction"].append(json.dumps(prediction))
            for feature, values in features.items():
                source = checked.features.get(feature) or [None] * len(checked.instances)
                if feature in self.hashed:
                    values.extend(None if v is None else self._hash(v) for v in source)
                elif self.feature_columns[feature] == "numeric":
                    values.extend(None if v is None else float(v) for v in source)
                else:
                    values.extend(None if v is None else self.category_key(v) for v in source)
        arrays = {
            "request_id": pa.array(columns["request_id"], pa.string()),
            "instance": pa.array(columns["instance"], pa.int32()),
            "ts": pa.array(columns["ts"], pa.timestamp("ms", tz="UTC")),
            "model": pa.array(columns["model"], pa.string()),
            "version": pa.array(columns["version"], pa.string()),
            "latency_ms": pa.array(columns["latency_ms"], pa.float64()),
            "guard": pa.array(columns["guard"], pa.string()),
            "instance_json": pa.array(columns["instance_json"], pa.string()),
            "prediction": pa.array(columns["prediction"], pa.string()),
        }
        for feature, values in features.items():
            numeric = self.feature_columns[feature] == "numeric" and feature not in self.hashed
            arrays[f"feature.{feature}"] = pa.array(values, pa.float64() if numeric else pa.string())
        return pa.table(arrays)

    def _hash(self, value: Any) -> str:
        return hashlib.sha256((self.hash_salt + self.category_key(value)).encode()).hexdigest()[:16]

    def _private(self, instance: Any) -> Any:
        """The instance as logged: excluded fields left out, hashed fields replaced by their hash."""
        if not isinstance(instance, dict) or not (self.hashed or self.excluded):
            return instance
        return {k: (self._hash(v) if k in self.hashed and v is not None else v)
                for k, v in instance.items() if k not in self.excluded}
