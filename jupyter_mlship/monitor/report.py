"""`mlship monitor`: read a service's inference log in place with DuckDB and say how the model is doing.

The log (written by the service's app/monitoring.py) is two Parquet tables under one root, a folder or
any fsspec URL: ``predictions/date=D/*.parquet`` (one row per instance) and ``outcomes/date=D/*.parquet``
(POST /feedback). Outcomes are joined with predictions by request_id (the latest outcome per request
wins, by ts then seq). Per model, version and day (UTC): volume, latency percentiles, the outcome metric
that fits the output schema, label delay; per feature: drift of the --project's version against its
reference profile over time, with the same PSI code the service uses (imported from the template, so the
numbers agree).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime import runtime_module

TABLES = ("predictions", "outcomes")


class MonitorError(ValueError):
    """The log or the project cannot be read; one sentence naming the cause."""


class UnscorableOutcomes(ValueError):
    """No outcome can be compared with its prediction; one sentence saying why."""


@dataclass
class VersionDay:
    model: str
    version: str
    day: str  # UTC
    requests: int
    instances: int
    latency_ms: dict[str, float]  # p50, p95, p99 over requests
    labelled: int = 0  # instances that have an outcome
    metrics: dict[str, float] = field(default_factory=dict)  # accuracy, f1, auc / mae, rmse
    metrics_unavailable: str = ""  # why there is no outcome metric although there are outcomes
    label_delay_s: float | None = None  # median time from prediction to outcome


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    psi: float | None  # over the whole period
    status: str
    null_rate_change: float | None
    by_day: dict[str, float]  # day -> PSI
    reference: list[float]  # fractions per bin / category (reference)
    current: list[float]  # the same over the period
    labels: list[str]  # bin or category names


@dataclass
class MonitorReport:
    source: str
    project: str | None
    since: str | None
    task: str  # "classification" | "regression" | "unknown"
    reference_source: str | None
    drift_version: str | None  # "NAME version V": the --project's rows, the only ones drift is computed over
    rows: list[VersionDay]
    drift: list[FeatureDrift]  # most drifted first
    prediction_drift: FeatureDrift | None
    joined: int  # prediction rows with an outcome
    predictions: int
    outcomes: int
    warnings: list[str] = field(default_factory=list)  # what was left out, and why


# --- reading ----------------------------------------------------------------------------------------------


def parse_since(since: str | None, now: _dt.datetime | None = None) -> _dt.datetime | None:
    """`2026-11-01`, `2026-11-01T12:00`, or a span back from now: `36h`, `7d`, `30m`."""
    if not since:
        return None
    now = now or _dt.datetime.now(_dt.timezone.utc)
    match = re.fullmatch(r"(\d+)\s*([mhd])", since.strip())
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        unit_name = {"m": "minutes", "h": "hours", "d": "days"}[unit]
        return now - _dt.timedelta(**{unit_name: amount})
    try:
        moment = _dt.datetime.fromisoformat(since.strip())
    except ValueError:
        raise MonitorError(f"--since {since!r}: use a date (2026-11-01), a date-time, or a span like 36h or 7d") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=_dt.timezone.utc)


class LogReader:
    """DuckDB over the log's Parquet files, local or behind any fsspec filesystem."""

    def __init__(self, url: str, storage_options: dict | None = None) -> None:
        import duckdb
        import fsspec

        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        except (ImportError, ValueError) as exc:
            raise MonitorError(f"{url}: cannot open this location ({exc})") from exc
        self.con = duckdb.connect()
        # Days are UTC days, like the log's date= folders, whatever the machine's zone.
        self.con.execute("SET TimeZone = 'UTC'")
        from fsspec.implementations.local import LocalFileSystem

        self.protocol: str | None = None
        if not isinstance(self.fs, LocalFileSystem):
            # DuckDB reads through the same fsspec filesystem (s3fs, gcsfs...): no DuckDB extension to fetch.
            self.con.register_filesystem(self.fs)
            self.protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.files = {table: sorted(self.fs.glob(f"{root.rstrip('/')}/{table}/*/*.parquet")) for table in TABLES}
        if not self.files["predictions"]:
            raise MonitorError(f"{url}: no inference log here (no predictions/date=*/*.parquet files)")

    def source(self, table: str, first_day: str | None = None) -> str:
        """A read_parquet() over the table's files (explicit paths: no second listing by DuckDB)."""
        paths = [f"{self.protocol}://{p}" if self.protocol else p for p in self.files[table]
                 if first_day is None or _day_of(p) >= first_day]
        if not paths:  # an empty list is not a valid read_parquet(): an empty table of the same shape
            return f"(SELECT * FROM {self.source(table)} WHERE false)"
        listed = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        return f"read_parquet([{listed}], hive_partitioning = true, union_by_name = true)"

    def query(self, sql: str, params: list | None = None) -> list[tuple]:
        return self.con.execute(sql, params or []).fetchall()

    def unreadable(self) -> list[str]:
        """The files that are not readable Parquet (cut short by a crash of some other writer, a stray
        file), each once; left out of the reading from now on."""
        bad = []
        for table, paths in self.files.items():
            for path in list(paths):
                full = f"{self.protocol}://{path}" if self.protocol else path
                try:
                    self.con.execute("SELECT count(*) FROM parquet_file_metadata(?)", [full]).fetchall()
                except Exception:  # noqa: BLE001 - duckdb.Error of any kind: this file cannot be read
                    paths.remove(path)
                    bad.append(path)
        return bad

    def columns(self, table: str) -> list[str]:
        return [row[0] for row in self.con.execute(f"DESCRIBE SELECT * FROM {self.source(table)}").fetchall()]


def _day_of(path: str) -> str:
    match = re.search(r"/date=(\d{4}-\d{2}-\d{2})/", path)
    return match.group(1) if match else ""


# --- the report -------------------------------------------------------------------------------------------


def build_report(url: str, project: Path | None = None, since: str | None = None,
                 storage_options: dict | None = None) -> MonitorReport:
    """The report over the log's readable files; a file that is not readable Parquet is left out, named."""
    import duckdb

    ship, reference = _project(project)
    reader = LogReader(url, storage_options)
    moment = parse_since(since)
    try:
        return _report(reader, url, project, moment, ship, reference)
    except duckdb.Error as exc:
        bad = reader.unreadable()
        if not bad:
            raise MonitorError(f"{url}: the inference log could not be read: {str(exc).splitlines()[0]}") from exc
    if not reader.files["predictions"]:
        raise MonitorError(f"{url}: no readable prediction files ({len(bad)} not Parquet, e.g. {bad[0]})")
    report = _report(reader, url, project, moment, ship, reference)
    report.warnings += [f"left out {path}: not a readable Parquet file" for path in bad]
    return report


def _report(reader: LogReader, url: str, project: Path | None, moment: _dt.datetime | None, ship: dict | None,
            reference: dict | None) -> MonitorReport:
    # Files of earlier days are not even opened (their date= folder says so); the rest filter on ts.
    first_day = moment.astimezone(_dt.timezone.utc).strftime("%Y-%m-%d") if moment else None
    where = f"WHERE ts >= TIMESTAMPTZ '{moment.isoformat()}'" if moment else ""
    predictions = reader.source("predictions", first_day)
    reader.con.execute(f"CREATE OR REPLACE TEMP VIEW p AS SELECT * FROM {predictions} {where}")
    if reader.files["outcomes"]:
        # The latest outcome per request wins (a correction replaces an earlier report): by time, then by
        # seq, the order of arrival within one process (the items of one POST share a millisecond). Logs
        # written before seq existed have none (null): their ties stay unordered.
        seq = "seq" if "seq" in reader.columns("outcomes") else "NULL"
        reader.con.execute(
            f"CREATE OR REPLACE TEMP VIEW o AS SELECT request_id, outcome, ts AS outcome_ts "
            f"FROM {reader.source('outcomes')} "
            f"QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY ts DESC, {seq} DESC NULLS LAST) = 1")
        outcome_count = reader.query("SELECT count(*) FROM o")[0][0]
    else:
        reader.con.execute("CREATE OR REPLACE TEMP VIEW o AS SELECT NULL::VARCHAR AS request_id, "
                           "NULL::VARCHAR AS outcome, "
                           "NULL::TIMESTAMPTZ AS outcome_ts WHERE false")
        outcome_count = 0
    output = (ship or {}).get("output") or {}
    task = _task(output, reader)
    rows = _version_days(reader)
    # Joined by request_id alone, across models and versions: shadow traffic gets the primary's feedback.
    joined = reader.query(
        "SELECT p.model, p.version, strftime(p.ts, '%Y-%m-%d') AS day, p.instance, p.prediction, o.outcome, "
        "epoch(o.outcome_ts) - epoch(p.ts) AS delay FROM p JOIN o USING (request_id)")
    by_key: dict[tuple[str, str, str], list] = {}
    for model, version, day, instance, prediction, outcome, delay in joined:
        value = _outcome_for(json.loads(outcome), instance)
        if value is not None:  # a list outcome may not reach this instance
            by_key.setdefault((model, version, day), []).append((json.loads(prediction), value, delay))
    warnings = []
    for row in rows:
        labelled = by_key.get((row.model, row.version, row.day), [])
        row.labelled = len(labelled)
        if labelled:
            try:
                row.metrics = outcome_metrics([(p, o) for p, o, _ in labelled], task, output)
            except UnscorableOutcomes as exc:
                row.metrics_unavailable = str(exc)
                warning = f"no outcome metric for {row.model} version {row.version}: {exc}"
                if warning not in warnings:  # one line per version, not one per day
                    warnings.append(warning)
            row.label_delay_s = float(np.median([d for *_, d in labelled]))
    drift, prediction_drift = _drift(reader, reference, ship or {})
    drift_version = f"{ship['name']} version {ship['version']}" if reference and ship else None
    if drift_version and not drift and not prediction_drift:
        warnings.append(f"no predictions of {drift_version} (the --project's) in this log: no drift to show")
    total = reader.query("SELECT count(*) FROM p")[0][0]
    return MonitorReport(
        source=url, project=str(project) if project else None, since=moment.isoformat() if moment else None,
        task=task, reference_source=(reference or {}).get("source"), drift_version=drift_version, rows=rows,
        drift=drift, prediction_drift=prediction_drift, joined=sum(r.labelled for r in rows), predictions=total,
        outcomes=outcome_count, warnings=warnings,
    )


def _project(project: Path | None) -> tuple[dict | None, dict | None]:
    if project is None:
        return None, None
    project = Path(project)
    try:
        ship = json.loads((project / "ship.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MonitorError(f"--project {project}: no readable ship.json ({exc})") from exc
    reference_file = project / "model" / "reference.json"
    reference = json.loads(reference_file.read_text(encoding="utf-8")) if reference_file.is_file() else None
    return ship, reference


def _task(output: dict, reader: LogReader) -> str:
    if output:
        if output.get("kind") == "vector" or output.get("json_type") in ("integer", "string", "boolean"):
            return "classification"
        if output.get("json_type") == "number":
            return "regression"
        return "unknown"
    values = [json.loads(v) for (v,) in reader.query("SELECT prediction FROM p LIMIT 200")]
    if values and all(isinstance(v, list) for v in values):
        return "classification"
    if values and all(isinstance(v, float) and not float(v).is_integer() for v in values):
        return "regression"
    return "classification" if values else "unknown"


def _version_days(reader: LogReader) -> list[VersionDay]:
    result = reader.query(
        "SELECT model, version, strftime(ts, '%Y-%m-%d') AS day, count(DISTINCT request_id), count(*), "
        "quantile_cont(latency_ms, 0.5) FILTER (WHERE instance = 0), "
        "quantile_cont(latency_ms, 0.95) FILTER (WHERE instance = 0), "
        "quantile_cont(latency_ms, 0.99) FILTER (WHERE instance = 0) "
        "FROM p GROUP BY ALL ORDER BY day, model, version")
    return [VersionDay(model=m, version=v, day=d, requests=r, instances=i,
                       latency_ms={"p50": p50 or 0.0, "p95": p95 or 0.0, "p99": p99 or 0.0})
            for m, v, d, r, i, p50, p95, p99 in result]


def _outcome_for(outcome: Any, instance: int) -> Any:
    """One outcome per request applies to each instance; a list holds one outcome per instance."""
    if isinstance(outcome, list):
        return outcome[instance] if instance < len(outcome) else None
    return outcome


# --- outcome metrics --------------------------------------------------------------------------------------


def outcome_metrics(pairs: list[tuple[Any, Any]], task: str, output: dict | None = None) -> dict[str, float]:
    """accuracy, macro F1 and (binary) AUC for classification; MAE and RMSE for regression. Outcomes and
    predictions are compared as JSON values (see `_label`). Raises UnscorableOutcomes when no outcome can
    be compared with its prediction."""
    pairs = [(p, o) for p, o in pairs if o is not None and p is not None]
    if not pairs:
        return {}
    if task == "regression":  # outcomes that are not finite numbers ("cat", NaN) cannot be scored: counted
        usable = [(float(p), float(o)) for p, o in pairs if _finite_number(p) and _finite_number(o)]
        result = {"unscored": float(len(pairs) - len(usable))} if len(usable) < len(pairs) else {}
        if usable:
            error = np.array([p - o for p, o in usable])
            result |= {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean()))}
        return result
    pairs = [(p, _label(o)) for p, o in pairs]
    result = {}
    scores = None
    names = [_label(n) for n in (output or {}).get("labels") or []]
    if all(isinstance(p, list) for p, _ in pairs):  # probabilities: the label is the argmax column
        if names and all(len(p) == len(names) for p, _ in pairs):
            # The output schema names each column's class (the classifier's classes_): outcomes are those.
            pairs = [(p, names.index(o) if o in names else o) for p, o in pairs]
            unknown = "outcomes are not among the classes the model predicts"
        else:  # no class names: only an outcome that is a column index (0..k-1, true as 1) is comparable
            unknown = "outcomes are labels, predictions are probability vectors without class names"
        indexed = [(p, o) for p, o in pairs if isinstance(o, int) and 0 <= o < len(p)]
        if not indexed:
            raise UnscorableOutcomes(unknown)
        if len(indexed) < len(pairs):
            result["unscored"] = float(len(pairs) - len(indexed))
        pairs = indexed
        labels = [int(np.argmax(p)) for p, _ in pairs]
        if all(len(p) == 2 for p, _ in pairs):  # column 1 is the positive class, for AUC as for accuracy
            scores = [float(p[1]) for p, _ in pairs]
    else:
        labels = [_label(p) for p, _ in pairs]
    truth = [o for _, o in pairs]
    result |= {"accuracy": float(np.mean([l == t for l, t in zip(labels, truth)])),
               "f1_macro": macro_f1(labels, truth)}
    if scores is not None:
        auc = roc_auc(scores, truth)
        if auc is not None:
            result["auc"] = auc
    return result


def _label(value: Any) -> Any:
    """A value as the classification metrics compare it: numbers by value (true is 1, 1.0 is 1), text as
    text ("1" is not 1), lists and objects by their JSON (hashable, never equal to a text)."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (list, dict)):
        return ("json", json.dumps(value, sort_keys=True))
    return value


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def macro_f1(predicted: list, truth: list) -> float:
    predicted, truth = [_label(v) for v in predicted], [_label(v) for v in truth]
    scores = []
    for c in set(truth) | set(predicted):
        tp = sum(1 for p, t in zip(predicted, truth) if p == c and t == c)
        fp = sum(1 for p, t in zip(predicted, truth) if p == c and t != c)
        fn = sum(1 for p, t in zip(predicted, truth) if p != c and t == c)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def roc_auc(scores: list[float], labels: list[int]) -> float | None:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count half)."""
    positives = np.array([s for s, y in zip(scores, labels) if y == 1])
    negatives = np.array([s for s, y in zip(scores, labels) if y == 0])
    if not positives.size or not negatives.size:
        return None
    order = np.argsort(np.concatenate([positives, negatives]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([positives, negatives])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[: positives.size].sum() - positives.size * (positives.size + 1) / 2
    return float(u / (positives.size * negatives.size))


# --- drift over time --------------------------------------------------------------------------------------


def _drift(reader: LogReader, reference: dict | None, ship: dict) -> tuple[list[FeatureDrift], FeatureDrift | None]:
    """Drift of the project's own model and version (ship.json) against its reference; other versions
    logging to the same place have their own reference."""
    if not reference:
        return [], None
    own = "FROM p WHERE model = ? AND version = ?"
    key = [ship["name"], ship["version"]]
    if not reader.query(f"SELECT count(*) {own}", key)[0][0]:
        return [], None
    monitoring = runtime_module("monitoring")
    hashed = set((ship.get("monitoring") or {}).get("log_hash") or [])
    columns = set(reader.columns("predictions"))
    result = []
    for name, profile in (reference.get("features") or {}).items():
        column = f"feature.{name}"
        if column not in columns or name in hashed:
            continue
        quoted = '"' + column.replace('"', '""') + '"'
        rows = reader.query(f"SELECT strftime(ts, '%Y-%m-%d'), {quoted} {own}", key)
        result.append(_feature_drift(monitoring, name, profile, rows))
    prediction = None
    if reference.get("prediction"):
        rows = reader.query(f"SELECT strftime(ts, '%Y-%m-%d'), prediction {own}", key)
        values = monitoring.prediction_values([json.loads(v) for _, v in rows], ship.get("output") or {})[1]
        prediction = _feature_drift(monitoring, "(prediction)", reference["prediction"],
                                    [(d, v) for (d, _), v in zip(rows, values)])
    result.sort(key=lambda d: -(d.psi if d.psi is not None else -1))
    return result, prediction


def _feature_drift(monitoring: Any, name: str, profile: dict, rows: list[tuple[str, Any]]) -> FeatureDrift:
    values = [_restore(profile, v) for _, v in rows]
    overall = monitoring.drift(profile, values)
    days: dict[str, list] = {}
    for (day, _), value in zip(rows, values):
        days.setdefault(day, []).append(value)
    by_day = {day: monitoring.drift(profile, vals).get("psi") for day, vals in sorted(days.items())}
    reference, current, labels = _distribution(monitoring, profile, values)
    return FeatureDrift(feature=name, kind=profile["kind"], psi=overall.get("psi"), status=overall["status"],
                        null_rate_change=overall.get("null_rate_change"),
                        by_day={d: v for d, v in by_day.items() if v is not None},
                        reference=reference, current=current, labels=labels)


def _restore(profile: dict, value: Any) -> Any:
    """Log values back to what the profile counted: NaN as missing, categories as their string keys."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _distribution(monitoring: Any, profile: dict, values: list) -> tuple[list[float], list[float], list[str]]:
    present = [v for v in values if v is not None]
    if profile["kind"] == "numeric" and "edges" in profile:
        edges = profile["edges"]
        labels = [f"≤ {edges[0]:.3g}"] + [f"{a:.3g} – {b:.3g}" for a, b in zip(edges, edges[1:])] + [f"> {edges[-1]:.3g}"] \
            if edges else ["all"]
        counts = monitoring.bin_counts(np.array(present, dtype=float), edges) if present else np.zeros(len(edges) + 1)
        return list(profile["fractions"]), (counts / max(len(present), 1)).tolist(), labels
    if profile["kind"] == "categorical" and "categories" in profile:
        names = list(profile["categories"])
        keys = [monitoring.category_key(v) for v in present]
        current = [keys.count(n) / max(len(keys), 1) for n in names]
        current.append(1 - sum(current) if keys else 0.0)
        return [*profile["categories"].values(), profile.get("other", 0.0)], current, [*names, "other"]
    return [], [], []


# --- the terminal ---------------------------------------------------------------------------------------


def terminal_table(report: MonitorReport) -> str:
    lines = [f"inference log {report.source}: {report.predictions} predictions, {report.outcomes} outcomes, "
             f"{report.joined} joined" + (f" (since {report.since})" if report.since else "")]
    metric_names = sorted({m for r in report.rows for m in r.metrics})
    header = ["model", "version", "day", "requests", "instances", "p50 ms", "p95 ms", "p99 ms", "labelled",
              *metric_names, "label delay"]
    table = [header]
    for r in report.rows:
        table.append([r.model, r.version, r.day, str(r.requests), str(r.instances), f"{r.latency_ms['p50']:.1f}",
                      f"{r.latency_ms['p95']:.1f}", f"{r.latency_ms['p99']:.1f}", str(r.labelled),
                      *[f"{r.metrics[m]:.3f}" if m in r.metrics else "" for m in metric_names],
                      _duration(r.label_delay_s)])
    lines += _columns(table)
    if report.drift:
        lines += ["", f"drift of {report.drift_version} against the {report.reference_source} profile "
                      "(PSI: > 0.1 moderate, > 0.25 major), most drifted first:"]
        drift_rows = [["feature", "kind", "PSI", "status", "null rate change", "PSI by day"]]
        for d in ([*report.drift, report.prediction_drift] if report.prediction_drift else report.drift):
            drift_rows.append([d.feature, d.kind, "" if d.psi is None else f"{d.psi:.3f}", d.status,
                               "" if d.null_rate_change is None else f"{d.null_rate_change:+.1%}",
                               " ".join(f"{v:.2f}" for v in d.by_day.values())])
        lines += _columns(drift_rows)
    elif report.project is None:
        lines += ["", "(pass --project PROJECT for drift against the training data's profile)"]
    lines += [f"warning: {warning}" for warning in report.warnings]
    return "\n".join(lines)


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
