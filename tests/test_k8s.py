"""The Kubernetes manifests of a generated project are valid for the API server, offline."""

from __future__ import annotations


import kubernetes_validate
import pytest
import yaml

from jupyter_mlship.render import render_project
from support.specs import tiny_spec

K8S_VERSION = "1.30"
MANIFESTS = ("deployment.yaml", "service.yaml", "hpa.yaml", "pdb.yaml")


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> dict[str, dict]:
    # An underscore is fine in a service NAME but not in a Kubernetes object name.
    spec = tiny_spec("churn_model", artifacts=[])
    project = render_project(spec, None, tmp_path_factory.mktemp("k8s") / "churn_model")
    return {name: yaml.safe_load((project / "k8s" / name).read_text()) for name in MANIFESTS}


@pytest.mark.parametrize("name", MANIFESTS)
def test_each_manifest_validates_strictly(manifests, name):
    kubernetes_validate.validate(manifests[name], K8S_VERSION, strict=True)
    assert manifests[name]["metadata"]["name"] == "churn-model"
    assert manifests[name]["metadata"]["labels"]["app.kubernetes.io/name"] == "churn-model"


def test_deployment_probes_image_and_security(manifests):
    deployment = manifests["deployment.yaml"]["spec"]
    pod = deployment["template"]["spec"]
    container = pod["containers"][0]
    assert deployment["selector"]["matchLabels"] == {"app.kubernetes.io/name": "churn-model"}
    assert container["image"] == "churn_model:3"
    assert container["ports"][0]["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"requests", "limits"} <= set(container["resources"])
    assert {env["name"] for env in container["env"]} >= {"WEB_CONCURRENCY"}
    # Longer than uvicorn's graceful shutdown in the Dockerfile's CMD.
    assert pod["terminationGracePeriodSeconds"] > 20
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_service_hpa_and_pdb_point_at_the_deployment(manifests):
    assert manifests["service.yaml"]["spec"]["selector"] == {"app.kubernetes.io/name": "churn-model"}
    hpa = manifests["hpa.yaml"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "churn-model"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    pdb = manifests["pdb.yaml"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1
