"""The generated service runs as its Dockerfile says: workers from WEB_CONCURRENCY, graceful SIGTERM.

The container's own CMD line is run (with sh, like the image does), so what is tested is what ships.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import httpx

from support.notebooks import Service, ok_cell, wait_for


def container_command(project: Path) -> str:
    match = re.search(r"^CMD (.+)$", (project / "Dockerfile").read_text(), re.M)
    assert match, "the Dockerfile has no CMD"
    return match.group(1)


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_workers_from_web_concurrency_and_in_flight_requests_finish_on_sigterm(ipython):
    ok_cell(ipython, """
        import time
        import numpy as np
        from sklearn.linear_model import LinearRegression
        X = np.random.default_rng(0).normal(size=(30, 2))
        reg = LinearRegression().fit(X, X[:, 0])
    """)
    ok_cell(ipython, """
        %%ship slow --sample X[:3] --no-verify
        def predict(x):
            if x[0, 0] > 100:  # a slow request, to be in flight when SIGTERM arrives
                time.sleep(2)
            return reg.predict(x)
    """)
    project = Path("services/slow").resolve()
    command = container_command(project)
    assert command.startswith("exec uvicorn") and "$PORT" in command and "$HOST" in command
    # The image's CMD reads HOST and PORT (Service sets them) and WEB_CONCURRENCY.
    service = Service(project, command=["sh", "-c", command], env={"WEB_CONCURRENCY": "2"})
    server = service.process
    try:
        wait_for(lambda: len(children(server.pid)) >= 2, 60,
                   "WEB_CONCURRENCY=2 should start two worker processes")

        answer: dict = {}

        def slow_request() -> None:
            answer["response"] = httpx.post(f"{service.url}/predict", json={"instances": [[500.0, 1.0]]}, timeout=30)

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.7)  # let the request reach a worker before SIGTERM (what is checked is that it finishes)
        server.send_signal(signal.SIGTERM)
        thread.join(30)
        assert "response" in answer, "the in-flight request got no answer"
        assert answer["response"].status_code == 200, answer["response"].text
        assert server.wait(30) == 0, service.output()
    finally:
        service.stop()
