"""The router in front of two real versions of one notebook model: split, sticky, shadow, bandit, failures.

Two `%ship --no-verify` exports (LogisticRegression with C=1.0 and C=0.1, so their probabilities differ)
run as real uvicorn services; the generated router runs as its own uvicorn process in front of them.
"""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from jupyter_mlship.router import default_routes, render_router
from support.notebooks import free_port, mlship
from support.registry import export_projects
from support.router import SUPPORT, Uvicorn, blast, metric, routes_now, start_router, wait_for, write_routes

BODY = {"instances": [[1.0, 0.5]]}


def version_service(project: Path, wait: bool = True) -> Uvicorn:
    """A version's generated service, as `mlship serve` runs it (without access log lines)."""
    return Uvicorn("app.main:app", project, ready_path="/readyz", wait=wait)


@pytest.fixture(scope="module")
def churn(tmp_path_factory):
    """Two served versions and a rendered router project: (project, {version: Service}, folder, extras).

    Every process the module needs starts at once (they load in parallel): versions 1 and 2, a third
    copy of version 2 for the kill test, and stand-ins that relay version 1 after 0.2 s and after 5 s."""
    folder = tmp_path_factory.mktemp("router")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLSHIP_HISTORY", str(folder / "history.jsonl"))
        first, second = export_projects(folder)
    services = {"1": version_service(first, wait=False), "2": version_service(second, wait=False)}
    extras = {"doomed": version_service(second, wait=False)}
    try:
        services["1"].wait_ready()
        for label, delay in (("slow", "0.2"), ("slower", "5")):
            extras[label] = Uvicorn("slow_version:app", SUPPORT, env={"UPSTREAM": services["1"].url,
                                                                      "DELAY_S": delay}, app_dir=SUPPORT, wait=False)
        backends = {v: s.wait_ready().url for v, s in services.items()}
        for process in extras.values():
            process.wait_ready()
        project = render_router("churn", default_routes("churn", backends), folder / "churn-router")
        yield project, services, folder, extras
    finally:
        for process in [*services.values(), *extras.values()]:
            process.stop()


@pytest.fixture
def router(churn, tmp_path):
    """start(routes) -> a running router process on its own routes.yaml; all stopped after the test."""
    project = churn[0]
    started: list[Uvicorn] = []

    def start(routes: dict, routes_file: Path | None = None) -> Uvicorn:
        process = start_router(project, routes_file or tmp_path / f"routes{len(started)}.yaml", routes)
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


def backends(churn) -> dict[str, str]:
    return {v: s.url for v, s in churn[1].items()}


def test_split_90_10_over_10000_requests_and_sticky_users_see_one_version(churn, router, tmp_path):
    routes = {"name": "churn", "backends": backends(churn), "policy": {"kind": "split", "weights": {"1": 90, "2": 10}}}
    front = router(routes, tmp_path / "routes.yaml")

    # 10,000 routing decisions through the router process (POST /route: chosen as for /predict, not forwarded:
    # two cores cannot run 10,000 real predictions in a lean suite).
    decisions = blast(f"{front.url}/route", 10_000, BODY, concurrency=16)
    versions = [d.json()["version"] for d in decisions]
    share = versions.count("1") / len(versions)
    print(f"split 90/10 over 10,000 routing decisions: version 1 got {share:.2%}")
    assert abs(share - 0.90) <= 0.015

    # Real predictions: each answer is the chosen version's own prediction, plus request id and route.
    direct = {v: httpx.post(f"{s.url}/predict", json=BODY).json()["predictions"] for v, s in churn[1].items()}
    assert direct["1"] != direct["2"]
    responses = blast(f"{front.url}/predict", 100, BODY, concurrency=4)
    assert {r.status_code for r in responses} == {200}
    for response in responses:
        body, version = response.json(), response.headers["X-Model-Version"]
        assert body["predictions"] == direct[version]
        assert body["route"] == {"version": version, "policy": "split"}
        assert body["request_id"] == response.headers["X-Request-ID"]
    assert [r.headers["X-Model-Version"] for r in responses].count("1") >= 70
    assert len({r.headers["X-Request-ID"] for r in responses}) == 100

    # routes.yaml edited in place: sticky by X-User-ID, 50/50, picked up without a restart.
    write_routes(tmp_path / "routes.yaml", {**routes, "policy": {
        "kind": "split", "weights": {"1": 50, "2": 50}, "sticky": {"header": "X-User-ID"}}})
    wait_for(lambda: routes_now(front)["weights"] == {"1": 0.5, "2": 0.5}, 10, "the router to reload routes.yaml")
    users = [f"user-{n}" for n in range(500)]
    decisions = blast(f"{front.url}/route", 1000, BODY, headers=lambda i: {"X-User-ID": users[i % 500]})
    seen: dict[str, set[str]] = {}
    for index, decision in enumerate(decisions):
        seen.setdefault(users[index % 500], set()).add(decision.json()["version"])
    assert all(len(versions) == 1 for versions in seen.values()), seen
    assert set().union(*seen.values()) == {"1", "2"}  # and the users are spread over both versions
    responses = blast(f"{front.url}/predict", 20, BODY, concurrency=2, headers=lambda i: {"X-User-ID": users[i]})
    assert all(r.headers["X-Model-Version"] in seen[users[i]] for i, r in enumerate(responses))

    # A caller's own request id travels through; /v1/models/NAME:predict is routed the same way.
    answer = httpx.post(f"{front.url}/v1/models/churn:predict", json=BODY, headers={"X-Request-ID": "abc-1",
                                                                                     "X-User-ID": "user-0"})
    assert answer.status_code == 200 and answer.headers["X-Request-ID"] == "abc-1"
    assert answer.headers["X-Model-Version"] in seen["user-0"]
    assert httpx.post(f"{front.url}/v1/models/other:predict", json=BODY).status_code == 404


def _median_latency(url: str, count: int, ids: list[str]) -> float:
    timings = []
    with httpx.Client(timeout=30) as client:
        for n in range(count):
            request_id = f"{url[-5:]}-{len(ids)}"
            started = time.perf_counter()
            response = client.post(f"{url}/predict", json=BODY, headers={"X-Request-ID": request_id})
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200 and response.headers["X-Model-Version"] == "1", response.text
            ids.append(request_id)
    return statistics.median(timings)


def counted(router: Uvicorn, at_least: float, **labels: str) -> str:
    """/metrics text once the sample named by `labels` reaches `at_least` (waits; fails loudly)."""
    def reached() -> str | None:
        text = httpx.get(f"{router.url}/metrics").text
        return text if metric(text, **labels) >= at_least else None

    return wait_for(reached, 30, f"{labels} to reach {at_least} on {router.url}/metrics")


def test_shadow_gets_every_request_in_the_background_and_never_slows_or_answers_the_caller(churn, router):
    slow = churn[3]["slow"]
    all_backends = {**backends(churn), "slow": slow.url}
    plain = router({"name": "churn", "backends": all_backends,
                    "policy": {"kind": "split", "weights": {"1": 100}}})
    shadowed = router({"name": "churn", "backends": all_backends,
                       "policy": {"kind": "shadow", "primary": "1", "shadows": ["slow"]}})
    _median_latency(plain.url, 10, [])  # warm both paths up
    _median_latency(shadowed.url, 10, [])
    slow_seen_before = len(httpx.get(f"{slow.url}/seen").json())
    baseline = _median_latency(plain.url, 60, [])
    ids: list[str] = []
    with_shadow = _median_latency(shadowed.url, 60, ids)
    print(f"caller median latency: {baseline * 1000:.1f} ms without shadow, {with_shadow * 1000:.1f} ms "
          f"with a +200 ms shadow (ratio {with_shadow / baseline:.2f})")
    # Waiting for the shadow would put its 200 ms into every call: the caller's median stays below that.
    # (The ratio is printed, not asserted: on a shared 2-core machine timings are not a test.)
    assert with_shadow < 0.2

    def shadow_saw_all() -> list[str]:
        seen = httpx.get(f"{slow.url}/seen").json()[slow_seen_before:]
        return seen if len(seen) >= len(ids) else []

    assert sorted(wait_for(shadow_saw_all, 30, "the slow shadow to receive every request")) == sorted(ids)
    # The slow shadow answers what version 1 answers: every comparison agrees.
    text = counted(shadowed, 70, name="mlship_router_shadow_total", version="slow", result="agree")
    assert metric(text, "mlship_router_shadow_total", version="slow", result="agree") == 70

    # Version 2 (another model) as the shadow: the callers still only see version 1, the disagreement is counted.
    candidate = router({"name": "churn", "backends": backends(churn),
                        "policy": {"kind": "shadow", "primary": "1", "shadows": ["2"]}})
    responses = blast(f"{candidate.url}/predict", 20, BODY, concurrency=2)
    assert {(r.status_code, r.headers["X-Model-Version"]) for r in responses} == {(200, "1")}
    counted(candidate, 20, name="mlship_router_shadow_total", version="2", result="disagree")

    # A shadow that is down never reaches the caller either.
    dead = router({"name": "churn", "backends": {**backends(churn), "gone": "http://127.0.0.1:9"},
                   "policy": {"kind": "shadow", "primary": "1", "shadows": ["gone"]}})
    responses = blast(f"{dead.url}/predict", 20, BODY, concurrency=2)
    assert {(r.status_code, r.headers["X-Model-Version"]) for r in responses} == {(200, "1")}
    counted(dead, 20, name="mlship_router_shadow_total", version="gone", result="error")


def test_bandit_sends_most_traffic_to_the_better_version(churn, router):
    front = router({"name": "churn", "backends": backends(churn),
                    "policy": {"kind": "bandit", "arms": ["1", "2"], "floor": 0.05}})
    pays = {"1": 0.4, "2": 0.6}
    rng = random.Random(7)
    chosen: list[str] = []

    async def simulate() -> None:
        # 5,000 decisions through the router (POST /route), rewards posted back in batches of 50 as a
        # delayed outcome pipeline would; Thompson sampling copes with delayed, batched feedback.
        async with httpx.AsyncClient(timeout=30) as client:
            for _ in range(100):
                batch = await asyncio.gather(*(client.post(f"{front.url}/route", json=BODY) for _ in range(50)))
                rewards = []
                for decision in batch:
                    version = decision.json()["version"]
                    chosen.append(version)
                    rewards.append({"request_id": decision.json()["request_id"],
                                    "reward": 1.0 if rng.random() < pays[version] else 0.0})
                answer = await client.post(f"{front.url}/feedback", json=rewards)
                assert answer.json()["rewarded"] == 50, answer.text

    asyncio.run(simulate())
    share = chosen[-1000:].count("2") / 1000
    arms = routes_now(front)["arms"]
    print(f"bandit: version 2 got {share:.1%} of the last 1,000 of 5,000 requests; posteriors {arms}")
    assert share >= 0.80
    assert arms["2"]["p_best"] > 0.9 and arms["2"]["mean"] > arms["1"]["mean"]
    assert chosen[-1000:].count("1") > 0  # the floor: the weaker arm is still explored

    # Real predictions feed the same posteriors; the posteriors are on /metrics.
    before = sum(a["alpha"] + a["beta"] for a in arms.values())
    for _ in range(10):
        answer = httpx.post(f"{front.url}/predict", json=BODY)
        assert answer.status_code == 200 and answer.json()["route"]["policy"] == "bandit"
        feedback = httpx.post(f"{front.url}/feedback", json={"request_id": answer.headers["X-Request-ID"],
                                                             "reward": 1})
        assert feedback.status_code == 200, feedback.text
    arms = routes_now(front)["arms"]
    assert sum(a["alpha"] + a["beta"] for a in arms.values()) == pytest.approx(before + 10)
    text = httpx.get(f"{front.url}/metrics").text
    assert metric(text, "mlship_router_bandit_alpha", version="2") == pytest.approx(arms["2"]["alpha"])
    # A request is rewarded once; an unknown one is a clear 404.
    again = httpx.post(f"{front.url}/feedback", json={"request_id": answer.headers["X-Request-ID"], "reward": 1})
    assert again.status_code == 404 and "unknown" in again.json()["detail"]
    for reward in (b"NaN", b"1e999", b'"yes"'):  # refused naming the field, never a 500
        bad = httpx.post(f"{front.url}/feedback", content=b'{"request_id": "r", "reward": ' + reward + b"}",
                         headers={"content-type": "application/json"})
        assert bad.status_code == 422 and "reward" in bad.json()["message"], (reward, bad.text)


@pytest.fixture
def redis_url(tmp_path):
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    import redis

    client = redis.Redis(port=port)
    wait_for(lambda: _pings(client), 20, "redis-server to answer PING")
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    server.terminate()
    server.wait(10)


def _pings(client) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_two_bandit_routers_sharing_redis_agree_on_the_posteriors(churn, router, redis_url):
    routes = {"name": "churn", "backends": backends(churn), "state": {"redis": redis_url},
              "policy": {"kind": "bandit", "arms": ["1", "2"], "floor": 0.05}}
    fronts = [router(routes), router(routes)]
    expected = {"1": [1.0, 1.0], "2": [1.0, 1.0]}
    rng = random.Random(3)
    for n in range(200):
        # Requests alternate between the routers (a few real predictions, then routing decisions);
        # each reward goes to the *other* router.
        path = "/predict" if n < 6 else "/route"
        answer = httpx.post(f"{fronts[n % 2].url}{path}", json=BODY)
        assert answer.status_code == 200, answer.text
        version, paid = answer.headers["X-Model-Version"], rng.choice([0.0, 1.0])
        expected[version][0] += paid
        expected[version][1] += 1 - paid
        feedback = httpx.post(f"{fronts[(n + 1) % 2].url}/feedback",
                              json={"request_id": answer.headers["X-Request-ID"], "reward": paid})
        assert feedback.status_code == 200, feedback.text
    tables = [routes_now(front)["arms"] for front in fronts]
    for arms in tables:
        assert {v: [a["alpha"], a["beta"]] for v, a in arms.items()} == expected
    assert all("redis" in routes_now(front)["state"] for front in fronts)


def test_a_killed_backend_is_a_clear_502_or_a_failover_never_a_hang(churn, router):
    doomed = churn[3]["doomed"]
    all_backends = {**backends(churn), "3": doomed.url}
    strict = router({"name": "churn", "backends": all_backends, "timeout_s": 2,
                     "policy": {"kind": "split", "weights": {"3": 100}}})
    tolerant = router({"name": "churn", "backends": all_backends, "timeout_s": 2, "failover": True,
                       "policy": {"kind": "split", "weights": {"3": 90, "1": 10}}})
    assert httpx.post(f"{strict.url}/predict", json=BODY).headers["X-Model-Version"] == "3"
    doomed.process.kill()  # SIGKILL: no goodbye to the router
    doomed.process.wait()

    answer = httpx.post(f"{strict.url}/predict", json=BODY, timeout=10)
    assert answer.status_code == 502
    assert answer.headers["X-Model-Version"] == "3"
    assert answer.json()["detail"].startswith(f"version 3 at {doomed.url} is unreachable")

    responses = blast(f"{tolerant.url}/predict", 30, BODY, concurrency=3)
    assert {r.status_code for r in responses} == {200}
    moved = [r for r in responses if r.headers.get("X-Failover-From") == "3"]
    assert moved and all(r.headers["X-Model-Version"] == "1" for r in moved)
    assert all(r.json()["route"]["failover_from"] == "3" for r in moved)


def test_a_slow_backend_is_a_504_naming_the_version(churn, router):
    front = router({"name": "churn", "backends": {"slow": churn[3]["slower"].url}, "timeout_s": 0.5,
                    "policy": {"kind": "split", "weights": {"slow": 1}}})
    answer = httpx.post(f"{front.url}/predict", json=BODY, timeout=10)
    assert answer.status_code == 504
    assert answer.json()["detail"] == "version slow did not answer within 0.5 s"


def test_rollback_moves_all_live_traffic_back_within_5_seconds_without_a_failed_request(
        churn, router, registry_with_production):
    uri = registry_with_production
    front = router({"name": "churn", "backends": backends(churn),
                    "policy": {"kind": "split", "weights": {"primary": 100}},
                    "follow": {"registry": uri, "name": "churn", "alias": "production", "poll_s": 0.5}})
    assert routes_now(front)["weights"] == {"2": 1.0}

    log: list[tuple[float, int, str]] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                answer = client.post(f"{front.url}/predict", json=BODY)
                log.append((time.monotonic(), answer.status_code, answer.headers.get("X-Model-Version", "")))

    sender = threading.Thread(target=traffic)
    sender.start()
    try:
        wait_for(lambda: len(log) >= 10, 30, "traffic to flow")
        issued = time.monotonic()
        done = mlship("rollback", "churn", "--alias", "production", "--registry", uri)
        rolled_back = time.monotonic()  # the alias has moved by now
        assert done.returncode == 0, done.stderr
        assert "churn@production → 1" in done.stdout
        wait_for(lambda: [v for t, _, v in log if t > rolled_back][-10:] == ["1"] * 10, 10,
                 "ten answers in a row from version 1 after the rollback")
    finally:
        stop.set()
        sender.join(30)
    assert {status for _, status, _ in log} == {200}  # no request failed during the switch
    last_on_2 = max(t for t, _, v in log if v == "2")
    print(f"rollback: `mlship rollback` ran {rolled_back - issued:.2f} s; the last answer from version 2 came "
          f"{last_on_2 - issued:.2f} s after it was issued; {len(log)} requests, none failed")
    assert last_on_2 - rolled_back <= 5.0
    assert routes_now(front)["follow"]["version"] == "1"


@pytest.fixture
def registry_with_production(churn, tmp_path):
    """A file registry holding versions 1 and 2 of churn, production promoted 1 then 2."""
    from jupyter_mlship.registry import open_registry

    uri = (tmp_path / "registry").as_uri()
    registry = open_registry(uri)
    for version in ("1", "2"):
        registry.push(Path(churn[2]) / f"project{version}", version=version)
        registry.promote("churn", version, "production")
    return uri


def test_mlship_router_renders_a_project_whose_own_tests_pass_and_refuses_bad_requests(registry_with_production,
                                                                                       tmp_path):
    uri = registry_with_production
    done = mlship("router", "churn", "--out", str(tmp_path / "r"), "--registry", uri, "--alias", "production")
    assert done.returncode == 0, done.stderr
    routes = yaml.safe_load((tmp_path / "r" / "routes.yaml").read_text())
    assert routes["backends"] == {"1": "http://127.0.0.1:8081", "2": "http://127.0.0.1:8082"}
    assert routes["policy"] == {"kind": "split", "weights": {"primary": 100}}
    assert routes["follow"] == {"registry": uri, "name": "churn", "alias": "production"}
    assert "redis==" in (tmp_path / "r" / "requirements.txt").read_text()
    assert "jupyter" not in (tmp_path / "r" / "requirements.txt").read_text().lower()
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=tmp_path / "r",
                           capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout[-3000:]

    refused = [
        (["--out", str(tmp_path / "r")], "already exists"),
        (["--out", str(tmp_path / "b"), "--versions", "1", "--policy", "bandit"], "a bandit needs at least two"),
        (["--out", str(tmp_path / "c"), "--versions", "1,7", "--registry", uri], "7"),
        (["--out", str(tmp_path / "d"), "--registry", uri, "--alias", "staging"], "no alias 'staging'"),
        (["--out", str(tmp_path / "e"), "--registry", uri, "--alias", "production", "--versions", "1"],
         "production points at version 2, which is not among 1"),
    ]
    for args, message in refused:
        done = mlship("router", "churn", *args)
        assert done.returncode == 1 and message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r", "registry"]  # nothing half-written


def test_mlship_router_serve_starts_versions_and_router_and_stops_them_all(registry_with_production, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "jupyter_mlship.cli", "router", "churn", "--out", str(tmp_path / "r"),
               "--registry", registry_with_production, "--alias", "production", "--serve",
               "--port", str(port)]  # each version in its cached clean environment, as `mlship verify` builds it
    log = (tmp_path / "serve.log").open("w")
    serving = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    urls = [f"http://127.0.0.1:{port + n}" for n in range(3)]
    try:
        def router_ready() -> bool:
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                return httpx.get(f"{urls[0]}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(router_ready, 180, "mlship router --serve to bring up the versions and the router", interval=0.5)
        answer = httpx.post(f"{urls[0]}/predict", json=BODY, timeout=30)
        assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "2"
        serving.send_signal(signal.SIGINT)  # Ctrl-C
        assert serving.wait(60) == 0
    finally:
        if serving.poll() is None:
            serving.kill()
    for url in urls:  # the router and both versions are gone with it
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{url}/healthz", timeout=2)
