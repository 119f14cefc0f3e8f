"""Two small stand-in versions on loopback (real uvicorn servers in threads) and the router in front.

The stand-ins answer like a model service ({"predictions", "model"}); they let the router's own behaviour
be tested without the real models. `router(routes)` starts the app on a temporary routes.yaml.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient


def stand_in(version: str) -> FastAPI:
    app = FastAPI()
    app.state.seen = []

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        app.state.seen.append(request.headers.get("x-request-id"))
        body = await request.json()
        return {"predictions": [version] * len(body["instances"]), "model": {"name": "stand-in", "version": version}}

    @app.get("/readyz")
    def readyz() -> dict:
        return {"status": "ready"}

    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def versions():
    """{"1": (url, app), "2": (url, app)}: two live stand-in services."""
    servers, result = [], {}
    for version in ("1", "2"):
        app, port = stand_in(version), free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        threading.Thread(target=server.run, daemon=True).start()
        servers.append(server)
        result[version] = (f"http://127.0.0.1:{port}", app)
    deadline = time.monotonic() + 20
    while not all(server.started for server in servers):
        assert time.monotonic() < deadline, "the stand-in versions did not start"
        time.sleep(0.05)
    yield result
    for server in servers:
        server.should_exit = True


@pytest.fixture
def router(tmp_path, monkeypatch):
    clients = []

    def start(routes: dict) -> TestClient:
        import app.main as main

        path = tmp_path / "routes.yaml"
        path.write_text(yaml.safe_dump(routes), encoding="utf-8")
        monkeypatch.setattr(main, "ROUTES_FILE", path)
        monkeypatch.setattr(main, "router", main.Router())
        client = TestClient(main.app)
        client.__enter__()  # runs the lifespan: routes.yaml read, client pool opened
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)
