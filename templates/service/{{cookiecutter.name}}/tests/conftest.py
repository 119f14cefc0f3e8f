"""Shared fixtures: the service's own ship.json, and a client with the app started (lifespan run)."""

import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ship() -> dict:
    return json.loads((PROJECT_DIR / "ship.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def client(tmp_path_factory):
    # The inference log of test requests goes to a temporary folder, not into the project (app/monitoring.py).
    os.environ.setdefault("MLSHIP_LOG_DIR", str(tmp_path_factory.mktemp("inference-log")))
    from app.main import app

    with TestClient(app) as client:  # `with` runs the lifespan: model load and self-check
        yield client

