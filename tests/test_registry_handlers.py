"""The registry as the lab panel sees it: /mlship/registry, /push, /promote, /rollback."""

from __future__ import annotations

import json
import shutil

import pytest
import tornado.httpclient
from support.registry import export_projects

from jupyter_mlship.spec import ShipSpec

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return export_projects(tmp_path_factory.mktemp("exports"))


@pytest.fixture
def registry_dir(tmp_path):
    return tmp_path / "registry"


@pytest.fixture
def jp_server_config(jp_root_dir, registry_dir):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_mlship.server": True}},
        "MlshipExtension": {"registry": str(registry_dir)},
    }


def put_project(exports, root, index: int, notebook: str) -> str:
    """A project under the server root, as if exported from ``notebook`` (relative path returned)."""
    target = root / "services" / f"churn{index}"
    shutil.copytree(exports[index], target)
    spec = ShipSpec.read(target / "ship.json")
    spec.source.notebook = str(root / notebook)  # kernels record the absolute path
    spec.write(target / "ship.json")
    return f"services/churn{index}"


async def post(jp_fetch, path: str, payload) -> dict:
    response = await jp_fetch("mlship", "registry", path, method="POST", body=json.dumps(payload))
    return json.loads(response.body)


async def refused(jp_fetch, path: str, payload) -> tuple[int, str]:
    with pytest.raises(tornado.httpclient.HTTPClientError) as info:
        await jp_fetch("mlship", "registry", path, method="POST", body=json.dumps(payload))
    return info.value.code, json.loads(info.value.response.body)["message"]


async def test_push_promote_rollback_and_the_notebooks_models(jp_fetch, jp_root_dir, exports, registry_dir):
    first = put_project(exports, jp_root_dir, 0, "churn.ipynb")
    second = put_project(exports, jp_root_dir, 1, "churn.ipynb")

    pushed = await post(jp_fetch, "push", {"project": first})
    assert (pushed["name"], pushed["version"], pushed["created"]) == ("churn", "1", True)
    assert {"version", "pushed_at", "pushed_by", "notebook", "cell", "git_commit", "verified", "size_bytes",
            "sha256s"} <= pushed.keys()
    assert (await post(jp_fetch, "push", {"project": second}))["version"] == "2"
    assert (await post(jp_fetch, "push", {"project": second}))["created"] is False

    state = await post(jp_fetch, "promote", {"name": "churn", "version": "1", "alias": "production"})
    state = await post(jp_fetch, "promote", {"name": "churn", "version": "2", "alias": "production"})
    assert state["version"] == "2" and [h["version"] for h in state["history"]] == ["1", "2"]
    state = await post(jp_fetch, "rollback", {"name": "churn", "alias": "production"})
    assert state["version"] == "1" and state["history"][-1]["action"] == "rollback"
    assert {"version", "time", "by", "action"} <= state["history"][-1].keys()

    listing = json.loads((await jp_fetch("mlship", "registry", params={"notebook": "churn.ipynb"})).body)
    assert listing["registry"] == str(registry_dir)
    [model] = listing["models"]
    assert model["name"] == "churn" and [v["version"] for v in model["versions"]] == ["1", "2"]
    assert model["aliases"]["production"]["version"] == "1"
    other = json.loads((await jp_fetch("mlship", "registry", params={"notebook": "other.ipynb"})).body)
    assert other["models"] == []
    everything = json.loads((await jp_fetch("mlship", "registry")).body)
    assert [m["name"] for m in everything["models"]] == ["churn"]


async def test_refusals_are_4xx_with_one_sentence(jp_fetch, jp_root_dir, exports, registry_dir):
    first = put_project(exports, jp_root_dir, 0, "churn.ipynb")
    await post(jp_fetch, "push", {"project": first})

    assert await refused(jp_fetch, "promote", {"name": "churn", "version": "9", "alias": "production"}) == \
        (404, f"churn has no version 9 in the registry {registry_dir}")
    assert await refused(jp_fetch, "rollback", {"name": "churn", "alias": "production"}) == \
        (404, f"churn has no alias 'production' in {registry_dir}: nothing to roll back")
    code, message = await refused(jp_fetch, "promote", {"name": "churn", "version": "1", "alias": "latest"})
    assert code == 400 and message.startswith("'latest' is reserved")
    assert await refused(jp_fetch, "push", {"project": "services/nothing"}) == \
        (404, "no service project at services/nothing: the folder does not exist")
    assert await refused(jp_fetch, "promote", {"name": "churn"}) == \
        (400, "the request body lacks 'version', 'alias'")
    assert not (registry_dir / "churn" / "aliases").exists()  # nothing was written by any refusal
