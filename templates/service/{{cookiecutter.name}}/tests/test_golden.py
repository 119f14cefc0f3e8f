"""The service predicts what the notebook predicted on the sample (the golden data in ship.json)."""

import pytest

from app.convert import compare_predictions


def batches(items: list, size: int) -> list[list]:
    """Split the golden instances into requests the service accepts (at most max_instances each)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


def test_ready(client):
    response = client.get("/readyz")
    assert response.status_code == 200, response.text


def test_start_up_froze_its_objects_and_turned_the_collector_back_on(client):
    """The lifespan loads the model with the cyclic collector off, then freezes what it made (later
    collections skip it) and turns the collector back on: off for good, cycles would never be freed."""
    import gc

    assert gc.isenabled()
    assert gc.get_freeze_count() > 10_000


def test_allocator_keeps_freed_memory_for_the_next_request():
    """On glibc (the image's C library) blocks up to 4 MB come from the heap and 16 MB of free heap is
    kept (app.main._keep_freed_memory); otherwise each large request faults its memory in again."""
    import os
    import platform

    from app import main

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("not glibc: its allocator has other settings")
    if {"GLIBC_TUNABLES", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"} & set(os.environ):
        pytest.skip("the operator set the allocator")
    assert main.MALLOC_SETTINGS == {"trim_threshold": 16 << 20, "mmap_threshold": 4 << 20}


@pytest.mark.parametrize("route", ["/predict", "/v1/models/{name}:predict"])
def test_golden_predictions(client, ship, route):
    golden = ship["golden"]
    url = route.format(name=ship["name"])
    predictions = []
    for instances in batches(golden["instances"], ship["max_instances"]):
        response = client.post(url, json={"instances": instances})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == {"name": ship["name"], "version": ship["version"]}
        predictions += body["predictions"]
    # Exact for integers, strings and booleans; relative tolerance for floats.
    mismatches = compare_predictions(golden["predictions"], predictions, golden["float_rel_tol"])
    assert not mismatches, "\n".join(mismatches)


def test_unknown_model_name_is_404(client, ship):
    response = client.post(f"/v1/models/not-{ship['name']}:predict", json={"instances": ship["golden"]["instances"][:1]})
    assert response.status_code == 404
    assert "name" in response.json()["detail"]


def test_request_id_is_returned_in_header_and_body(client, ship):
    instances = ship["golden"]["instances"][:1]
    given = client.post("/predict", json={"instances": instances}, headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123" and given.json()["request_id"] == "abc-123"
    fresh = client.post("/predict", json={"instances": instances})
    assert len(fresh.headers["x-request-id"]) == 32 and fresh.json()["request_id"] == fresh.headers["x-request-id"]
