"""Shared fixtures: the service's own ship.json, and a client with the app started (lifespan run)."""

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

PROJECT_DIR = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ship() -> dict:
    return json.loads((PROJECT_DIR / "ship.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def client():
    from app.main import app

    with TestClient(app) as client:  # `with` runs the lifespan: model load and self-check
        yield client

