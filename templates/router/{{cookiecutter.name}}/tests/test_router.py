"""The router's behaviour against two stand-in versions: split, sticky, shadow, bandit, failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.config import ConfigError, load_routes

BODY = {"instances": [[1.0, 2.0]]}
PROJECT_DIR = Path(__file__).resolve().parent.parent


def urls(versions) -> dict:
    return {v: url for v, (url, _) in versions.items()}


def test_the_generated_routes_yaml_is_valid():
    assert load_routes(PROJECT_DIR / "routes.yaml").name
    assert load_routes(PROJECT_DIR / "compose.routes.yaml").name


def test_split_follows_the_weights_and_answers_with_the_version(versions, router):
    client = router({"name": "m", "backends": urls(versions), "policy": {"kind": "split", "weights": {"1": 3, "2": 1}}})
    answers = [client.post("/predict", json=BODY) for _ in range(400)]
    assert {a.status_code for a in answers} == {200}
    share = sum(a.headers["X-Model-Version"] == "1" for a in answers) / 400
    assert 0.65 < share < 0.85
    body = answers[0].json()
    assert body["predictions"] == [answers[0].headers["X-Model-Version"]]
    assert body["request_id"] == answers[0].headers["X-Request-ID"]


def test_a_sticky_key_always_reaches_one_version(versions, router):
    client = router({"name": "m", "backends": urls(versions),
                     "policy": {"kind": "split", "weights": {"1": 1, "2": 1}, "sticky": {"header": "X-User-ID"}}})
    for user in range(30):
        seen = {client.post("/predict", json=BODY, headers={"X-User-ID": str(user)}).headers["X-Model-Version"]
                for _ in range(5)}
        assert len(seen) == 1


def test_the_shadow_gets_the_request_but_never_answers(versions, router):
    client = router({"name": "m", "backends": urls(versions),
                     "policy": {"kind": "shadow", "primary": "1", "shadows": ["2"]}})
    answer = client.post("/predict", json=BODY, headers={"X-Request-ID": "r-1"})
    assert answer.headers["X-Model-Version"] == "1" and answer.json()["predictions"] == ["1"]
    shadow_app = versions["2"][1]
    for _ in range(100):
        if "r-1" in shadow_app.state.seen:
            break
        import time

        time.sleep(0.05)
    assert "r-1" in shadow_app.state.seen


def test_bandit_rewards_move_the_posteriors(versions, router):
    client = router({"name": "m", "backends": urls(versions), "policy": {"kind": "bandit", "arms": ["1", "2"]}})
    answer = client.post("/predict", json=BODY)
    version = answer.headers["X-Model-Version"]
    assert client.post("/feedback", json={"request_id": answer.headers["X-Request-ID"], "reward": 1}).status_code == 200
    assert client.get("/routes").json()["arms"][version]["alpha"] == 2.0
    assert client.post("/feedback", json={"request_id": "never-seen", "reward": 1}).status_code == 404


def test_a_down_backend_is_a_502_naming_the_version(versions, router):
    client = router({"name": "m", "backends": {"9": "http://127.0.0.1:9"}, "policy": {"kind": "split", "weights": {"9": 1}}})
    answer = client.post("/predict", json=BODY)
    assert answer.status_code == 502 and "version 9" in answer.json()["detail"]


def test_a_bad_routes_yaml_is_refused_with_the_key_named(tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text("name: m\nbackends: {'1': http://x}\npolicy: {kind: split, weights: {'3': 1}}\n")
    with pytest.raises(ConfigError, match="version '3' has no URL in backends"):
        load_routes(path)
