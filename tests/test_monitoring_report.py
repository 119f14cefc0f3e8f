"""What a user sees of monitoring beyond the numbers: the HTML report's colours, and the service's
Prometheus metrics and feedback log under --guard reject."""

from __future__ import annotations

import httpx
import pyarrow.parquet as pq
from prometheus_client.parser import text_string_to_metric_families

from support.monitoring import QUIET, export_demo, instances


def drift(feature: str, psi: float, status: str):
    from jupyter_mlship.monitor.report import FeatureDrift

    return FeatureDrift(feature=feature, kind="numeric", psi=psi, status=status, null_rate_change=0.0,
                        by_day={"2026-11-27": psi}, reference=[0.5, 0.5], current=[0.9, 0.1],
                        labels=["≤ 0", "> 0"])


def test_a_high_psi_on_too_few_values_is_not_coloured_as_an_alert():
    """Under 500 values PSI is noise: the feature shows its status, in grey, not the alert's red."""
    from jupyter_mlship.monitor.html import render_html
    from jupyter_mlship.monitor.report import MonitorReport

    report = MonitorReport(source="logs", project="demo", since=None, task="classification",
                           reference_source="reference", drift_version="demo version 1", rows=[],
                           drift=[drift("few", 0.9, "insufficient data"), drift("many", 0.9, "alert")],
                           prediction_drift=None, joined=0, predictions=40, outcomes=0)
    page = render_html(report)
    assert "few <span class='insufficient'>PSI 0.900</span> (numeric, insufficient data" in page
    assert "many <span class='alert'>PSI 0.900</span> (numeric, alert" in page
    assert "demo version 1 against the reference profile" in page


def observed(metrics_text: str, name: str) -> dict[str, float]:
    """{sample name: value} of one histogram's _count and _sum in Prometheus text."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == name:
            return {s.name: s.value for s in family.samples if s.name.endswith(("_count", "_sum"))}
    return {}


def test_refused_requests_are_not_counted_as_answered_and_a_correction_in_one_post_wins(tmp_path, serve):
    from jupyter_mlship.monitor.report import build_report

    strict = export_demo(tmp_path / "out", flags="--guard reject")
    service = serve(strict, env={**QUIET, "MLSHIP_LOG_DIR": str(tmp_path / "logs"), "MLSHIP_LOG_FLUSH_S": "0.3"})
    out_of_range = {"a": 50.0, "b": 5.0, "c": 3.0, "d": "red"}
    refused = httpx.post(f"{service.url}/predict", json={"instances": [out_of_range, out_of_range]}, timeout=30)
    assert refused.status_code == 422
    answered = httpx.post(f"{service.url}/predict", json={"instances": instances(3, seed=4)}, timeout=30)
    assert answered.status_code == 200
    histogram = observed(httpx.get(f"{service.url}/metrics").text, "mlship_instances_per_request")
    assert histogram == {"mlship_instances_per_request_count": 1.0, "mlship_instances_per_request_sum": 3.0}

    rid, predictions = answered.json()["request_id"], answered.json()["predictions"]
    wrong = [1 - p for p in predictions]
    feedback = [{"request_id": rid, "outcome": wrong}, {"request_id": rid, "outcome": predictions}]  # corrected
    assert httpx.post(f"{service.url}/feedback", json=feedback).json() == {"accepted": 2}
    service.stop()  # SIGTERM: everything queued is written
    assert pq.read_table(tmp_path / "logs" / "outcomes").column("seq").to_pylist() == [0, 1]
    (row,) = build_report(str(tmp_path / "logs"), strict).rows
    assert (row.labelled, row.metrics["accuracy"]) == (3, 1.0)
