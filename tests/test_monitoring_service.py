"""Data monitoring in a real service process: drift, the skew guard, feedback joined with predictions,
the inference log surviving kill -9, and the HTML report in Chromium."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest

from support.monitoring import QUIET, export_demo, gauges, instances
from support.notebooks import Service, mlship

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("MLSHIP_TEST_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return export_demo(tmp_path_factory.mktemp("services"))


def predict(service: Service, batch: list[dict], request_id: str | None = None) -> httpx.Response:
    headers = {"X-Request-ID": request_id} if request_id else {}
    return httpx.post(f"{service.url}/predict", json={"instances": batch}, headers=headers, timeout=30)


def stream(service: Service, rows: list[dict], size: int = 50) -> None:
    for start in range(0, len(rows), size):
        response = predict(service, rows[start:start + size])
        assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def drifted(project, tmp_path_factory) -> dict:
    """A service fed 1,000 rows like the training data, then 1,000 shifted on a and b; stopped (SIGTERM)."""
    logs = tmp_path_factory.mktemp("drift") / "logs"
    service = Service(project, env={**QUIET, "MLSHIP_LOG_DIR": str(logs), "MLSHIP_DRIFT_WINDOW": "500",
                                "MLSHIP_LOG_FLUSH_S": "0.5"})
    try:
        stream(service, instances(1000, seed=1))
        before = httpx.get(f"{service.url}/metrics").text
        stream(service, instances(1000, seed=2, shift=True))
        after = httpx.get(f"{service.url}/metrics").text
        report = httpx.get(f"{service.url}/monitoring").json()
    finally:
        service.stop()
    return {"logs": logs, "before": before, "after": after, "report": report}


def test_drift_gauges_rise_on_exactly_the_two_shifted_features(drifted):
    before = gauges(drifted["before"], "mlship_drift_psi")
    after = gauges(drifted["after"], "mlship_drift_psi")
    assert set(before) == set(after) == {"a", "b", "c", "d"}
    assert all(value < 0.1 for value in before.values()), before  # unshifted: stable
    assert {name for name, value in after.items() if value > 0.25} == {"a", "b"}, after
    assert after["c"] < 0.1 and after["d"] < 0.1, after
    report = drifted["report"]
    assert {n: f["status"] for n, f in report["features"].items()} == {"a": "alert", "b": "alert", "c": "ok", "d": "ok"}
    assert report["window"] == {"size": 500, "filled": 500}
    assert report["prediction"]["psi"] > 0.25  # the model says "1" far more often on shifted inputs
    assert report["reference"] == {"source": "reference", "rows": 3000}


def test_request_ids_go_in_and_out_and_outcomes_need_one(project, tmp_path, serve):
    service = serve(project, env={**QUIET, "MLSHIP_LOG_DIR": str(tmp_path / "logs")})
    given = predict(service, instances(2, seed=3), request_id="order-17")
    assert given.headers["x-request-id"] == "order-17" and given.json()["request_id"] == "order-17"
    fresh = predict(service, instances(1, seed=3))
    assert fresh.headers["x-request-id"] == fresh.json()["request_id"]
    assert len(fresh.json()["request_id"]) == 32  # uuid4 hex
    bad = predict(service, instances(1, seed=3), request_id="x" * 300)
    assert bad.status_code == 400 and "X-Request-ID" in bad.json()["detail"]
    missing = httpx.post(f"{service.url}/feedback", json={"outcome": 1})
    assert missing.status_code == 422 and "request_id" in missing.text
    for outcome in (b"NaN", b"1e999", b'{"score": [1, Infinity]}'):  # nothing anyone observed: refused
        body = b'{"request_id": "r1", "outcome": ' + outcome + b"}"
        refused = httpx.post(f"{service.url}/feedback", content=body, headers={"content-type": "application/json"})
        assert refused.status_code == 422 and "no NaN or infinite number" in refused.text, (outcome, refused.text)


def test_guard_counts_by_default_and_rejects_only_when_set(project, tmp_path, serve):
    out_of_range = {"a": 50.0, "b": 5.0, "c": 3.0, "d": "red"}
    unseen = {"a": 0.0, "b": 5.0, "c": 3.0, "d": "pink"}
    flagging = serve(project, env={**QUIET, "MLSHIP_LOG_DIR": str(tmp_path / "flag-logs"), "MLSHIP_LOG_FLUSH_S": "0.3"})
    assert predict(flagging, [out_of_range]).status_code == 200
    assert predict(flagging, [unseen, unseen]).status_code == 200
    guard = httpx.get(f"{flagging.url}/monitoring").json()["guard"]
    assert guard["mode"] == "flag" and guard["requests_flagged"] == 2 and guard["requests_rejected"] == 0
    assert guard["features"] == {"a": {"out_of_range": 1}, "d": {"unseen_category": 2}}
    metrics = httpx.get(f"{flagging.url}/metrics").text
    assert 'mlship_guard_violations_total{feature="a",kind="out_of_range"} 1.0' in metrics
    flagging.stop()  # SIGTERM: the log is flushed; the flagged rows say why
    table = pq.read_table(tmp_path / "flag-logs" / "predictions").to_pylist()
    assert sorted(row["guard"] for row in table) == ["a:out_of_range", "d:unseen_category", "d:unseen_category"]

    # The same model exported with --guard reject (and a field kept out of the log, one hashed).
    strict = export_demo(tmp_path / "strict-out", flags="--guard reject --log-exclude c,d:hash")
    ship = json.loads((strict / "ship.json").read_text())
    assert ship["monitoring"] == {"log_exclude": ["c"], "log_hash": ["d"], "guard": "reject", "window": 1000}
    rejecting = serve(strict, env={**QUIET, "MLSHIP_LOG_DIR": str(tmp_path / "strict-logs"), "MLSHIP_LOG_FLUSH_S": "0.3"})
    refused = predict(rejecting, [instances(1, seed=4)[0], out_of_range])
    assert refused.status_code == 422
    [problem] = refused.json()["detail"]  # the same shape as every other 422: the field and the reason
    assert problem["field"] == "instances[1].a" and problem["type"] == "skew_guard_out_of_range"
    assert problem["msg"].startswith("50.0 is outside the training range [-3.")
    assert refused.headers["x-request-id"]
    refused = predict(rejecting, [unseen])
    assert refused.status_code == 422 and "instances[0].d: 'pink' was not seen in training" in refused.json()["message"]
    accepted = predict(rejecting, instances(3, seed=4))
    assert accepted.status_code == 200
    assert httpx.get(f"{rejecting.url}/monitoring").json()["guard"]["requests_rejected"] == 2
    rejecting.stop()
    rows = pq.read_table(tmp_path / "strict-logs" / "predictions").to_pylist()
    assert len(rows) == 3  # refused requests predict nothing and are not logged as predictions
    # c is kept out of the log; the feature columns hold the rest of each instance, so no instance_json.
    assert "feature.c" not in rows[0] and {"feature.a", "feature.b", "feature.d"} <= set(rows[0])
    assert rows[0]["instance_json"] is None
    assert rows[0]["feature.d"] not in ("red", "green", "blue") and len(rows[0]["feature.d"]) == 16


def test_feedback_for_1000_requests_joins_1000_rows(project, tmp_path, serve):
    logs = tmp_path / "logs"
    service = serve(project, env={**QUIET, "MLSHIP_LOG_DIR": str(logs)})
    rows = instances(1000, seed=5)
    ids, outcomes, correct = [], [], 0
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for i, row in enumerate(rows):
            rid = f"req-{i:04d}-{uuid.uuid4().hex[:6]}"
            response = client.post("/predict", json={"instances": [row]}, headers={"X-Request-ID": rid})
            assert response.status_code == 200
            outcome = int(row["a"] + 0.3 * row["b"] > 1.5)  # the truth, as the business later learns it
            ids.append(rid)
            outcomes.append(outcome)
            correct += response.json()["predictions"][0] == outcome
        feedback = [{"request_id": rid, "outcome": outcome} for rid, outcome in zip(ids, outcomes)]
        assert client.post("/feedback", json=feedback).json() == {"accepted": 1000}
        assert client.post("/feedback", json={"request_id": ids[0], "outcome": outcomes[0]}).json() == {"accepted": 1}
    service.stop()  # SIGTERM flushes everything queued

    result = mlship("monitor", str(logs), "--project", str(project), timeout=300)
    assert result.returncode == 0, result.stderr
    print(result.stdout)
    assert "1000 predictions, 1000 outcomes, 1000 joined" in result.stdout  # the repeated id counts once
    from jupyter_mlship.monitor import build_report

    report = build_report(str(logs), project)
    (row,) = report.rows
    assert (row.requests, row.instances, row.labelled) == (1000, 1000, 1000)
    assert row.metrics["accuracy"] == pytest.approx(correct / 1000)
    assert 0 <= row.latency_ms["p50"] <= row.latency_ms["p95"] <= row.latency_ms["p99"]
    assert row.label_delay_s is not None and row.label_delay_s >= 0


def test_kill_9_mid_load_loses_at_most_one_flush_interval_and_no_file(project, tmp_path):
    logs, flush_s = tmp_path / "logs", 1.0
    env = {**QUIET, "MLSHIP_LOG_DIR": str(logs), "MLSHIP_LOG_FLUSH_S": str(flush_s)}
    service = Service(project, env=env)
    answered: list[tuple[str, float]] = []  # (request id, wall time the answer arrived)
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            rows, i = instances(200, seed=6), 0
            while not stop.is_set():
                rid = f"k{i}"
                try:
                    response = client.post("/predict", json={"instances": rows[i % 200:i % 200 + 1]},
                                           headers={"X-Request-ID": rid})
                except httpx.HTTPError:
                    return  # the service is gone
                if response.status_code == 200:
                    answered.append((rid, time.time()))
                i += 1

    worker = threading.Thread(target=load)
    worker.start()
    started = time.monotonic()
    deadline = started + 60
    # A few flushes' worth under load: 300 answers and 3 flush intervals (a fast service answers 300 in
    # less than one interval, and then nothing can have been written yet).
    while (len(answered) < 300 or time.monotonic() - started < 3 * flush_s) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(answered) >= 300, "the service answered too few requests to test a crash under load"
    service.process.kill()  # SIGKILL: no shut-down, no last flush
    killed_at = time.time()
    service.process.wait(10)
    stop.set()
    worker.join(15)

    files = sorted(logs.glob("predictions/date=*/*.parquet"))
    assert files, "nothing was written before the kill"
    logged = set()
    for file in files:  # every file is a complete Parquet file (footer and all)
        logged |= set(pq.read_table(file).column("request_id").to_pylist())
    lost = [(rid, at) for rid, at in answered if rid not in logged]
    oldest = max((killed_at - at for _, at in lost), default=0.0)
    print(f"\nkill -9: {len(answered)} answered, {len(lost)} lost, the oldest lost answered {oldest:.2f} s "
          f"before the kill (flush interval {flush_s} s)")
    # At most the last flush interval is lost; one more interval allows for a flush still being written.
    assert all(killed_at - at <= 2 * flush_s for _, at in lost), oldest

    before = {file: pq.read_table(file).num_rows for file in files}
    restarted = Service(project, env=env)
    try:
        response = predict(restarted, instances(5, seed=7), request_id="after-restart")
        assert response.status_code == 200
    finally:
        restarted.stop()
    assert {file: pq.read_table(file).num_rows for file in files} == before  # old files untouched
    table = pq.read_table(logs / "predictions")
    assert table.filter(pq.filters_to_expression([("request_id", "=", "after-restart")])).num_rows == 5


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is missing (apt-get install -y chromium)")
def test_html_report_shows_the_shifted_features_first_in_chromium(drifted, project, tmp_path):
    from playwright.sync_api import sync_playwright

    report = tmp_path / "report.html"
    result = mlship("monitor", str(drifted["logs"]), "--project", str(project), "--html", str(report), timeout=300)
    assert result.returncode == 0, result.stderr
    drift_lines = result.stdout.split("most drifted first:")[1].strip().splitlines()[1:]
    assert {drift_lines[0].split()[0], drift_lines[1].split()[0]} == {"a", "b"}, result.stdout
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"],
            viewport={"width": 1280, "height": 900})
        try:
            page = browser.new_page()
            page.route("http*://**", lambda route: route.abort())  # self-contained: nothing may be fetched
            page.goto(report.as_uri())
            page.wait_for_selector("#drift-overview .main-svg", timeout=30_000)  # plotly drew the chart
            order = page.eval_on_selector_all(".feature[data-feature]", "els => els.map(e => e.dataset.feature)")
            plotted = page.eval_on_selector_all(".feature .js-plotly-plot", "els => els.length")
            page.screenshot(path=str(ARTIFACTS / "monitoring-report.png"), full_page=True)
        finally:
            browser.close()
    assert set(order[:2]) == {"a", "b"} and set(order[2:4]) == {"c", "d"}, order
    assert order[-1] == "(prediction)"
    assert plotted == len(order)  # every feature has its distribution chart


def test_the_grafana_dashboard_only_asks_for_metrics_the_service_exports(drifted, project):
    import re

    dashboard = json.loads((project / "monitoring" / "grafana-dashboard.json").read_text())
    asked = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"\b(mlship_[a-z_]+)", target["expr"])}
    exported = set(re.findall(r"^(mlship_[a-z_]+)", drifted["after"], re.MULTILINE))
    assert len(asked) >= 10 and asked <= exported, asked - exported
