"""The inference log: every answered prediction and every outcome, as Parquet, off the request path.

Request threads put rows on a bounded in-memory queue (never I/O; a full queue drops the rows and
counts them). A background thread wakes every ``flush_s`` seconds (sooner once the queue is
filling), encodes and compresses the rows taken once, as one more row group of the replica's current
file, and writes that file whole from its encoded row groups: under a temporary name, fsync, renamed
into place (a folder), or put as one complete object (object storage, through fsspec). It writes at
every timed wake, when a file is complete, and under load whenever ``flush_s`` has passed since the
last write, so a file being filled fast is written once rather than at every early wake. So a
reader, a crash or ``kill -9`` never sees a half-written file, and at most the last flush interval is
lost. A file takes a flush's rows while it stays under ``rotate_rows`` rows; otherwise they start a new
one. A file is also closed after ``rotate_bytes`` bytes (compressed), ``rotate_s`` seconds or at
midnight UTC. Layout:
``ROOT/predictions/date=YYYY-MM-DD/<start>-<host>-<pid>-<seq>.parquet`` and the same under ``outcomes/``.

The files are written by app/parquet_writer.py (numpy and zstandard), not pyarrow: pyarrow costs the
serving process some 40 MB of memory, a third of the service's. Plain runtime code: fsspec is imported
only when started with a URL.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
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

if __package__ == "app":  # in the service
    from app.parquet_writer import ParquetBuilder, Strings
else:  # imported by jupyter_mlship (jupyter_mlship.runtime): the same file beside this one
    from jupyter_mlship.runtime import runtime_module

    _writer = runtime_module("parquet_writer")
    ParquetBuilder, Strings = _writer.ParquetBuilder, _writer.Strings

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


# The columns of the two tables, in file order (the feature columns follow the predictions' own).
PREDICTION_COLUMNS = (("request_id", "string"), ("instance", "int32"), ("ts", "timestamp_ms"), ("model", "string"),
                      ("version", "string"), ("latency_ms", "double"), ("guard", "string"),
                      ("instance_json", "string"), ("prediction", "string"))
OUTCOME_COLUMNS = (("request_id", "string"), ("ts", "timestamp_ms"), ("model", "string"), ("version", "string"),
                   ("outcome", "string"), ("seq", "int64"))

# A row group of fewer rows takes the next flush's rows too, encoded again as one: at low traffic a flush
# every few seconds would otherwise leave hundreds of tiny row groups in a file, each with its metadata.
SMALL_ROW_GROUP = 10_000

TRIM_EVERY_S = 1.0  # under load, give memory back at most this often (see InferenceLog._run)


def _memory_returner() -> Callable[[], Any]:
    """glibc's ``malloc_trim``: gives the heap's free pages back to the system after a flush. A flush
    frees the drained rows and the encoded pages, but the freed pages stay in the process; measured
    after a load test, RSS was 20 MB lower with it. A no-op on other C libraries."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda pad=0: None


# Columns that queries filter on (time ranges, a request, a model version): their min/max statistics let a
# reader skip row groups. Not computed for the features and predictions (no query filters on them).
STATISTICS_COLUMNS = ("request_id", "ts", "model", "version", "latency_ms")


def _guard_column(flags: dict[int, list[str]], n: int) -> Strings:
    """The log's guard text per instance: "" or its flags joined by ";". Few instances carry flags: the
    column is their texts taken by index, not one Python string per instance."""
    import numpy as np

    index = np.zeros(n, dtype=np.int64)
    if flags:
        index[list(flags)] = np.arange(1, len(flags) + 1)
    return Strings.from_list(["", *(";".join(labels) for labels in flags.values())]).take(index)


def _json_values(instances: Any) -> list:
    """Instances as JSON-ready values: a float matrix (app.convert.float_rows) as lists of floats."""
    return instances.tolist() if hasattr(instances, "tolist") else instances


# The characters of JSON numbers and arrays: a text of only these holds numbers and brackets alone.
_NUMBER_TEXT = b"0123456789.,-+eE[]"


def _json_column(values: list) -> Strings:
    """Each value's JSON text, as a column of texts.

    Numbers, or lists of numbers (class probabilities), the usual predictions, take one encoder call:
    the text's top-level commas are the boundaries (no number holds a comma or a bracket), and the column
    is that text and its offsets. One Python string per value cost 5 times as much on the event loop.
    Anything else (strings, objects, null, deeper lists) is encoded value by value."""
    import numpy as np

    def one_by_one() -> Strings:
        return Strings.from_list([_dumps(v) for v in values])

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
    offsets = np.empty(len(values) + 1, dtype=np.int64)
    offsets[0], offsets[-1] = 0, len(data)
    offsets[1:-1] = ends - np.arange(len(ends))
    return Strings(data, offsets)


def _joined(parts: list[dict[str, Any]], schema: list[tuple[str, str]]) -> dict[str, Any]:
    """Column sets (every column in each) as one."""
    import numpy as np

    if len(parts) == 1:
        return parts[0]
    return {name: Strings.concat([part[name] for part in parts]) if kind == "string"
            else np.concatenate([part[name] for part in parts]) for name, kind in schema}


def _null_strings(n: int) -> Strings:
    import numpy as np

    return Strings(b"", np.zeros(n + 1, dtype=np.int64), np.zeros(n, dtype=bool))


# Orders outcomes within one process: the items of one POST /feedback share a millisecond, and a
# correction later in the list must still win. next() on it is atomic under the GIL.
_OUTCOME_SEQ = itertools.count()


@dataclass
class _Stream:
    """One table of the log (predictions or outcomes): the file being filled, written whole each time."""

    table: str
    pending: list = field(default_factory=list)  # puts not yet in any file
    pending_rows: int = 0
    file: Any = None  # the current file's ParquetBuilder: its row groups, encoded and compressed once
    unwritten: int = 0  # rows in the builder whose file has not been written yet (a failed write)
    tail: list | None = None  # what the file's last row group was made of, while it is small
    tail_rows: int = 0
    path: str | None = None
    opened: float = 0.0
    date: str = ""
    seq: int = 0
    written_at: float = float("-inf")  # time.monotonic() of the table's last file write
    uncompressed: dict = field(default_factory=dict)  # ParquetBuilder's: columns compression does not pay for


@dataclass
class _Predictions:
    """One put's prediction rows, compact until the writer makes columns of them: a handful of objects
    per put, not one or more per column (a drain of a few 1-row requests cost 5 KB in small arrays)."""

    request_ids: Any  # Strings, one per request
    counts: Any  # per request: its instances, its time (ms), its latency (ms): numpy arrays
    ts_ms: Any
    latency_ms: Any
    name: str
    version: str
    flags: dict  # instance index -> guard labels
    prediction: Any  # Strings: each instance's prediction as JSON
    instance_json: Any  # Strings, or None where the feature columns hold each instance
    numeric: Any  # (numeric features, rows) float64 matrix, NaN where missing; None without numeric features
    texts: dict  # feature -> Strings: categorical (or hashed) features

    @property
    def rows(self) -> int:
        return len(self.prediction)


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
        # logged as doubles (one matrix per put), and as texts: categories and hashed values
        self.numeric = [f for f, kind in feature_columns.items() if kind == "numeric" and f not in hashed]
        self.text_features = [f for f in feature_columns if f not in self.numeric]
        self.category_key = category_key  # app.monitoring's, so logged categories match the reference's keys
        self.instance_json = instance_json  # False when the feature columns already hold each instance
        self.flush_s, self.queue_rows = flush_s, queue_rows
        # The writer does not wait for its interval once this many rows are queued: what waits is memory
        # (a 100-row load queues 170,000 rows a second). Such an early flush only encodes its rows; the
        # file is written when it is complete or flush_s after the last write (each write is the whole
        # file: written at every early flush, a file of 4 of them was written 4 times, 2.5 times its size,
        # with an fsync each; at a 100-row load the writer thread's CPU went from 28 to 25 µs a request).
        self.early_rows = max(1, min(queue_rows // 2, rotate_rows // 5))
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
        """Queue ``count`` rows; when the queue is full drop them and count the loss."""
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
        Converted to columns here, so what waits for the writer is compact. The rows dropped (queue full)."""
        if not requests:
            return 0
        return self._put("predictions", self._predictions(requests, name, version, checked, predictions),
                         len(checked.instances))

    def put_predictions(self, rid: str, name: str, version: str, checked: Any, predictions: list,
                        seconds: float) -> int:
        """Log rows for one request."""
        return self.put_requests([(rid, time.time(), seconds, len(checked.instances))], name, version, checked,
                                 predictions)

    def put_outcomes(self, name: str, version: str, items: list[tuple[str, Any]]) -> int:
        if not items:
            return 0
        return self._put("outcomes", self._outcome_columns(time.time(), name, version, items), len(items))

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
            early = self.wake.wait(self.flush_s)
            self.wake.clear()  # set again by stop() or by a half-full queue
            stopping = self.stopping
            try:
                with self.flush_lock:
                    rows = self._flush(write_all=stopping or not early)
                # Give freed memory back after a quiet flush, and under load at most every TRIM_EVERY_S:
                # trimmed pages fault in again at the next requests (measured at 100-row load: 3-7% fewer
                # requests/s when trimming after every flush, several a second; every 1 s left the log 10 MB
                # lower after a 100-row load than every 5 s).
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
        """Write what is queued, now; the number of rows it took from the queue."""
        with self.flush_lock:  # the writer thread, or a caller (a test): one at a time
            return self._flush(write_all=True)

    def _flush(self, write_all: bool) -> int:
        """Encode what is queued; write each table's file if ``write_all``, else only where it is due."""
        with self.lock:
            items, self.queued, rows = self.queued, [], self.queued_rows
            self.queued_rows = 0
        for table, columns, count in items:
            stream = self.streams[table]
            stream.pending.append(columns)
            stream.pending_rows += count
        for stream in self.streams.values():
            self._flush_stream(stream, write_all)
        return rows

    def _flush_stream(self, stream: _Stream, write_all: bool) -> None:
        now = time.time()
        today = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y-%m-%d")
        failed = False
        if stream.file is not None and (
                stream.file.num_rows + stream.pending_rows >= self.rotate_rows
                or stream.file.nbytes >= self.rotate_bytes or now - stream.opened >= self.rotate_s
                or today != stream.date):
            if stream.unwritten:  # complete: written now, before its successor takes any rows
                try:
                    self._write_file(stream)
                except Exception:  # storage failing: the file keeps taking rows until a write succeeds
                    failed = True  # and the write below tries again, raising for the writer to count
            if not stream.unwritten:
                stream.file, stream.path, stream.tail = None, None, None  # the file stays as written
        if stream.pending:
            if stream.file is None:
                stream.seq += 1
                stream.opened, stream.date = now, today
                started = _dt.datetime.fromtimestamp(now, _dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
                stream.path = (f"{self.root.rstrip('/')}/{stream.table}/date={today}/"
                               f"{started}-{self.host}-{os.getpid()}-{stream.seq:05d}.parquet")
                schema = self._schema(stream.table)
                stream.file = ParquetBuilder(schema, statistics={n for n, _ in schema} & set(STATISTICS_COLUMNS),
                                             uncompressed=stream.uncompressed)
                stream.tail, stream.tail_rows = None, 0
            pending, rows = stream.pending, stream.pending_rows
            stream.pending, stream.pending_rows = [], 0
            parts, group_rows = pending, rows
            if stream.tail:  # the last row group is small: encoded again with these rows, as one
                stream.file.drop_last_row_group()
                parts, group_rows = [*stream.tail, *pending], stream.tail_rows + rows
            try:
                stream.file.add_row_group(self._columns(stream.table, parts), group_rows)
            except Exception:  # rows that cannot be encoded are lost, counted, never retried
                if stream.tail:
                    stream.file.add_row_group(self._columns(stream.table, stream.tail), stream.tail_rows)
                with self.lock:
                    self.dropped[stream.table] += rows
                raise
            stream.tail, stream.tail_rows = (parts, group_rows) if group_rows < SMALL_ROW_GROUP else (None, 0)
            stream.unwritten += rows
        if stream.unwritten and (write_all or failed or time.monotonic() - stream.written_at >= self.flush_s):
            self._write_file(stream)

    def _write_file(self, stream: _Stream) -> None:
        """Write the stream's file whole; its rows are written. On failure they stay in the builder for the
        next try, unless storage has failed for longer than the queue holds (then they are dropped, counted)."""
        try:
            self._write_whole(stream.path, stream.file.getvalue())
        except Exception:
            if stream.unwritten > self.queue_rows:  # storage failing for long: keep memory bounded, count the loss
                with self.lock:
                    self.dropped[stream.table] += stream.unwritten
                stream.file, stream.path, stream.tail, stream.unwritten = None, None, None, 0  # as last written
            raise  # the rows stay in the file's builder: the next flush writes them again
        with self.lock:
            self.written[stream.table] += stream.unwritten
            self.files_written += 1
        stream.unwritten = 0
        stream.written_at = time.monotonic()

    def _columns(self, table: str, parts: list) -> dict[str, Any]:
        if table == "predictions":
            return self._prediction_columns(parts)
        return _joined(parts, list(OUTCOME_COLUMNS))

    def _schema(self, table: str) -> list[tuple[str, str]]:
        if table == "outcomes":
            return list(OUTCOME_COLUMNS)
        features = [(f"feature.{feature}", "double" if feature in self.numeric else "string")
                    for feature in self.feature_columns]
        return [*PREDICTION_COLUMNS, *features]

    def _write_whole(self, path: str, content: bytes) -> None:
        """The complete file: under a temporary name then renamed (local), or one whole object (remote)."""
        if self.local:
            folder, name = os.path.split(path)
            os.makedirs(folder, exist_ok=True)
            temporary = os.path.join(folder, f".{name}.tmp")
            with open(temporary, "wb") as handle:
                handle.write(content)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)  # atomic: readers see the old file or the new one
        else:
            self.fs.pipe_file(path, content)  # an object appears only when it is complete

    @staticmethod
    def _outcome_columns(ts: float, name: str, version: str, items: list[tuple[str, Any]]) -> dict[str, Any]:
        import numpy as np

        n = len(items)
        same = np.zeros(n, dtype=np.int64)
        return {
            "request_id": Strings.from_list([rid for rid, _ in items]),
            "ts": np.full(n, int(ts * 1000), dtype=np.int64),
            "model": Strings.from_list([name]).take(same),
            "version": Strings.from_list([version]).take(same),
            "outcome": Strings.from_list([json.dumps(outcome) for _, outcome in items]),
            "seq": np.array([next(_OUTCOME_SEQ) for _ in items], dtype=np.int64),
        }

    def _predictions(self, requests: list[tuple[str, float, float, int]], name: str, version: str,
                     checked: Any, predictions: list) -> _Predictions:
        """What the writer needs of a put, copied out of the batch (its matrix is not kept alive)."""
        import numpy as np

        n = len(checked.instances)
        numeric = None
        if self.numeric:
            numeric = np.empty((len(self.numeric), n))  # a feature per row: each copied in one contiguous run
            for j, feature in enumerate(self.numeric):
                source = checked.features.get(feature)
                numeric[j] = np.nan if source is None else source
        texts = {}
        for feature in self.text_features:
            source = checked.features.get(feature)
            if source is None:
                continue
            if feature in self.hashed:
                # missing is null, as unhashed: None, or NaN in a numeric feature's column
                texts[feature] = Strings.from_list([None if v is None or v != v else self._hash(v) for v in source])
            else:
                key = self.category_key
                texts[feature] = Strings.from_list([v if type(v) is str else None if v is None else key(v)
                                                    for v in source])
        instance_json = Strings.from_list([_dumps(self._private(i)) for i in _json_values(checked.instances)]) \
            if self.instance_json else None
        return _Predictions(Strings.from_list([rid for rid, *_ in requests]),
                            np.array([count for *_, count in requests], dtype=np.int64),
                            np.array([int(ts * 1000) for _, ts, _, _ in requests], dtype=np.int64),
                            np.array([seconds * 1000 for _, _, seconds, _ in requests]),
                            name, version, dict(checked.flags), _json_column(predictions), instance_json, numeric, texts)

    def _prediction_columns(self, parts: list[_Predictions]) -> dict[str, Any]:
        """One row per instance, column by column (numpy does the per-row work), in the writer thread."""
        import numpy as np

        counts = np.concatenate([p.counts for p in parts])
        n = int(counts.sum())
        request = np.repeat(np.arange(len(counts)), counts)  # row -> its request
        part = np.repeat(np.arange(len(parts)), [p.rows for p in parts])  # row -> its put
        starts = np.cumsum([0, *(p.rows for p in parts)])
        flags = {int(start) + i: labels for p, start in zip(parts, starts) for i, labels in p.flags.items()}
        columns: dict[str, Any] = {
            "request_id": Strings.concat([p.request_ids for p in parts]).take(request),
            "instance": (np.arange(n) - (np.cumsum(counts) - counts)[request]).astype(np.int32),
            "ts": np.concatenate([p.ts_ms for p in parts])[request],
            "model": Strings.from_list([p.name for p in parts]).take(part),
            "version": Strings.from_list([p.version for p in parts]).take(part),
            "latency_ms": np.concatenate([p.latency_ms for p in parts])[request],
            "guard": _guard_column(flags, n),
            "prediction": Strings.concat([p.prediction for p in parts]),
        }
        if self.instance_json:
            columns["instance_json"] = Strings.concat([p.instance_json for p in parts])
        if self.numeric:
            by_feature = np.concatenate([p.numeric for p in parts], axis=1)  # NaN is written as null
            for j, feature in enumerate(self.numeric):
                columns[f"feature.{feature}"] = by_feature[j]
        for feature in self.text_features:
            if any(feature in p.texts for p in parts):
                columns[f"feature.{feature}"] = Strings.concat(
                    [p.texts[feature] if feature in p.texts else _null_strings(p.rows) for p in parts])
        return columns

    def _hash(self, value: Any) -> str:
        return hashlib.sha256((self.hash_salt + self.category_key(value)).encode()).hexdigest()[:16]

    def _private(self, instance: Any) -> Any:
        """The instance as logged: excluded fields left out, hashed fields replaced by their hash."""
        if not isinstance(instance, dict) or not (self.hashed or self.excluded):
            return instance
        return {k: (self._hash(v) if k in self.hashed and v is not None else v)
                for k, v in instance.items() if k not in self.excluded}
