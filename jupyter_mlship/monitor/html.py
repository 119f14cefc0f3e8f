"""The monitoring report as one self-contained HTML file (plotly.js inlined: opens offline, mails as is).

People look at drift; they do not read it. So: the features ordered by drift (most drifted first), each
with its distribution against the training data's and its PSI per day; then volume, latency and the
outcome metric per version and day.
"""

from __future__ import annotations

import html
from pathlib import Path

from .report import FeatureDrift, MonitorReport

PSI_WARN, PSI_ALERT = 0.1, 0.25
STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; } td, th { padding: 3px 10px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f5; } td:first-child, th:first-child { text-align: left; }
.alert { color: #b00020; font-weight: bold; } .warn { color: #b26a00; } .ok { color: #2e7d32; }
.insufficient { color: #757575; } .warning { color: #b26a00; }
.feature { margin: 12px 0 24px; } .feature h3 { margin-bottom: 0; }
"""


def write_html(report: MonitorReport, path: Path) -> Path:
    """Write the report; returns the path. The file is complete or absent (written then renamed)."""
    path = Path(path)
    text = render_html(report)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
    return path


def render_html(report: MonitorReport) -> str:
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    parts = [f"<h1>Model monitoring: {html.escape(report.source)}</h1>",
             f"<p>{report.predictions} predictions, {report.outcomes} outcomes, {report.joined} predictions "
             f"joined with an outcome{', since ' + html.escape(report.since) if report.since else ''}; task: "
             f"{report.task}.</p>"]
    parts += [f"<p class='warning'>warning: {html.escape(warning)}</p>" for warning in report.warnings]
    parts.append("<h2 id='drift'>Drift against the training data</h2>")
    if report.drift:
        parts.append(f"<p>{html.escape(report.drift_version or '')} against the "
                     f"{html.escape(report.reference_source or '')} profile of model/reference.json. "
                     "PSI &lt; 0.1 stable, 0.1–0.25 moderate, &gt; 0.25 major shift. Most drifted first.</p>")
        overview = go.Figure(go.Bar(
            x=[d.psi or 0 for d in report.drift][::-1], y=[d.feature for d in report.drift][::-1], orientation="h",
            marker_color=[_colour(d.status) for d in report.drift][::-1]))
        overview.add_vline(x=PSI_WARN, line_dash="dot", line_color="#b26a00")
        overview.add_vline(x=PSI_ALERT, line_dash="dash", line_color="#b00020")
        overview.update_layout(title="PSI per feature over the period", height=120 + 28 * len(report.drift),
                               margin=dict(l=140, r=20, t=40, b=30), xaxis_title="PSI")
        parts.append(_figure(overview, "drift-overview"))
        for d in ([*report.drift, report.prediction_drift] if report.prediction_drift else report.drift):
            parts.append(_feature_section(go, d))
    else:
        parts.append("<p>No reference profile: pass <code>--project PROJECT</code> (its model/reference.json).</p>")
    parts.append("<h2 id='versions'>Per version and day</h2>")
    parts.append(_table(report))
    if report.rows:
        parts.append(_trend_figures(go, report))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Model monitoring</title>"
            f"<style>{STYLE}</style><script type='text/javascript'>{get_plotlyjs()}</script></head>"
            f"<body>{body}</body></html>")


def _figure(figure, div_id: str) -> str:
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                          config={"displaylogo": False, "responsive": True})


# By the drift's status, not its PSI: under too few values ("insufficient data") a high PSI is noise.
STATUS_COLOURS = {"alert": "#b00020", "warn": "#f9a825", "ok": "#2e7d32"}


def _colour(status: str) -> str:
    return STATUS_COLOURS.get(status, "#9e9e9e")


def _status_class(status: str) -> str:
    return status if status in STATUS_COLOURS else "insufficient"


def _feature_section(go, d: FeatureDrift) -> str:
    name = html.escape(d.feature)
    psi = "n/a" if d.psi is None else f"{d.psi:.3f}"
    head = (f"<div class='feature' data-feature='{name}' data-psi='{psi}'><h3>{name} "
            f"<span class='{_status_class(d.status)}'>PSI {psi}</span> ({d.kind}, {html.escape(d.status)}"
            + (f", null rate {d.null_rate_change:+.1%}" if d.null_rate_change else "") + ")</h3>")
    figure = go.Figure()
    figure.add_bar(x=d.labels, y=d.reference, name="training (reference)", marker_color="#90a4ae")
    figure.add_bar(x=d.labels, y=d.current, name="served", marker_color=_colour(d.status))
    figure.update_layout(barmode="group", height=260, margin=dict(l=40, r=20, t=30, b=60),
                         yaxis_title="share", yaxis_tickformat=".0%", title=f"{d.feature}: distribution")
    parts = [head, _figure(figure, f"dist-{_slug(d.feature)}")]
    if len(d.by_day) > 1:
        trend = go.Figure(go.Scatter(x=list(d.by_day), y=list(d.by_day.values()), mode="lines+markers"))
        trend.add_hline(y=PSI_ALERT, line_dash="dash", line_color="#b00020")
        trend.update_layout(height=200, margin=dict(l=40, r=20, t=30, b=30), title=f"{d.feature}: PSI by day")
        trend.update_xaxes(type="category")
        parts.append(_figure(trend, f"trend-{_slug(d.feature)}"))
    parts.append("</div>")
    return "".join(parts)


def _table(report: MonitorReport) -> str:
    metric_names = sorted({m for r in report.rows for m in r.metrics})
    header = ["model", "version", "day", "requests", "instances", "p50 ms", "p95 ms", "p99 ms", "labelled",
              *metric_names, "label delay (s)"]
    rows = ["<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in report.rows:
        cells = [r.model, r.version, r.day, r.requests, r.instances, f"{r.latency_ms['p50']:.1f}",
                 f"{r.latency_ms['p95']:.1f}", f"{r.latency_ms['p99']:.1f}", r.labelled,
                 *[f"{r.metrics[m]:.3f}" if m in r.metrics else "" for m in metric_names],
                 "" if r.label_delay_s is None else f"{r.label_delay_s:.0f}"]
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells) + "</tr>")
    return "".join(rows) + "</table>"


def _trend_figures(go, report: MonitorReport) -> str:
    from plotly.subplots import make_subplots

    metric_names = sorted({m for r in report.rows for m in r.metrics})
    figure = make_subplots(rows=1, cols=3, subplot_titles=["requests per day", "latency p95 (ms)",
                                                           ", ".join(metric_names) or "outcome metric"])
    several_models = len({r.model for r in report.rows}) > 1
    for model, version in sorted({(r.model, r.version) for r in report.rows}):
        rows = [r for r in report.rows if (r.model, r.version) == (model, version)]
        days = [r.day for r in rows]
        name = f"{model} v{version}" if several_models else f"v{version}"
        figure.add_bar(x=days, y=[r.requests for r in rows], name=f"{name} requests", row=1, col=1)
        figure.add_scatter(x=days, y=[r.latency_ms["p95"] for r in rows], name=f"{name} p95", row=1, col=2)
        for metric in metric_names:
            figure.add_scatter(x=days, y=[r.metrics.get(metric) for r in rows], name=f"{name} {metric}",
                               row=1, col=3)
    figure.update_layout(height=320, margin=dict(l=40, r=20, t=40, b=40))
    figure.update_xaxes(type="category")  # one point per day, not a time axis with made-up hours
    return _figure(figure, "versions-trend")


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name)
