"""The rendered router project: valid routes (three variants), manifests, compose file, pins; refusals."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from jupyter_mlship.router import default_routes, render_router, router_config

BACKENDS = {"1": "http://127.0.0.1:8081", "2": "http://127.0.0.1:8082"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    routes = default_routes("churn_model", BACKENDS, "bandit", redis="redis://127.0.0.1:6379/0")
    return render_router("churn_model", routes, tmp_path_factory.mktemp("router") / "churn-router")


def test_routes_for_here_compose_and_kubernetes(project):
    config = router_config()
    here = config.load_routes(project / "routes.yaml")
    assert here.backends == BACKENDS and here.policy.kind == "bandit" and here.policy.floor == 0.05
    compose = config.load_routes(project / "compose.routes.yaml")
    assert compose.backends == {"1": "http://churn-model-v1:8000", "2": "http://churn-model-v2:8000"}
    assert compose.state.redis == "redis://redis:6379/0"
    configmap = yaml.safe_load((project / "k8s" / "configmap.yaml").read_text())
    in_cluster = config.parse_routes(configmap["data"]["routes.yaml"])
    # In a cluster each version is the Service of its own manifests (port 80), named NAME-vVERSION.
    assert in_cluster.backends == {"1": "http://churn-model-v1", "2": "http://churn-model-v2"}


def test_manifests_validate_and_compose_runs_the_version_images(project):
    for name in ("deployment.yaml", "service.yaml", "configmap.yaml"):
        kubernetes_validate.validate(yaml.safe_load((project / "k8s" / name).read_text()), "1.30", strict=True)
    deployment = yaml.safe_load((project / "k8s" / "deployment.yaml").read_text())
    assert deployment["spec"]["replicas"] == 2  # shared Redis state: more than one replica is safe
    compose = yaml.safe_load((project / "compose.yaml").read_text())
    assert compose["services"]["churn-model-v1"]["image"] == "churn_model:1"
    assert compose["services"]["router"]["depends_on"] == ["churn-model-v1", "churn-model-v2", "redis"]
    pins = (project / "requirements.txt").read_text().split()
    assert pins and all("==" in line for line in pins)
    assert {line.split("==")[0].lower() for line in pins} >= {"fastapi", "uvicorn", "httpx", "redis", "fsspec"}
    assert "jupyter_mlship" not in "".join(p.read_text() for p in (project / "app").glob("*.py"))


@pytest.mark.parametrize("routes, message", [
    ({"name": "m", "backends": BACKENDS, "policy": {"kind": "split", "weights": {"3": 1}}},
     "version '3' has no URL in backends"),
    ({"name": "m", "backends": BACKENDS, "policy": {"kind": "bandit", "arms": ["1", "2"], "floor": 0.6}},
     "floor"),
    ({"name": "m", "backends": BACKENDS, "policy": {"kind": "shadow", "shadows": ["2"]}},
     "name the primary version"),
    ({"name": "m", "backends": BACKENDS, "policy": {"kind": "coin"}}, "policy"),
    ({"name": "m", "backends": BACKENDS, "policy": {"kind": "split", "weights": {"1": float("inf"), "2": 1}}},
     "finite"),
    ({"name": "m", "backends": BACKENDS, "policy": {"kind": "split", "weights": {"1": True, "2": 1}}},
     "valid number"),
    ({"name": "m", "backends": BACKENDS, "policy": {"kind": "bandit", "arms": ["1", "1"]}}, "each version once"),
    ({"name": "m", "backends": BACKENDS, "policy": {"kind": "shadow", "primary": "1", "shadows": ["1"]}},
     "cannot also be its own shadow"),
    ({"name": "m", "backends": {"1": "notaurl"}, "policy": {"kind": "split", "weights": {"1": 1}}},
     "not an http:// or https:// URL"),
])
def test_a_bad_table_is_refused_before_anything_is_written(tmp_path, routes, message):
    with pytest.raises(ValueError, match=message):
        render_router("m", routes, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []
