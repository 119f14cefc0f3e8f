"""A generated service under faults: broken files at start-up, hostile bodies, SIGTERM, a killed worker.

Real uvicorn processes over real sockets on a project exported from a real IPython shell. The model is
numpy-only so that each start-up takes seconds; benchmarks/load_faults.py measures the same cases
(and load) on a scikit-learn pipeline.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from support.faults import (
    HOSTILE_BODIES,
    Uvicorn,
    connection_refused,
    cpu_seconds,
    load,
    one_at_a_time,
    send_body,
    send_endless_body,
    send_slowly,
    wait_for,
    worker_pids,
)
from support.notebooks import Service, ok_cell

MODEL = """
import numpy as np
X = np.random.default_rng(0).normal(size=(50, 3))
W = np.array([0.5, -1.0, 2.0])
"""
BODY = {"instances": [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]]}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    from IPython.core.interactiveshell import InteractiveShell

    folder = tmp_path_factory.mktemp("faults")
    saved_cwd, saved_history = os.getcwd(), os.environ.get("MLSHIP_HISTORY")
    os.environ["MLSHIP_HISTORY"] = str(folder / "history.jsonl")
    shell = InteractiveShell.instance()
    shell.reset(new_session=True)
    os.chdir(folder)
    try:
        ok_cell(shell, "%load_ext jupyter_mlship")
        ok_cell(shell, MODEL)
        ok_cell(shell, "%%ship lin --sample X[:5] --no-verify\ndef predict(x):\n    return x @ W")
    finally:
        os.chdir(saved_cwd)
        shell.reset(new_session=True)
        if saved_history is None:
            os.environ.pop("MLSHIP_HISTORY", None)
        else:
            os.environ["MLSHIP_HISTORY"] = saved_history
    return folder / "services" / "lin"


def copy_of(project: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(project, tmp_path / project.name))


def artifact_path(project: Path) -> Path:
    (artifact,) = json.loads((project / "model" / "manifest.json").read_text())["artifacts"]
    return project / "model" / artifact["file"]


def corrupt(project: Path) -> str:
    path = artifact_path(project)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return f"model/{path.name}"


def truncate(project: Path) -> str:
    path = artifact_path(project)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return f"model/{path.name}"


def drop_golden(project: Path) -> str:
    ship = json.loads((project / "ship.json").read_text())
    del ship["golden"]
    (project / "ship.json").write_text(json.dumps(ship))
    return "ship.json"


def skew_numpy(project: Path) -> str:
    manifest_path = project / "model" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["artifacts"][0]["frameworks"]["numpy"] = "1.0.0"
    manifest_path.write_text(json.dumps(manifest))
    return f"model/{manifest['artifacts'][0]['file']}"


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (corrupt, "the file was changed or damaged after export"),
        (truncate, "the file was changed or damaged after export"),
        (drop_golden, "ship.json has no field 'golden'"),
        (skew_numpy, "was saved with other library versions: numpy"),
    ],
    ids=["corrupt artifact", "truncated artifact", "missing ship.json field", "library version skew"],
)
def test_a_broken_project_stays_alive_and_not_ready_with_the_reason(project, tmp_path, damage, reason):
    broken = copy_of(project, tmp_path)
    culprit = damage(broken)
    with Uvicorn(broken, wait_ready=False) as server:
        assert httpx.get(server.url + "/healthz").status_code == 200
        ready = httpx.get(server.url + "/readyz")
        assert ready.status_code == 503 and reason in ready.json()["reason"], ready.text
        assert culprit in ready.json()["reason"]
        prediction = httpx.post(server.url + "/predict", json=BODY)
        assert prediction.status_code == 503 and reason in prediction.json()["detail"]
        log = server.log()
    assert culprit in log and reason in log, log  # the log says which file and why


def test_hostile_bodies_are_4xx_and_the_server_stays_responsive(project):
    with Uvicorn(project, env={"MLSHIP_BODY_TIMEOUT_SECONDS": "2"}) as server:
        answers = {name: send_body(server.port, body, content_type)
                   for name, (body, content_type) in HOSTILE_BODIES.items()}
        answers["100 MB declared"] = send_endless_body(server.port, declared=100 * 1024 * 1024)
        answers["100 MB chunked"] = send_endless_body(server.port, declared=None)
        # a slow-loris body, and meanwhile a normal request: the deadline sweep cancels only the late read
        slow = threading.Thread(target=lambda: answers.update(
            {"slow body": send_slowly(server.port, json.dumps(BODY).encode(), every=0.5, timeout=20)}))
        slow.start()
        time.sleep(0.5)
        meanwhile = httpx.post(server.url + "/predict", json=BODY)
        slow.join(30)
        assert meanwhile.status_code == 200 and "slow body" in answers
        assert 2 <= answers["slow body"].seconds < 4  # refused at its 2 s deadline, give or take one sweep
        for name, answer in answers.items():
            assert answer.status is not None and 400 <= answer.status < 500, (name, answer)
            assert b'"detail"' in answer.body, (name, answer)
        assert answers["text/plain"].status == 415 and b"send application/json" in answers["text/plain"].body
        assert answers["100 MB declared"].status == 413 and answers["100 MB chunked"].status == 413
        assert answers["slow body"].status == 408 and b"not received within 2 s" in answers["slow body"].body
        # Still answering, and answering right.
        response = httpx.post(server.url + "/predict", json=BODY)
        assert response.status_code == 200 and response.json()["predictions"] == pytest.approx([0.45, 4.5])
        assert "Traceback" not in server.log()


def test_sigterm_finishes_in_flight_requests_refuses_new_ones_and_exits(project, request):
    import socket

    server = Uvicorn(project)
    request.addfinalizer(server.stop)
    body = json.dumps(BODY).encode()
    head = (f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    in_flight = []
    for _ in range(4):  # requests the server has started to read: headers and half the body
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        sock.sendall(head + body[: len(body) // 2])
        in_flight.append(sock)
    background, stop = {}, threading.Event()
    loader = threading.Thread(target=lambda: background.update(result=load(server.url, BODY, 100_000, 16, stop)))
    loader.start()
    wait_for(lambda: "POST /predict" in server.log(), 30, "load reaching the server")
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: connection_refused(server.port), 5, "new connections refused after SIGTERM")
    answers = []
    for sock in in_flight:
        sock.sendall(body[len(body) // 2:])
        answers.append(sock.recv(65536).split(b" ", 2)[1])
        sock.close()
    assert answers == [b"200"] * 4, answers
    server.process.wait(25)  # the grace period is 20 s
    stop.set()
    loader.join(60)
    result = background["result"]
    assert result.server_errors == 0 and set(result.statuses) <= {200}, (result.statuses, result.errors)
    assert "Finished server process" in server.log()


def test_a_killed_worker_is_replaced_while_the_other_answers(project):
    with Uvicorn(project, env={"WEB_CONCURRENCY": "2"}) as server:
        workers = wait_for(lambda: len(worker_pids(server.process.pid)) == 2 and worker_pids(server.process.pid),
                           60, "two workers")
        os.kill(workers[0], signal.SIGKILL)
        # The other worker answers every request on fresh connections meanwhile.
        for _ in range(20):
            assert httpx.post(server.url + "/predict", json=BODY, headers={"Connection": "close"}).status_code == 200
        replaced = wait_for(lambda: (pids := worker_pids(server.process.pid)) and len(pids) == 2
                            and workers[0] not in pids and pids, 60, "the supervisor starting a new worker")
        assert workers[1] in replaced
        wait_for(lambda: "Child process" in server.log() and "died" in server.log(), 10, "the log naming the death")
        result = load(server.url, BODY, 400, 8)
        assert result.statuses == {200: 400}, (result.statuses, result.errors)


def idle_spins(metrics: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {sample.labels["outcome"]: sample.value for family in text_string_to_metric_families(metrics)
            if family.name == "mlship_idle_spins" for sample in family.samples if sample.name.endswith("_total")}


def test_idle_spinning_catches_a_one_at_a_time_client_and_stops_when_the_client_does(project):
    """After the last request in flight the loop polls (MLSHIP_IDLE_SPIN_US, default 200 µs) while the
    next request has lately come within the window; then it sleeps. 0 turns it off, so does running more
    workers than CPUs unless the variable is set; a bad value stops the start with the variable named."""
    body = json.dumps(BODY).encode()

    def served(server: Service, requests: int) -> dict[str, float]:
        """One request at a time on one connection, then the spin counters (of the only worker)."""
        assert one_at_a_time(server.port, body, requests) == [200] * requests
        return idle_spins(httpx.get(server.url + "/metrics").text)

    with Uvicorn(project) as server:
        spins = served(server, 200)
        time.sleep(0.2)  # the last spin is over (200 µs)
        before = cpu_seconds(server.process.pid)
        time.sleep(1)
        idle_cpu = cpu_seconds(server.process.pid) - before
    # past the first six gaps (when the share that pays passes one half) the requests were caught polling;
    # the spin after the last one missed, and so did any gap longer than 200 µs
    assert spins["caught"] >= 100 and spins["missed"] >= 1, spins
    assert idle_cpu < 0.2, idle_cpu  # asleep once the client stopped (a poll would take the whole second)

    with Uvicorn(project, env={"MLSHIP_IDLE_SPIN_US": "0"}) as server:
        assert served(server, 200) == {"caught": 0, "missed": 0}

    # Two workers (WEB_CONCURRENCY) on one CPU: no spinning unless the variable asks for it, since one
    # worker's polling would take the core from the other.
    def on_one_cpu(port: int) -> list[str]:
        return ["taskset", "-c", str(min(os.sched_getaffinity(0))), sys.executable, "-m", "uvicorn",
                "app.main:app", "--host", "127.0.0.1", "--port", str(port)]

    for env, spinning in (({}, False), ({"MLSHIP_IDLE_SPIN_US": "200"}, True)):
        with Service(project, command=on_one_cpu, env={"WEB_CONCURRENCY": "2", **env}) as server:
            wait_for(lambda: len(worker_pids(server.process.pid)) == 2, 60, "two workers")
            for _ in range(100):  # the connection's worker may still be loading its model: 503
                statuses = one_at_a_time(server.port, body, 300)
                if statuses.count(200) == 300:
                    break
            # each scrape reaches either worker: the most caught of 40 scrapes is the serving worker's
            caught = max(idle_spins(httpx.get(server.url + "/metrics").text)["caught"] for _ in range(40))
        assert statuses == [200] * 300
        assert (caught >= 100) if spinning else (caught == 0), (env, caught)

    with pytest.raises(AssertionError, match="MLSHIP_IDLE_SPIN_US='fast': expected microseconds"):
        Uvicorn(project, env={"MLSHIP_IDLE_SPIN_US": "fast"}, start_timeout=30)
