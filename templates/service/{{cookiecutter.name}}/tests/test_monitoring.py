"""Request ids, feedback and drift monitoring answer as README.md says (app/monitoring.py)."""

import json
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent


def test_the_request_id_comes_back_in_the_header_and_the_body(client, ship):
    response = client.post("/predict", json={"instances": ship["golden"]["instances"][:1]},
                           headers={"X-Request-ID": "test-42"})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "test-42"
    assert response.json()["request_id"] == "test-42"


def test_feedback_is_accepted_and_monitoring_watches_every_profiled_feature(client, ship):
    response = client.post("/feedback", json={"request_id": "test-42", "outcome": ship["golden"]["predictions"][0]})
    assert response.status_code == 200 and response.json() == {"accepted": 1}
    report = client.get("/monitoring").json()
    assert report["model"] == {"name": ship["name"], "version": ship["version"]}
    reference_file = PROJECT_DIR / "model" / "reference.json"
    if reference_file.is_file():
        reference = json.loads(reference_file.read_text(encoding="utf-8"))
        assert set(report["features"]) == set(reference["features"])
    assert report["guard"]["mode"] == ship.get("monitoring", {}).get("guard", "flag")
