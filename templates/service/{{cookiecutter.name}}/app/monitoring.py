"""Data monitoring: the inference log, drift against the training data, and the skew guard.

- Every answered prediction goes to the inference log (app/inference_log.py: Parquet, written by a
  background thread, never blocking the request).
- Drift: the values of the last ``window`` instances per feature against ``model/reference.json``
  (written at export from the training data): PSI on the reference's quantile bins, PSI and a
  chi-square test for categories, the change in null rate, and the same for the predictions.
- Skew guard: values outside the training range, categories never seen in training and nulls where
  training had none are counted per feature; with ``guard: reject`` such a request gets a 422.

This file is plain runtime code with numpy and the standard library at import: jupyter-mlship imports this same file in the notebook kernel to build the
reference profile and in ``mlship monitor`` to compute drift offline, so all three agree on the bins.
"""

from __future__ import annotations

import contextvars
import datetime as _dt
import json
import logging
import math
import os
import re
import threading
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

log = logging.getLogger("app.monitoring")

# --- thresholds (the usual reading of PSI: < 0.1 stable, 0.1-0.25 moderate, > 0.25 major shift) -------
PSI_WARN, PSI_ALERT = 0.1, 0.25
EMPTY_BIN = 1e-4  # an empty bin counts as this fraction, as in Evidently, so PSI stays finite
MIN_DRIFT_ROWS = 500  # below this many values in the window, a verdict would be noise
# A categorical feature is called drifted only when its PSI is over a threshold AND the chi-square test
# says the difference is not sampling noise: with many categories and a small window, PSI's noise alone
# is about (K - 1) * (1/n + 1/m) (0.11 for 51 categories and 500 values: a false "warn" most of the time).
DRIFT_P_VALUE = 0.01
QUANTILE_BINS = 10  # deciles of the reference
TOP_CATEGORIES = 50  # categories kept by name; the rest are "other"
WIDE_ARRAY = 32  # arrays wider than this are summarised (norm, mean), not watched position by position
OTHER = "__other__"
REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_PATTERN = re.compile(r"^[\x21-\x7e]{1,200}$")  # visible ASCII, as HTTP headers allow

# --- request ids ----------------------------------------------------------------------------------------

_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


REQUEST_ID_PROBLEM = "X-Request-ID: must be 1 to 200 visible ASCII characters"


_REQUEST_IDS: list[str] = []  # random ids not yet handed out
if hasattr(os, "register_at_fork"):  # POSIX: a forked worker must not hand out its parent's
    os.register_at_fork(after_in_child=_REQUEST_IDS.clear)


def new_request_id() -> str:
    """32 random hex digits, as a uuid4's hex (without the uuid object). The random bytes are read 4 KB
    at a time: ``os.urandom`` gives up the GIL for its system call, and under load another thread (the
    log's writer, the model's pool) then held it while requests waited (a profile of 100-row requests at
    c16 put 34 µs a request there, against 0.45 µs for the call alone). list.pop() is atomic."""
    try:
        return _REQUEST_IDS.pop()
    except IndexError:
        block = os.urandom(4096).hex()
        _REQUEST_IDS.extend(block[i:i + 32] for i in range(0, len(block), 32))
        return _REQUEST_IDS.pop()


def valid_request_id(given: bytes) -> str | None:
    """The X-Request-ID header's value as text, or None when it is not 1 to 200 visible ASCII characters."""
    text = given.decode("latin-1")
    return text if REQUEST_ID_PATTERN.match(text) else None


def request_id() -> str:
    """The id of the request being answered (set by RequestIdMiddleware)."""
    return _request_id.get() or new_request_id()


class RequestIdMiddleware:
    """X-Request-ID in (or a new uuid4 hex), the same X-Request-ID out, on every response."""

    def __init__(self, app: Callable) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(REQUEST_ID_HEADER.encode())
        rid = new_request_id() if given is None else valid_request_id(given)
        if rid is None:
            body = json.dumps({"detail": REQUEST_ID_PROBLEM}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            return await send({"type": "http.response.body", "body": body})
        token = _request_id.set(rid)

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)


# --- features: what is watched, taken from the JSON instances -------------------------------------------


def watched_features(input_schema: dict) -> dict[str, str]:
    """Feature name -> kind ("numeric", "categorical" or "other") for this input schema."""
    kind = input_schema["kind"]
    if kind in ("dataframe", "records"):
        return {c["name"]: _column_kind(c) for c in input_schema["columns"]}
    if kind == "ndarray":
        if (input_schema.get("width") or 0) > WIDE_ARRAY:
            return {"l2_norm": "numeric", "mean": "numeric"}
        value_kind = "numeric" if input_schema.get("json_type") in ("integer", "number") else "categorical"
        return {f"x{i}": value_kind for i in range(input_schema["width"])}
    if kind == "strings":
        return {"length": "numeric"}
    return {"value": "numeric" if input_schema.get("json_type") in ("integer", "number") else "categorical"}


def _column_kind(column: dict) -> str:
    if column.get("dtype") == "category" or column["json_type"] in ("string", "boolean"):
        return "other" if str(column.get("dtype", "")).startswith("datetime64") else "categorical"
    return "numeric"


def instance_features(instances: list, input_schema: dict) -> dict[str, Any]:
    """Feature name -> one value per instance, from validated JSON instances: a float array (NaN where
    missing) for a numeric feature, a list (None where missing) for any other."""
    kind = input_schema["kind"]
    kinds = watched_features(input_schema)
    if kind in ("dataframe", "records"):
        columns = {c["name"]: [i.get(c["name"]) for i in instances] for c in input_schema["columns"]}
        return {name: _floats(values) if kinds[name] == "numeric" else values for name, values in columns.items()}
    if kind == "ndarray":
        width = input_schema["width"]
        if kinds.get("x0") == "categorical":
            return {f"x{i}": [row[i] for row in instances] for i in range(width)}
        rows = _floats(instances).reshape(len(instances), width)  # numpy reads None as NaN
        if width > WIDE_ARRAY:
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN row has no mean: NaN
                return {"l2_norm": np.sqrt(np.nansum(rows * rows, axis=1)), "mean": np.nanmean(rows, axis=1)}
        # column-major: each feature one contiguous array, for the guard, the window and the log
        return {f"x{i}": column for i, column in enumerate(np.asfortranarray(rows).T)}
    if kind == "strings":
        return {"length": _floats([None if s is None else len(s) for s in instances])}
    return {"value": _floats(instances) if kinds["value"] == "numeric" else list(instances)}


def _floats(values: list) -> np.ndarray:
    """Numbers (None or non-numbers: NaN) as a float array, in one numpy call where possible."""
    if isinstance(values, np.ndarray) and values.dtype == np.float64:  # app.convert.float_rows' matrix
        return values
    try:
        return np.array(values, dtype=float)
    except (TypeError, ValueError):
        return np.array([v if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                         for v in values], dtype=float)


def member(name: str) -> str:
    """A field in a path for messages: .age, or ["m.1"] where a name is not a plain word."""
    return f".{name}" if name.isidentifier() else f"[{json.dumps(name, ensure_ascii=False)}]"


def feature_path(input_schema: dict, index: int, name: str) -> str:
    """Where a feature's value sits in the request, for messages: instances[3].age, instances[3][2]."""
    kind = input_schema["kind"]
    if kind in ("dataframe", "records"):
        return f"instances[{index}]{member(name)}"
    if kind == "ndarray" and name.startswith("x") and name[1:].isdigit():
        return f"instances[{index}][{name[1:]}]"
    if kind in ("ndarray", "strings"):
        return f"instances[{index}] ({name})"
    return f"instances[{index}]"


def category_key(value: Any) -> str:
    """Categories as strings: strings as they are, date-times in ISO 8601, other values (true, 3) as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (_dt.date, _dt.time)):
        return value.isoformat()
    return json.dumps(value)


def prediction_values(predictions: list, output_schema: dict) -> tuple[str, list]:
    """One watched value per prediction: the number, the label, or the argmax of a vector."""
    kind = output_schema.get("kind")
    if kind == "vector":
        return "categorical", [None if not p else int(np.nanargmax(np.array(p, dtype=float))) for p in predictions]
    if kind == "record":
        columns = output_schema.get("columns") or []
        if not columns:
            return "other", [None] * len(predictions)
        first = columns[0]["name"]
        values = [p.get(first) if isinstance(p, dict) else None for p in predictions]
        return ("numeric" if columns[0]["json_type"] in ("number",) else "categorical"), values
    if output_schema.get("json_type") == "number":
        return "numeric", list(predictions)
    return "categorical", list(predictions)


# --- the reference profile of one feature ---------------------------------------------------------------


def _numeric(values: Any) -> np.ndarray:
    """The values present (not None, not NaN) as a float array."""
    array = _floats(values) if not isinstance(values, np.ndarray) else values.astype(float, copy=False)
    return array[~np.isnan(array)]


def _missing(values: Any) -> int:
    if isinstance(values, np.ndarray) and values.dtype.kind == "f":
        return int(np.isnan(values).sum())
    return sum(1 for v in values if v is None or (isinstance(v, float) and math.isnan(v)))


def profile_values(kind: str, values: list) -> dict:
    """What the reference keeps of one feature: no raw rows, only aggregates."""
    n = len(values)
    missing = _missing(values)
    profile: dict[str, Any] = {"kind": kind, "count": n, "null_rate": missing / n if n else 0.0}
    if kind == "numeric":
        present = _numeric(values)
        if present.size:
            quantiles = np.quantile(present, np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1])
            edges = sorted({float(q) for q in quantiles})
            profile.update(
                min=float(present.min()), max=float(present.max()), mean=float(present.mean()),
                std=float(present.std()), edges=edges,
                fractions=(bin_counts(present, edges) / present.size).tolist(),
            )
    elif kind == "categorical":
        keys = [category_key(v) for v in values if v is not None]
        counts: dict[str, int] = {}
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CATEGORIES]
        total = len(keys) or 1
        profile.update(
            categories={k: c / total for k, c in top},
            other=1 - sum(c for _, c in top) / total,
            complete=len(counts) <= TOP_CATEGORIES,  # every value seen in training is named
            distinct=len(counts),
        )
    return profile


# --- drift measures -------------------------------------------------------------------------------------


def bin_counts(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """Counts in the bins (-inf, e1], (e1, e2], ..., (ek, inf)."""
    return np.bincount(np.searchsorted(np.asarray(edges, dtype=float), values, side="left"),
                       minlength=len(edges) + 1).astype(float)


def psi(expected: Any, actual: Any) -> float:
    """Population Stability Index: sum((a - e) * ln(a / e)) over bins of fractions (empty bins = 1e-4)."""
    e = np.clip(np.asarray(expected, dtype=float), EMPTY_BIN, None)
    a = np.clip(np.asarray(actual, dtype=float), EMPTY_BIN, None)
    return float(np.sum((a - e) * np.log(a / e)))


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for a chi-square distribution with integer dof (closed form, no scipy needed)."""
    if dof < 1:
        return 1.0
    if x <= 0:
        return 1.0
    half = x / 2
    if dof % 2 == 0:
        total, term = 0.0, 1.0
        for i in range(dof // 2):
            if i:
                term *= half / i
            total += term
        return min(1.0, math.exp(-half) * total)
    # odd: start from dof 1, then sf(k + 2) = sf(k) + (x/2)^(k/2) e^(-x/2) / Gamma(k/2 + 1)
    sf, k = math.erfc(math.sqrt(half)), 1
    while k < dof:
        sf += math.exp((k / 2) * math.log(half) - half - math.lgamma(k / 2 + 1))
        k += 2
    return min(1.0, sf)


def chi_square(reference_counts: Any, current_counts: Any) -> tuple[float, int, float]:
    """Pearson's chi-square test of homogeneity on a 2 x K table: (statistic, dof, p-value)."""
    table = np.array([reference_counts, current_counts], dtype=float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = table.shape[1] - 1
    return statistic, dof, chi2_sf(statistic, dof)


def drift(profile: dict, values: list) -> dict:
    """One feature's drift: the window's values against its reference profile."""
    n = len(values)
    result: dict[str, Any] = {"kind": profile["kind"], "n": n}
    if not n:
        return {**result, "status": "no data"}
    missing = _missing(values)
    result["null_rate"] = missing / n
    result["reference_null_rate"] = profile.get("null_rate", 0.0)
    result["null_rate_change"] = result["null_rate"] - result["reference_null_rate"]
    if profile["kind"] == "numeric" and "edges" in profile:
        present = _numeric(values)
        if present.size:
            result["psi"] = psi(profile["fractions"], bin_counts(present, profile["edges"]) / present.size)
    elif profile["kind"] == "categorical" and "categories" in profile:
        names = list(profile["categories"])
        index = {name: i for i, name in enumerate(names)}
        counts = np.zeros(len(names) + 1)
        present = [category_key(v) for v in values if v is not None]
        for key in present:
            counts[index.get(key, len(names))] += 1
        if present:
            expected = [*profile["categories"].values(), profile.get("other", 0.0)]
            result["psi"] = psi(expected, counts / len(present))
            reference_n = profile["count"] * (1 - profile.get("null_rate", 0.0))
            result["chi2"], result["chi2_dof"], result["p_value"] = chi_square(
                np.array(expected) * reference_n, counts)
    score = result.get("psi")
    if n < MIN_DRIFT_ROWS:
        result["status"] = "insufficient data"
    elif score is None:
        result["status"] = "ok"
    else:
        level = "alert" if score > PSI_ALERT else "warn" if score > PSI_WARN else "ok"
        if level != "ok" and result.get("p_value", 0.0) >= DRIFT_P_VALUE:
            level = "ok"  # as large a PSI as chance alone gives this many categories and values
        result["status"] = level
    return result


# --- online state: the window, the guard -----------------------------------------------------------------


class FloatWindow:
    """The newest ``size`` values of a numeric feature: a ring of floats (NaN for missing), so taking in a
    drain's values is one copy, not a Python float per value."""

    def __init__(self, size: int) -> None:
        self.values = np.empty(max(1, size))
        self.end = 0  # where the next value goes
        self.filled = 0

    def __len__(self) -> int:
        return self.filled

    def extend(self, values: Any) -> None:
        values = np.asarray(values, dtype=float)[-len(self.values):]
        size, n = len(self.values), len(values)
        first = min(n, size - self.end)
        self.values[self.end:self.end + first] = values[:first]
        self.values[:n - first] = values[first:]
        self.end = (self.end + n) % size
        self.filled = min(size, self.filled + n)

    def snapshot(self) -> np.ndarray:
        """The values, oldest first (a copy)."""
        if self.filled < len(self.values):
            return self.values[:self.filled].copy()
        return np.concatenate([self.values[self.end:], self.values[:self.end]])


def window_for(kind: str, size: int) -> Any:
    return FloatWindow(size) if kind == "numeric" else deque(maxlen=size)


def snapshot(window: Any) -> Any:
    return window.snapshot() if isinstance(window, FloatWindow) else list(window)

DRAIN_S = 0.25  # how often answered requests are taken into the window, the guard counts and the log
DRAIN_ROWS = 4096  # ... or as soon as this many instances wait (keeps the raw instances' memory small)


@dataclass
class Checked:
    """What the guard learned about instances (one request's, or many requests' together)."""

    instances: list
    features: dict[str, Any]  # instance_features()
    flags: dict[int, list[str]]  # instance index -> "age:out_of_range", ... (flagged instances only)
    violations: list[str]  # messages for a 422 (only when asked for)
    problems: list[dict] = field(default_factory=list)  # the same as 422 entries: loc, field, msg, type
    counts: dict[tuple[str, str], int] = field(default_factory=dict)  # (feature, problem) -> values


@dataclass
class Answered:
    """One answered prediction request, waiting to be monitored."""

    request_id: str
    ts: float
    instances: list
    predictions: list
    seconds: float
    checked: Checked | None  # already checked on the request path (guard: reject)


class Monitor:
    """Drift window + skew guard + inference log for one service process.

    On the request path: ``check`` (only with guard "reject") and ``record``, which only appends the
    answered request to a list. Every DRAIN_S seconds (or once DRAIN_ROWS instances wait) ``drain`` takes
    everything recorded and does the work for all of it at once: features as arrays, the guard's counts,
    the drift window, the log rows. It runs on the service's event loop between requests, not on a
    thread of its own: a second Python thread would fight the loop for the GIL, and the loop would wait
    up to a switch interval (5 ms) each time the model releases the GIL.
    Readers (``report``, the metrics) first take what is waiting, so they never lag behind.
    """

    def __init__(self) -> None:
        self.enabled = False
        self.reference: dict = {}
        self.input_schema: dict = {}
        self.output_schema: dict = {}
        self.name = self.version = ""
        self.guard_mode = "flag"
        self.window_size = 1000
        self.exclude: set[str] = set()
        self.hash: set[str] = set()
        self.lock = threading.Lock()  # the window and the counts
        self.windows: dict[str, Any] = {}  # FloatWindow for numeric features, else a deque
        self.prediction_window: deque = deque(maxlen=1)
        self.guard_counts: dict[tuple[str, str], int] = {}
        self.requests_flagged = 0
        self.requests_rejected = 0
        self.log: Any = None  # app.inference_log.InferenceLog once started
        self.log_error = ""
        self.answered: list[Answered] = []  # recorded, not yet taken in
        self.answered_rows = 0
        self.answered_lock = threading.Lock()
        self.drain_lock = threading.Lock()  # one taker at a time: the loop, a reader (a route's thread), stop()
        self.loop: Any = None  # the service's asyncio loop, which runs drain
        self.drain_scheduled = False
        self.stopping = False

    @property
    def guard_rejects(self) -> bool:
        """Must each request be checked before the model sees it (guard "reject")?"""
        return self.enabled and self.guard_mode == "reject"

    # start-up and shut-down (the lifespan)
    def start(self, ship: dict, project_dir: str, loop: Any, env: dict | None = None) -> None:
        """Read the reference, open the log; ``drain`` then runs on ``loop`` (the service's asyncio loop)."""
        env = dict(os.environ if env is None else env)
        options = ship.get("monitoring") or {}
        self.name, self.version = ship["name"], ship["version"]
        self.input_schema, self.output_schema = ship["input"], ship["output"]
        path = os.path.join(project_dir, "model", "reference.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                self.reference = json.load(handle)
        self.guard_mode = env.get("MLSHIP_GUARD") or options.get("guard") or "flag"
        if self.guard_mode not in ("flag", "reject"):
            raise ValueError(f"MLSHIP_GUARD: {self.guard_mode!r} is not 'flag' or 'reject'")
        self.window_size = int(env.get("MLSHIP_DRIFT_WINDOW") or options.get("window") or 1000)
        self.exclude = set(options.get("log_exclude") or [])
        self.hash = set(options.get("log_hash") or [])
        kinds = watched_features(self.input_schema)
        self.windows = {name: window_for(kind, self.window_size) for name, kind in kinds.items()}
        self.prediction_window = deque(maxlen=self.window_size)
        target = env.get("MLSHIP_LOG_DIR") or os.path.join(project_dir, "logs")
        if target.lower() != "off":
            try:
                self._start_log(target, kinds, env)
            except Exception as exc:  # a log that cannot be opened must not take predictions down with it
                self.log, self.log_error = None, f"MLSHIP_LOG_DIR {target}: {type(exc).__name__}: {exc}"
                log.error("the inference log is off: %s", self.log_error)
        self.stopping = False
        self.loop = loop
        loop.call_later(DRAIN_S, self._tick)
        self.enabled = True

    def _start_log(self, target: str, kinds: dict[str, str], env: dict) -> None:
        from app.inference_log import InferenceLog  # the service only (fsspec loads there, for a URL)

        self.log = InferenceLog(
            target,
            feature_columns={n: k for n, k in kinds.items() if n not in self.exclude},
            hashed=self.hash,
            excluded=self.exclude,
            category_key=category_key,
            flush_s=float(env.get("MLSHIP_LOG_FLUSH_S") or 2),
            queue_rows=int(env.get("MLSHIP_LOG_QUEUE_ROWS") or 100_000),
            rotate_rows=int(env.get("MLSHIP_LOG_ROTATE_ROWS") or 50_000),
            rotate_bytes=int(float(env.get("MLSHIP_LOG_ROTATE_MB") or 16) * 2**20),
            rotate_s=float(env.get("MLSHIP_LOG_ROTATE_S") or 600),
            storage_options=json.loads(env.get("MLSHIP_LOG_STORAGE_OPTIONS") or "{}"),
            instance_json=not features_hold_instance(self.input_schema),
        )
        self.log.start()

    def stop(self) -> None:
        """Take in everything recorded, then write the log (SIGTERM -> the lifespan's shut-down -> here)."""
        self.stopping = True
        self.drain()
        if self.log is not None:
            self.log.stop()

    def _tick(self) -> None:
        if not self.stopping:
            self.drain()
            self.loop.call_later(DRAIN_S, self._tick)

    def _drain_soon(self) -> None:
        self.drain_scheduled = False
        self.drain()

    # per request
    def check(self, instances: list) -> Checked:
        """The guard on one request before the model sees it, with messages (guard "reject")."""
        checked = self._inspect(instances, describe=True)
        with self.lock:
            self._count(checked)
            if checked.violations:
                self.requests_rejected += 1
        return checked

    def record(self, request_id: str, instances: list, predictions: list, seconds: float,
               checked: Checked | None = None) -> None:
        """After a prediction: remember it for the window, the guard counts and the log. O(1), never raises."""
        if not self.enabled:
            return
        with self.answered_lock:
            self.answered.append(Answered(request_id, time.time(), instances, predictions, seconds, checked))
            self.answered_rows += len(instances)
            full = self.answered_rows >= DRAIN_ROWS
        if full and not self.drain_scheduled:  # after the callbacks already due: answers go out first
            self.drain_scheduled = True
            self.loop.call_soon(self._drain_soon)

    def drain(self) -> None:
        """Take in every recorded request: guard counts, drift window, log rows. Never raises."""
        with self.drain_lock:
            with self.answered_lock:
                answered, self.answered, self.answered_rows = self.answered, [], 0
            if not answered:
                return
            try:
                self._take_in(answered)
            except Exception:  # monitoring must never fail a prediction, nor stop the drain
                log.exception("monitoring %d answered requests failed", len(answered))

    def _take_in(self, answered: list[Answered]) -> None:
        from app.convert import join_instances  # here: jupyter-mlship imports this module without app/

        unchecked = [a for a in answered if a.checked is None]
        groups: list[tuple[list[Answered], Checked]] = [([a], a.checked) for a in answered if a.checked is not None]
        if unchecked:
            checked = self._inspect(join_instances([a.instances for a in unchecked]), describe=False)
            groups.append((unchecked, checked))
            ends = np.cumsum([len(a.instances) for a in unchecked])
            flagged = len(set(np.searchsorted(ends, list(checked.flags), side="right").tolist()))
            with self.lock:
                self._count(checked)
                self.requests_flagged += flagged
        for requests, checked in groups:
            predictions = requests[0].predictions if len(requests) == 1 else [
                p for a in requests for p in a.predictions]
            latest = -self.window_size  # only the newest values can stay in the window
            with self.lock:
                for name, values in checked.features.items():
                    values = values[latest:]
                    self.windows[name].extend(values)  # numeric: arrays into a FloatWindow; else lists
                self.prediction_window.extend(prediction_values(predictions[latest:], self.output_schema)[1])
            if self.log is not None:
                self.log.put_requests([(a.request_id, a.ts, a.seconds, len(a.instances)) for a in requests],
                                      self.name, self.version, checked, predictions)

    def _inspect(self, instances: list, describe: bool) -> Checked:
        """Features and guard flags of ``instances``; with ``describe``, the 422 messages too."""
        features = instance_features(instances, self.input_schema)
        checked = Checked(instances, features, {}, [])
        profiles = self.reference.get("features") or {}
        tabular = self.input_schema["kind"] in ("dataframe", "records")
        clean = clean_numeric_features(features, profiles)
        for name, values in features.items():
            profile = profiles.get(name)
            if not profile or name in clean:
                continue
            found = guard_indices(profile, values)
            for problem, indices in found.items():
                label = f"{name}:{problem}"
                checked.counts[(name, problem)] = len(indices)
                for index in indices:
                    checked.flags.setdefault(index, []).append(label)
            if describe and found:
                originals = _original_values(instances, self.input_schema, name)
                for index, problem, message in _described(found, profile, values, originals):
                    path = feature_path(self.input_schema, index, name)
                    checked.violations.append(f"{path}: {message}")
                    loc = ["body", "instances", index] + ([name] if tabular else [])
                    checked.problems.append({"loc": loc, "field": path, "msg": message,
                                             "type": f"skew_guard_{problem}"})
        return checked

    def _count(self, checked: Checked) -> None:
        """Add a check's flags to the guard's counts (under self.lock)."""
        for key, count in checked.counts.items():
            self.guard_counts[key] = self.guard_counts.get(key, 0) + count

    def feedback(self, items: list[tuple[str, Any]]) -> int:
        """Queue outcome rows; the number dropped because the queue was full."""
        if self.log is None:
            return 0
        return self.log.put_outcomes(self.name, self.version, items)

    # reading
    def report(self) -> dict:
        self.drain()  # what was answered until now counts
        with self.lock:
            windows = {name: snapshot(values) for name, values in self.windows.items()}
            predictions = list(self.prediction_window)
            counts = dict(self.guard_counts)
            flagged, rejected = self.requests_flagged, self.requests_rejected
        profiles = self.reference.get("features") or {}
        features = {name: drift(profiles[name], values) for name, values in windows.items() if name in profiles}
        prediction_profile = self.reference.get("prediction")
        guard_features: dict[str, dict[str, int]] = {}
        for (name, problem), count in sorted(counts.items()):
            guard_features.setdefault(name, {})[problem] = count
        return {
            "model": {"name": self.name, "version": self.version},
            "reference": {k: self.reference.get(k) for k in ("source", "rows")} if self.reference else None,
            "window": {"size": self.window_size, "filled": max((len(v) for v in windows.values()), default=0)},
            "thresholds": {"psi_warn": PSI_WARN, "psi_alert": PSI_ALERT, "min_rows": MIN_DRIFT_ROWS,
                           "categorical_p_value": DRIFT_P_VALUE},
            "features": features,
            "prediction": drift(prediction_profile, predictions) if prediction_profile else None,
            "guard": {"mode": self.guard_mode, "requests_flagged": flagged, "requests_rejected": rejected,
                      "features": guard_features},
            "log": self.log.status() if self.log is not None else {"error": self.log_error or "off"},
        }

    def describe(self) -> list:
        return []  # metric names vary with the features: nothing to check at registration

    def collect(self) -> Any:
        """Prometheus metrics, computed at scrape time (register the Monitor with a CollectorRegistry)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        report = self.report()
        psi_gauge = GaugeMetricFamily("mlship_drift_psi", "PSI of the recent window against the training "
                                      "data, per feature.", labels=["feature"])
        null_gauge = GaugeMetricFamily("mlship_drift_null_rate_change", "Null rate in the window minus the "
                                       "training data's, per feature.", labels=["feature"])
        for name, result in report["features"].items():
            if "psi" in result:
                psi_gauge.add_metric([name], result["psi"])
            if "null_rate_change" in result:
                null_gauge.add_metric([name], result["null_rate_change"])
        yield psi_gauge
        yield null_gauge
        prediction = GaugeMetricFamily("mlship_prediction_drift_psi", "PSI of the recent predictions against "
                                       "the predictions on the training data.")
        if report["prediction"] and "psi" in report["prediction"]:
            prediction.add_metric([], report["prediction"]["psi"])
        yield prediction
        window = GaugeMetricFamily("mlship_drift_window_rows", "Instances in the drift window.")
        window.add_metric([], report["window"]["filled"])
        yield window
        guard = CounterMetricFamily("mlship_guard_violations", "Values outside training: out_of_range, "
                                    "unseen_category, unexpected_null, per feature.", labels=["feature", "kind"])
        for name, problems in report["guard"]["features"].items():
            for problem, count in problems.items():
                guard.add_metric([name, problem], count)
        yield guard
        requests = CounterMetricFamily("mlship_guard_requests", "Requests with guard violations, by action.",
                                       labels=["action"])
        requests.add_metric(["flagged"], report["guard"]["requests_flagged"])
        requests.add_metric(["rejected"], report["guard"]["requests_rejected"])
        yield requests
        if self.log is not None:
            status = report["log"]
            for metric, help_text, key in (
                ("mlship_log_rows_written", "Rows written to the inference log.", "rows_written"),
                ("mlship_log_rows_dropped", "Rows dropped because the log queue was full.", "rows_dropped"),
            ):
                family = CounterMetricFamily(metric, help_text, labels=["table"])
                for table in ("predictions", "outcomes"):
                    family.add_metric([table], status[key][table])
                yield family
            errors = CounterMetricFamily("mlship_log_write_errors", "Failed writes of log files (retried).")
            errors.add_metric([], status["write_errors"])
            yield errors
            queued = GaugeMetricFamily("mlship_log_queue_rows", "Rows waiting to be written.")
            queued.add_metric([], status["queued_rows"])
            yield queued


def clean_numeric_features(features: dict[str, Any], profiles: dict) -> set[str]:
    """The numeric features with nothing for the guard to find (no unexpected NaN, nothing outside the
    training range), found for all features of equal length at once: a few array operations instead of
    guard_indices' several per feature. guard_indices then looks only at the others."""
    names = [name for name, values in features.items() if isinstance(values, np.ndarray)
             and values.dtype == np.float64 and (profiles.get(name) or {}).get("kind") == "numeric"]
    if len(names) < 2 or len({len(features[name]) for name in names}) != 1:
        return set()
    block = np.stack([features[name] for name in names])  # one row per feature
    low, high = (np.array(bounds)[:, None] for bounds in zip(*(training_range(profiles[name]) for name in names)))
    null_ok = np.array([profiles[name].get("null_rate", 0.0) > 0 for name in names])
    with np.errstate(invalid="ignore"):
        outside = ((block < low) | (block > high)).any(axis=1)
    nulls = np.isnan(block).any(axis=1) & ~null_ok
    return {name for name, found in zip(names, outside | nulls) if not found}


def training_range(profile: dict) -> tuple[float, float]:
    """A numeric feature's [min, max] in training; none at all (min > max) when training had only
    missing values there; unbounded when the profile says nothing."""
    if "min" in profile:
        return profile["min"], profile["max"]
    if profile.get("count") and profile.get("null_rate", 0.0) >= 1.0:
        return math.inf, -math.inf
    return -math.inf, math.inf


def guard_indices(profile: dict, values: Any) -> dict[str, Any]:
    """Problem ("unexpected_null", "out_of_range", "unseen_category") -> the indices of the values that
    have it, for values the training data never had. Numeric features are checked as whole arrays."""
    found: dict[str, Any] = {}
    null_ok = profile.get("null_rate", 0.0) > 0
    kind = profile["kind"]
    if kind == "numeric" or isinstance(values, np.ndarray):
        array = values if isinstance(values, np.ndarray) else _floats(values)
        if not null_ok:
            found["unexpected_null"] = np.flatnonzero(np.isnan(array)).tolist()
        if kind == "numeric":
            low, high = training_range(profile)
            with np.errstate(invalid="ignore"):
                found["out_of_range"] = np.flatnonzero((array < low) | (array > high)).tolist()
        return {problem: indices for problem, indices in found.items() if indices}
    categories = profile.get("categories") if kind == "categorical" and profile.get("complete") else None
    for index, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if not null_ok:
                found.setdefault("unexpected_null", []).append(index)
        elif categories is not None and category_key(value) not in categories:
            found.setdefault("unseen_category", []).append(index)
    return found


def guard_feature(name: str, profile: dict, values: Any) -> list[tuple[int, str, str]]:
    """(instance index, problem, message) for values the training data never had, in instance order."""
    return _described(guard_indices(profile, values), profile, values, None)


def _described(found: dict[str, Any], profile: dict, values: Any, originals: list | None) -> list[tuple[int, str, str]]:
    """guard_indices' findings as (index, problem, message), in instance order."""
    described = []
    for index, problem in sorted((index, problem) for problem, indices in found.items() for index in indices):
        value = originals[index] if originals is not None else values[index]
        if isinstance(value, np.generic):
            value = value.item()
        if problem == "unexpected_null":
            message = NULL_MESSAGE
        elif problem == "out_of_range" and "min" not in profile:
            message = f"{value!r}, but the training data had no values here (every one was missing)"
        elif problem == "out_of_range":
            message = (f"{value!r} is outside the training range "
                       f"[{_number(profile['min'])}, {_number(profile['max'])}]")
        else:
            seen = ", ".join(list(profile["categories"])[:10])
            message = f"{value!r} was not seen in training (seen: {seen})"
        described.append((index, problem, message))
    return described


NULL_MESSAGE = "missing (null or left out), but the training data had no missing values here"


def _original_values(instances: list, input_schema: dict, name: str) -> list | None:
    """The request's own values of one feature (messages quote them as sent), where a feature is a field."""
    kind = input_schema["kind"]
    if kind in ("dataframe", "records"):
        return [i.get(name) for i in instances]
    if kind == "ndarray" and name.startswith("x") and name[1:].isdigit():
        position = int(name[1:])
        return [row[position] for row in instances]
    if kind not in ("ndarray", "strings"):
        return list(instances)
    return None


def features_hold_instance(input_schema: dict) -> bool:
    """Do the log's feature columns hold the whole instance as logged (excluded fields left out, hashed
    ones hashed), so that instance_json would only repeat them? Yes for tables (a column per field, all
    scalars) and arrays up to WIDE_ARRAY values; not for text, wide arrays or single values."""
    kind = input_schema["kind"]
    return kind in ("dataframe", "records") or (kind == "ndarray" and (input_schema.get("width") or 0) <= WIDE_ARRAY)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


MONITOR = Monitor()
