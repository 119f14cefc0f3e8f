"""The generated service runs as its Dockerfile says: workers from WEB_CONCURRENCY, graceful SIGTERM.

The container's own CMD line is run (with sh, like the image does), so what is tested is what ships.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx

from support.notebooks import free_port, ok_cell


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
    port = free_port()
    env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(port), "WEB_CONCURRENCY": "2"}
    server = subprocess.Popen(["sh", "-c", command], cwd=project, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        time.sleep(2)  # both workers up
        assert len(children(server.pid)) >= 2, "WEB_CONCURRENCY=2 should start two worker processes"

        answer: dict = {}

        def slow_request() -> None:
            answer["response"] = httpx.post(f"{url}/predict", json={"instances": [[500.0, 1.0]]}, timeout=30)

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.7)
        server.send_signal(signal.SIGTERM)
        thread.join(30)
        assert answer["response"].status_code == 200, answer["response"].text
        assert server.wait(30) == 0
    finally:
        if server.poll() is None:
            server.kill()
