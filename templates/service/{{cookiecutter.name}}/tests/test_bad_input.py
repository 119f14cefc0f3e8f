"""Bad requests get a 4xx that names the field and the reason -- never a 500."""

import copy
import json

import pytest

from app.kinds import KINDS
from app.monitoring import member

WRONG_VALUES = {"string": 12345, "integer": "not a number", "number": "not a number", "boolean": "yes"}


def first_instance(ship: dict):
    return copy.deepcopy(ship["golden"]["instances"][0])


def first_required_column(ship: dict):
    return next((c for c in ship["input"]["columns"] if not c["nullable"]), None)


def assert_rejected(response, status: int, *words: str) -> dict:
    """The status, and each word in the body's text or as a problem's field path."""
    assert response.status_code == status, response.text
    body = response.json()
    text = json.dumps(body)
    fields = [p.get("field") for p in body.get("detail", []) if isinstance(p, dict)] if isinstance(body, dict) else []
    for word in words:
        assert word in text or word in fields, f"{word!r} is not named in {text}"
    return body


def test_wrong_type(client, ship):
    spec, instance = ship["input"], first_instance(ship)
    shape = KINDS[spec["kind"]].shape
    if shape == "object":
        column = spec["columns"][0]
        instance[column["name"]] = WRONG_VALUES[column["json_type"]]
        expected_field = f"instances[0]{member(column['name'])}"
    elif shape == "array":
        instance[0] = WRONG_VALUES[spec["json_type"]]
        expected_field = "instances[0][0]"
    else:
        instance = WRONG_VALUES[spec["json_type"]]
        expected_field = "instances[0]"
    response = client.post("/predict", json={"instances": [instance]})
    assert_rejected(response, 422, expected_field)


def test_missing_field(client, ship):
    spec, instance = ship["input"], first_instance(ship)
    if KINDS[spec["kind"]].shape == "array":
        instance = instance[:-1]  # one value short of the row width
        expected_field = "instances[0]"
    else:
        column = first_required_column(ship) if KINDS[spec["kind"]].shape == "object" else None
        if column is None:
            pytest.skip("every input field is optional")
        del instance[column["name"]]
        expected_field = f"instances[0]{member(column['name'])}"
    response = client.post("/predict", json={"instances": [instance]})
    assert_rejected(response, 422, expected_field)


def test_extra_field(client, ship):
    if KINDS[ship["input"]["kind"]].shape != "object":
        pytest.skip("instances of this kind have no fields")
    instance = first_instance(ship)
    instance["unexpected_field"] = 1
    response = client.post("/predict", json={"instances": [instance]})
    assert_rejected(response, 422, "instances[0].unexpected_field")


def test_empty_instances(client):
    response = client.post("/predict", json={"instances": []})
    assert_rejected(response, 422, "instances")


def test_missing_instances(client):
    response = client.post("/predict", json={"inputs": [1]})
    assert_rejected(response, 422, "instances")


def test_too_many_instances_is_413(client, ship):
    instances = [first_instance(ship)] * (ship["max_instances"] + 1)
    response = client.post("/predict", json={"instances": instances})
    assert_rejected(response, 413, "instances")


def test_body_that_is_not_json(client):
    response = client.post("/predict", content=b"{not json", headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text


def test_oversized_body_is_413(client, ship):
    body = b" " * (ship["max_body_bytes"] + 1)
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert_rejected(response, 413, "body")


def test_oversized_body_without_content_length_is_413(client, ship):
    def chunks():  # streamed: no Content-Length, so the real size must be counted
        remaining = ship["max_body_bytes"] + 1
        while remaining > 0:
            size = min(remaining, 1 << 20)
            remaining -= size
            yield b" " * size

    response = client.post("/predict", content=chunks(), headers={"content-type": "application/json"})
    assert_rejected(response, 413, "body")
