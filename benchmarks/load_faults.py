"""Load and faults against a generated service, measured: one command, figures as Markdown.

    python benchmarks/load_faults.py                 # exports a scikit-learn pipeline, then runs every case
    python benchmarks/load_faults.py --project DIR   # an existing generated project instead
    python benchmarks/load_faults.py --only load,bodies --json figures.json

Cases (README "Load and faults" shows a run's figures):
- load: N requests (default 10,000) at C connections (default 64) to /predict; errors, 5xx, latency,
  RSS after the first 1,000 and at the end.
- sigterm: SIGTERM while under load and while requests are half-sent: those finish with 200, new
  connections are refused, the process exits within the grace period (20 s, as the Dockerfile's CMD).
- sigkill: WEB_CONCURRENCY=2, one worker killed with SIGKILL under load: what the clients saw, and when
  uvicorn's supervisor had a new worker answering.
- startup: a corrupt artifact, a truncated one, ship.json without a field, a library version skew:
  /healthz, /readyz and whether the log names the file.
- bodies: deeply nested JSON, 100 MB bodies (declared and chunked), a slow-loris body, wrong content
  types, non-UTF-8: status and time, and /healthz's time right after each.

Real uvicorn processes on 127.0.0.1, started as the Dockerfile's CMD starts them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from support.faults import (  # noqa: E402 - the probes live beside the tests that use them too
    HOSTILE_BODIES,
    Uvicorn,
    connection_refused,
    load,
    rss_bytes,
    send_body,
    send_endless_body,
    send_slowly,
    wait_for,
    worker_pids,
)
from support.notebooks import mlship, write_notebook  # noqa: E402

NOTEBOOK = [
    "%load_ext jupyter_mlship",
    """
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.uniform(1, 5, 500), "b": rng.uniform(1, 5, 500), "plan": rng.choice(["x", "y"], 500)})
    y = (df["a"] > df["b"]).astype(int)

    def add_ratio(frame):
        out = frame[["a", "b"]].copy()
        out["ratio"] = out["a"] / out["b"]
        out["is_x"] = (frame["plan"] == "x").astype(int)
        return out

    model = make_pipeline(FunctionTransformer(add_ratio), StandardScaler(), LogisticRegression()).fit(df, y)
    """,
    "%ship scorer --model model --sample df.head(10) --method predict_proba --no-verify",
]
BODY = {"instances": [{"a": 1.5, "b": 2.5, "plan": "x"}, {"a": 4.0, "b": 1.0, "plan": "y"}]}
GRACE_SECONDS = 20


def export_project(folder: Path) -> Path:
    notebook = write_notebook(folder / "scorer.ipynb", NOTEBOOK)
    result = mlship("export", str(notebook), "--out", str(folder / "services"), cwd=folder)
    if result.returncode != 0:
        raise SystemExit(f"export failed:\n{result.stdout}\n{result.stderr}")
    return folder / "services" / "scorer"


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


# --- cases --------------------------------------------------------------------------------------------


def case_load(project: Path, requests: int, connections: int) -> dict:
    with Uvicorn(project) as server:
        warm = load(server.url, BODY, 1000, connections)
        rss_warm = rss_bytes(server.process.pid)
        rest = load(server.url, BODY, requests - 1000, connections)
        rss_end = rss_bytes(server.process.pid)
    latencies = warm.latencies + rest.latencies
    statuses = {k: warm.statuses.get(k, 0) + rest.statuses.get(k, 0) for k in {*warm.statuses, *rest.statuses}}
    errors = {k: warm.errors.get(k, 0) + rest.errors.get(k, 0) for k in {*warm.errors, *rest.errors}}
    figures = {
        "requests": warm.total + rest.total, "connections": connections, "statuses": statuses, "errors": errors,
        "server_errors": warm.server_errors + rest.server_errors,
        "requests_per_second": round(rest.total / rest.seconds, 1),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1), "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "rss_after_1000": rss_warm, "rss_end": rss_end, "rss_growth_pct": round(100 * (rss_end - rss_warm) / rss_warm, 2),
    }
    figures["pass"] = (not errors and figures["server_errors"] == 0 and statuses == {200: requests}
                       and abs(figures["rss_growth_pct"]) <= 10)
    return figures


def _half_sent(port: int, count: int) -> tuple[list[socket.socket], bytes]:
    body = json.dumps(BODY).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        sock.sendall(head + body[: len(body) // 2])
        sockets.append(sock)
    return sockets, body[len(body) // 2:]


def case_sigterm(project: Path, connections: int) -> dict:
    server = Uvicorn(project)
    try:
        half_sent, rest = _half_sent(server.port, 8)
        background: dict = {}
        stop = threading.Event()
        loader = threading.Thread(
            target=lambda: background.update(result=load(server.url, BODY, 1_000_000, connections, stop)))
        loader.start()
        time.sleep(3)  # well under way
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        refused_after = wait_for(lambda: connection_refused(server.port) and time.monotonic() - signalled, 10,
                                 "new connections refused")
        statuses = []
        for sock in half_sent:  # the rest of each body arrives after SIGTERM
            sock.sendall(rest)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
            statuses.append(int(answer.split(b" ", 2)[1]) if answer else None)
            sock.close()
        server.process.wait(GRACE_SECONDS + 10)
        exited_after = time.monotonic() - signalled
        stop.set()  # the clients stop once the server is gone
        loader.join(120)
        result = background["result"]
    finally:
        server.stop()
    figures = {
        "half_sent_requests": len(statuses), "half_sent_statuses": statuses,
        "refused_new_connections_after_s": round(refused_after, 3), "exited_after_s": round(exited_after, 2),
        "grace_s": GRACE_SECONDS, "load_statuses": result.statuses, "load_errors": result.errors,
        "load_server_errors": result.server_errors, "exit_code": server.process.returncode,
    }
    figures["pass"] = (statuses == [200] * len(statuses) and exited_after < GRACE_SECONDS
                       and result.server_errors == 0)
    return figures


def case_sigkill(project: Path, connections: int) -> dict:
    with Uvicorn(project, env={"WEB_CONCURRENCY": "2"}) as server:
        supervisor = server.process.pid
        workers = wait_for(lambda: len(worker_pids(supervisor)) == 2 and worker_pids(supervisor), 120, "two workers")
        background: dict = {}
        loader = threading.Thread(target=lambda: background.update(result=load(server.url, BODY, 6000, connections)))
        loader.start()
        time.sleep(2)
        killed = time.monotonic()
        os.kill(workers[0], signal.SIGKILL)
        # Fresh connections meanwhile: does the other worker keep answering?
        fresh = [httpx.post(server.url + "/predict", json=BODY, headers={"Connection": "close"}).status_code
                 for _ in range(50)]
        replaced = wait_for(lambda: (pids := worker_pids(supervisor)) and len(pids) == 2 and workers[0] not in pids
                            and pids, 120, "a new worker")
        new_pid = next(pid for pid in replaced if pid not in workers)
        replaced_after = time.monotonic() - killed
        # The new worker accepts connections once its start-up (model load, self-check) is complete.
        wait_for(lambda: server.log().count("Application startup complete.") >= 3, 300, "the new worker ready")
        serving_after = time.monotonic() - killed
        loader.join(600)
        result = background["result"]
        after = load(server.url, BODY, 1000, connections)
        log = server.log()
    figures = {
        "killed_pid": workers[0], "new_pid": new_pid, "replaced_after_s": round(replaced_after, 2),
        "new_worker_ready_after_s": round(serving_after, 2), "fresh_connections_during": {s: fresh.count(s) for s in set(fresh)},
        "load_statuses": result.statuses, "load_errors": result.errors, "load_server_errors": result.server_errors,
        "after_statuses": after.statuses, "after_errors": after.errors,
        "supervisor_logged_death": f"Child process [{workers[0]}] died" in log,
    }
    figures["pass"] = (set(fresh) == {200} and result.server_errors == 0 and after.statuses == {200: 1000}
                       and figures["supervisor_logged_death"])
    return figures


def _damage(project: Path, case: str) -> str:
    manifest_path = project / "model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    artifact = project / "model" / manifest["artifacts"][0]["file"]
    if case == "corrupt artifact":
        data = bytearray(artifact.read_bytes())
        data[len(data) // 2] ^= 0xFF
        artifact.write_bytes(bytes(data))
    elif case == "truncated artifact":
        artifact.write_bytes(artifact.read_bytes()[: artifact.stat().st_size // 2])
    elif case == "ship.json without 'golden'":
        ship = json.loads((project / "ship.json").read_text())
        del ship["golden"]
        (project / "ship.json").write_text(json.dumps(ship))
        return "ship.json"
    elif case == "scikit-learn version skew":
        manifest["artifacts"][0]["frameworks"]["scikit-learn"] = "0.24.2"
        manifest_path.write_text(json.dumps(manifest))
    return f"model/{artifact.name}"


def case_startup(project: Path) -> dict:
    figures = {}
    for case in ["corrupt artifact", "truncated artifact", "ship.json without 'golden'", "scikit-learn version skew"]:
        with tempfile.TemporaryDirectory() as tmp:
            broken = Path(shutil.copytree(project, Path(tmp) / project.name))
            culprit = _damage(broken, case)
            with Uvicorn(broken, wait_ready=False) as server:
                health = httpx.get(server.url + "/healthz").status_code
                ready = httpx.get(server.url + "/readyz")
                log = server.log()
            reason = ready.json().get("reason", "")
            figures[case] = {"healthz": health, "readyz": ready.status_code, "reason": reason,
                             "log_names_file": culprit in log,
                             "pass": health == 200 and ready.status_code == 503 and culprit in reason and culprit in log}
    return figures


def case_bodies(project: Path, body_timeout: float) -> dict:
    figures = {}
    with Uvicorn(project, env={"MLSHIP_BODY_TIMEOUT_SECONDS": str(body_timeout)}) as server:
        answers = {name: send_body(server.port, body, content_type)
                   for name, (body, content_type) in HOSTILE_BODIES.items()}
        answers["100 MB, Content-Length"] = send_endless_body(server.port, declared=100 * 1024 * 1024)
        answers["100 MB, chunked"] = send_endless_body(server.port, declared=None)
        answers["slow-loris body (1 byte / 0.5 s)"] = send_slowly(server.port, json.dumps(BODY).encode(), every=0.5,
                                                                  timeout=body_timeout + 20)
        for name, answer in answers.items():
            started = time.monotonic()
            health = httpx.get(server.url + "/healthz").status_code
            figures[name] = {"status": answer.status, "seconds": round(answer.seconds, 3),
                             "healthz_after_ms": round((time.monotonic() - started) * 1000, 1),
                             "detail": json.loads(answer.body).get("detail") if answer.body.startswith(b"{") else None,
                             "pass": answer.status is not None and 400 <= answer.status < 500 and health == 200}
        figures["slow headers (200 connections)"] = _slow_headers(server, 200)
    return figures


def _slow_headers(server: Uvicorn, count: int) -> dict:
    """Headers trickled in: uvicorn has no header timeout, so this measures only that others are served."""
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        sockets.append(sock)
    started = time.monotonic()
    statuses = [httpx.post(server.url + "/predict", json=BODY).status_code for _ in range(20)]
    seconds = time.monotonic() - started
    for sock in sockets:
        sock.close()
    return {"status": None, "seconds": None, "healthz_after_ms": None, "detail": None,
            "others_served": statuses.count(200), "others_ms_each": round(seconds / 20 * 1000, 1),
            "pass": statuses == [200] * 20}


# --- report -------------------------------------------------------------------------------------------


def markdown(results: dict) -> str:
    out = []
    if "load" in results:
        r = results["load"]
        out += ["| requests | connections | 200 | errors | 5xx | req/s | p50 | p99 | RSS after 1,000 | RSS at end | growth |",
                "|---|---|---|---|---|---|---|---|---|---|---|",
                f"| {r['requests']:,} | {r['connections']} | {r['statuses'].get(200, 0):,} | {sum(r['errors'].values())} | "
                f"{r['server_errors']} | {r['requests_per_second']} | {r['p50_ms']} ms | {r['p99_ms']} ms | "
                f"{mib(r['rss_after_1000'])} | {mib(r['rss_end'])} | {r['rss_growth_pct']:+.1f} % |", ""]
    if "sigterm" in results:
        r = results["sigterm"]
        out += [f"- SIGTERM under load: {r['half_sent_requests']} half-sent requests finished "
                f"{r['half_sent_statuses']}; new connections refused {r['refused_new_connections_after_s']} s after the "
                f"signal; exited after {r['exited_after_s']} s (grace {r['grace_s']} s, exit code {r['exit_code']}); "
                f"the load saw {r['load_statuses']} and connection errors {r['load_errors']} (5xx: {r['load_server_errors']})."]
    if "sigkill" in results:
        r = results["sigkill"]
        out += [f"- SIGKILL of one of 2 workers under load: fresh connections meanwhile {r['fresh_connections_during']}; "
                f"the supervisor started a new worker after {r['replaced_after_s']} s (ready after "
                f"{r['new_worker_ready_after_s']} s); the load saw {r['load_statuses']} and {r['load_errors']} "
                f"(5xx: {r['load_server_errors']}); 1,000 requests afterwards: {r['after_statuses']}."]
    if "startup" in results:
        out += ["", "| broken project | /healthz | /readyz | reason | log names the file |", "|---|---|---|---|---|"]
        for case, r in results["startup"].items():
            out.append(f"| {case} | {r['healthz']} | {r['readyz']} | {r['reason'][:110]}… | {'yes' if r['log_names_file'] else 'NO'} |")
    if "bodies" in results:
        out += ["", "| body | status | answered in | /healthz right after |", "|---|---|---|---|"]
        for case, r in results["bodies"].items():
            if "others_served" in r:
                out.append(f"| {case} | (no timeout in uvicorn) | — | {r['others_served']}/20 predictions served meanwhile, "
                           f"{r['others_ms_each']} ms each |")
            else:
                out.append(f"| {case} | {r['status']} | {r['seconds'] * 1000:.0f} ms | {r['healthz_after_ms']} ms |")
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", type=Path, help="A generated project (default: export a scikit-learn pipeline).")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--body-timeout", type=float, default=5.0,
                        help="MLSHIP_BODY_TIMEOUT_SECONDS for the bodies case (the service's default is 30).")
    parser.add_argument("--only", default="load,sigterm,sigkill,startup,bodies")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    args = parser.parse_args()
    cases = args.only.split(",")
    with tempfile.TemporaryDirectory(prefix="mlship-load-") as tmp:
        project = args.project.resolve() if args.project else export_project(Path(tmp))
        results: dict = {}
        for case in cases:
            started = time.monotonic()
            print(f"[load_faults] {case} …", file=sys.stderr, flush=True)
            if case == "load":
                results[case] = case_load(project, args.requests, args.connections)
            elif case == "sigterm":
                results[case] = case_sigterm(project, args.connections)
            elif case == "sigkill":
                results[case] = case_sigkill(project, args.connections)
            elif case == "startup":
                results[case] = case_startup(project)
            elif case == "bodies":
                results[case] = case_bodies(project, args.body_timeout)
            else:
                raise SystemExit(f"unknown case {case!r}")
            print(f"[load_faults] {case}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
            if args.json:  # after every case: a long run that fails late keeps what it measured
                args.json.write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results))
    failed = [case for case, r in results.items()
              if not (r.get("pass") if "pass" in r else all(v.get("pass") for v in r.values()))]
    if failed:
        print(f"\nFAILED: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
