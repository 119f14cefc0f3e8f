"""The inference log: every answered prediction and every outcome, as Parquet, off the request path.

Request threads put rows on a bounded in-memory queue (never I/O; a full queue drops the rows and
counts them). A background thread wakes every ``flush_s`` seconds and rewrites the replica's current
file whole: under a temporary name, fsync, renamed into place (a folder), or put as one complete
object (object storage, through fsspec). So a reader, a crash or ``kill -9`` never sees a half-written
file, and at most the last flush interval is lost. A file takes a flush's rows while it stays under
``rotate_rows`` rows; otherwise they start a new one, so under load each row is encoded once rather
than again at every rewrite. A file is also closed after ``rotate_bytes`` bytes, ``rotate_s`` seconds
or at midnight UTC. Layout:
``ROOT/predictions/date=YYYY-MM-DD/<start>-<host>-<pid>-<seq>.parquet`` and the same under ``outcomes/``.

Plain runtime code: the standard library at import, pyarrow when it first writes, fsspec when
started with a URL.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import itertools
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

try:  # a fast JSON encoder where pinned (the service pins orjson); the standard library otherwise
    import orjson

    def json_bytes(value: Any) -> bytes:
        """``value`` as JSON (the service's answers use it too)."""
        try:
            return orjson.dumps(value)
        except TypeError:  # e.g. an integer beyond 64 bits: json handles it
            return json.dumps(value).encode()
except ImportError:  # pragma: no cover

    def json_bytes(value: Any) -> bytes:
        return json.dumps(value).encode()


def _dumps(value: Any) -> str:
    return json_bytes(value).decode()


_POOL_SET = False


def _pyarrow() -> Any:
    """pyarrow, imported when the log first needs it, allocating with the C library's allocator: Arrow's
    jemalloc kept up to 15 MB more after a busy minute in one measurement (others showed no difference)."""
    global _POOL_SET
    import pyarrow as pa

    if not _POOL_SET:
        _POOL_SET = True
        if "ARROW_DEFAULT_MEMORY_POOL" not in os.environ:
            pa.set_memory_pool(pa.system_memory_pool())
    return pa


TRIM_EVERY_S = 5.0  # under load, give memory back at most this often (see InferenceLog._run)


def _memory_returner() -> Callable[[], Any]:
    """glibc's ``malloc_trim``: gives the heap's free pages back to the system after a flush. A flush
    frees the file's Arrow buffers and the drained rows, but the freed pages stay in the process;
    measured after a load test, RSS was 20 MB lower with it. A no-op on other C libraries."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda pad=0: None


# Columns that queries filter on (time ranges, a request, a model version): their min/max statistics let a
# reader skip row groups. Not computed for the features and predictions (10-15% of the writer's time).
STATISTICS_COLUMNS = ("request_id", "ts", "model", "version", "latency_ms")


def _parquet_options(table: Any) -> dict:
    """zstd at its fastest level; dictionary encoding for text columns only: on measured values (floats
    that rarely repeat) building a dictionary tripled the cost of writing and saved nothing."""
    import pyarrow as pa

    text = [f.name for f in table.schema if pa.types.is_string(f.type)]
    statistics = [name for name in STATISTICS_COLUMNS if name in table.schema.names]
    return {"compression": "zstd", "compression_level": 1, "use_dictionary": text,
            "write_statistics": statistics}


def _guard_column(pa: Any, flags: dict[int, list[str]], n: int) -> Any:
    """The log's guard text per instance: "" or its flags joined by ";". Few instances carry flags: the
    column is their texts taken by index, not one Python string per instance."""
    import numpy as np

    if not flags:
        return pa.repeat(pa.scalar("", pa.string()), n)
    index = np.zeros(n, dtype=np.int32)
    index[list(flags)] = np.arange(1, len(flags) + 1, dtype=np.int32)
    return pa.array(["", *(";".join(labels) for labels in flags.values())], pa.string()).take(pa.array(index))


def _json_values(instances: Any) -> list:
    """Instances as JSON-ready values: a float matrix (app.convert.float_rows) as lists of floats."""
    return instances.tolist() if hasattr(instances, "tolist") else instances


# The characters of JSON numbers and arrays: a text of only these holds numbers and brackets alone.
_NUMBER_TEXT = b"0123456789.,-+eE[]"


def _json_column(pa: Any, values: list) -> Any:
    """Each value's JSON text, as an Arrow string array.

    Numbers, or lists of numbers (class probabilities), the usual predictions, take one encoder call:
    the text's top-level commas are the boundaries (no number holds a comma or a bracket), and Arrow
    gets the text and the offsets as buffers. One Python string per value cost 5 times as much on the
    event loop. Anything else (strings, objects, null, deeper lists) is encoded value by value."""
    import numpy as np

    def one_by_one() -> Any:
        return pa.array([_dumps(v) for v in values], pa.string())

    try:
        text = json_bytes(values) if values else b""
    except TypeError:
        text = b""
    inner = text[1:-1]
    if not text or text.translate(None, _NUMBER_TEXT) or b"[[" in inner or b"]]" in inner:
        return one_by_one()
    raw = np.frombuffer(inner, dtype=np.uint8)
    boundary = raw == ord(",")
    if b"[" in inner:  # lists one deep: a comma between two of them, "],[", is the only top-level one
        boundary[1:-1] &= (raw[:-2] == ord("]")) & (raw[2:] == ord("["))
        boundary[[0, -1]] = False
    ends = np.flatnonzero(boundary)
    if len(ends) != len(values) - 1:  # numbers mixed with lists: not one text per value
        return one_by_one()
    data = raw[~boundary]
    offsets = np.empty(len(values) + 1, dtype=np.int32)
    offsets[0], offsets[-1] = 0, len(data)
    offsets[1:-1] = ends - np.arange(len(ends))
    return pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(data))


# Orders outcomes within one process: the items of one POST /feedback share a millisecond, and a
# correction later in the list must still win. next() on it is atomic under the GIL.
_OUTCOME_SEQ = itertools.count()


@dataclass
class _Stream:
    """One table of the log (predictions or outcomes): the file being filled, rewritten at each flush."""

    table: str
    pending: list = field(default_factory=list)  # Arrow tables not yet in any file
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
                 storage_options: dict | None = None, instance_json: bool = True) -> None:
        self.url = url
        if "://" in url or "::" in url or url.startswith("file:"):  # a URL (s3://, file://, chained): fsspec
            import fsspec
            from fsspec.implementations.local import LocalFileSystem

            self.fs, self.root = fsspec.core.url_to_fs(url, **(storage_options or {}))
            self.local = isinstance(self.fs, LocalFileSystem)
        else:  # a folder (the default): no fsspec, 30 ms less at start-up
            self.fs, self.root, self.local = None, os.path.abspath(os.path.expanduser(url)), True
        self.feature_columns, self.hashed, self.excluded = feature_columns, hashed, excluded
        self.category_key = category_key  # app.monitoring's, so logged categories match the reference's keys
        self.instance_json = instance_json  # False when the feature columns already hold each instance
        self.flush_s, self.queue_rows = flush_s, queue_rows
        # The writer does not wait for its interval once this many rows are queued. Not fewer: each flush
        # rewrites the current file whole, so flushing every k rows writes a file of r rows r/2k times.
        self.early_rows = max(1, min(queue_rows, rotate_rows) // 2)
        self.rotate_rows, self.rotate_bytes, self.rotate_s = rotate_rows, rotate_bytes, rotate_s
        self.lock = threading.Lock()
        self.flush_lock = threading.Lock()
        self.wake = threading.Event()
        self.return_memory = _memory_returner()
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

    # producers: never blocking on I/O
    def _put(self, table: str, batch: Any, count: int) -> int:
        """Queue an Arrow table of ``count`` rows; when the queue is full drop it and count the loss."""
        with self.lock:
            if self.queued_rows + count > self.queue_rows:
                self.dropped[table] += count
                return count
            self.queued.append((table, batch, count))
            self.queued_rows += count
            early = self.queued_rows >= self.early_rows
        if early:  # write now rather than drop rows before the next flush
            self.wake.set()
        return 0

    def put_requests(self, requests: list[tuple[str, float, float, int]], name: str, version: str,
                     checked: Any, predictions: list) -> int:
        """Log rows for answered requests: (request id, time, seconds, instances) each, in order, with
        their instances' features and flags (``checked``, app.monitoring) and predictions, all concatenated.
        Converted to Arrow here, so what waits for the writer is compact. The rows dropped (queue full)."""
        if not requests:
            return 0
        return self._put("predictions", self._predictions_table(requests, name, version, checked, predictions),
                         len(checked.instances))

    def put_predictions(self, rid: str, name: str, version: str, checked: Any, predictions: list,
                        seconds: float) -> int:
        """Log rows for one request."""
        return self.put_requests([(rid, time.time(), seconds, len(checked.instances))], name, version, checked,
                                 predictions)

    def put_outcomes(self, name: str, version: str, items: list[tuple[str, Any]]) -> int:
        if not items:
            return 0
        return self._put("outcomes", self._outcomes_table(time.time(), name, version, items), len(items))

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
        trimmed = time.monotonic()
        while True:
            self.wake.wait(self.flush_s)
            self.wake.clear()  # set again by stop() or by a half-full queue
            stopping = self.stopping
            try:
                rows = self.flush()
                # Give freed memory back after a quiet flush, and under load at most every TRIM_EVERY_S:
                # trimmed pages fault in again at the next requests (measured at 100-row load: 3-7% fewer
                # requests/s when trimming after every flush, several a second).
                if rows < self.early_rows // 4 or time.monotonic() - trimmed >= TRIM_EVERY_S:
                    self.return_memory(0)
                    trimmed = time.monotonic()
            except Exception as exc:  # keep the rows, try again at the next flush
                with self.lock:
                    self.write_errors += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("writing the inference log failed")
            if stopping:
                return

    def flush(self) -> int:
        """Write what is queued; the number of rows it took from the queue."""
        with self.flush_lock:  # the writer thread, or a caller (stop, a test): one at a time
            return self._flush()

    def _flush(self) -> int:
        with self.lock:
            items, self.queued, rows = self.queued, [], self.queued_rows
            self.queued_rows = 0
        for table, batch, _ in items:
            self.streams[table].pending.append(batch)
        for stream in self.streams.values():  # storage failing for long: keep memory bounded, count the loss
            waiting = sum(batch.num_rows for batch in stream.pending)
            while stream.pending and waiting > self.queue_rows:
                oldest = stream.pending.pop(0)
                waiting -= oldest.num_rows
                with self.lock:
                    self.dropped[stream.table] += oldest.num_rows
        for stream in self.streams.values():
            self._flush_stream(stream)
        return rows

    def _flush_stream(self, stream: _Stream) -> None:
        now = time.time()
        today = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y-%m-%d")
        arriving = sum(batch.num_rows for batch in stream.pending)
        if stream.path and (stream.rows + arriving >= self.rotate_rows or stream.nbytes >= self.rotate_bytes
                            or now - stream.opened >= self.rotate_s or today != stream.date):
            stream.path, stream.batches, stream.rows, stream.nbytes = None, [], 0, 0  # the file stays as written
        if not stream.pending:
            return
        pa = _pyarrow()

        batch = stream.pending[0] if len(stream.pending) == 1 else pa.concat_tables(stream.pending)
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
        pa = _pyarrow()
        import pyarrow.parquet as pq

        table = pa.concat_tables(batches)
        if self.local:
            folder, name = os.path.split(path)
            os.makedirs(folder, exist_ok=True)
            temporary = os.path.join(folder, f".{name}.tmp")
            with open(temporary, "wb") as handle:
                pq.write_table(table, handle, **_parquet_options(table))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)  # atomic: readers see the old file or the new one
        else:
            buffer = io.BytesIO()
            pq.write_table(table, buffer, **_parquet_options(table))
            self.fs.pipe_file(path, buffer.getvalue())  # an object appears only when it is complete

    @staticmethod
    def _outcomes_table(ts: float, name: str, version: str, items: list[tuple[str, Any]]) -> Any:
        pa = _pyarrow()

        n = len(items)
        return pa.table({
            "request_id": pa.array([rid for rid, _ in items], pa.string()),
            "ts": pa.array([int(ts * 1000)] * n, pa.timestamp("ms", tz="UTC")),
            "model": pa.array([name] * n, pa.string()),
            "version": pa.array([version] * n, pa.string()),
            "outcome": pa.array([json.dumps(outcome) for _, outcome in items], pa.string()),
            "seq": pa.array([next(_OUTCOME_SEQ) for _ in items], pa.int64()),
        })

    def _predictions_table(self, requests: list[tuple[str, float, float, int]], name: str, version: str,
                           checked: Any, predictions: list) -> Any:
        """One row per instance, column by column (numpy and Arrow do the per-row work)."""
        import numpy as np
        pa = _pyarrow()

        counts = np.array([n for *_, n in requests], dtype=np.int64)
        n = int(counts.sum())
        request = np.repeat(np.arange(len(requests)), counts)  # row -> its request
        arrays = {
            "request_id": pa.array([rid for rid, *_ in requests], pa.string()).take(request),
            "instance": pa.array((np.arange(n) - (np.cumsum(counts) - counts)[request]).astype(np.int32)),
            "ts": pa.array(np.array([int(ts * 1000) for _, ts, _, _ in requests], dtype=np.int64)[request],
                           pa.timestamp("ms", tz="UTC")),
            "model": pa.repeat(pa.scalar(name, pa.string()), n),
            "version": pa.repeat(pa.scalar(version, pa.string()), n),
            "latency_ms": pa.array(np.array([s * 1000 for _, _, s, _ in requests], dtype=float)[request]),
            "guard": _guard_column(pa, checked.flags, n),
            "instance_json": pa.array([_dumps(self._private(i)) for i in _json_values(checked.instances)],
                                      pa.string())
            if self.instance_json else pa.nulls(n, pa.string()),
            "prediction": _json_column(pa, predictions),
        }
        for feature, kind in self.feature_columns.items():
            source = checked.features.get(feature)
            if source is None:
                source = [None] * n
            if feature in self.hashed:
                arrays[f"feature.{feature}"] = pa.array([None if v is None else self._hash(v) for v in source],
                                                        pa.string())
            elif kind == "numeric":
                values = np.asarray(source, dtype=float)
                missing = np.isnan(values)  # NaN (missing) -> null
                arrays[f"feature.{feature}"] = pa.array(values, pa.float64(), mask=missing if missing.any() else None)
            else:
                key = self.category_key
                arrays[f"feature.{feature}"] = pa.array(
                    [v if type(v) is str else None if v is None else key(v) for v in source], pa.string())
        return pa.table(arrays)

    def _hash(self, value: Any) -> str:
        return hashlib.sha256((self.hash_salt + self.category_key(value)).encode()).hexdigest()[:16]

    def _private(self, instance: Any) -> Any:
        """The instance as logged: excluded fields left out, hashed fields replaced by their hash."""
        if not isinstance(instance, dict) or not (self.hashed or self.excluded):
            return instance
        return {k: (self._hash(v) if k in self.hashed and v is not None else v)
                for k, v in instance.items() if k not in self.excluded}
