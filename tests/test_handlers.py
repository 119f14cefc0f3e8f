"""The server extension as the lab panel sees it: authenticated JSON under /mlship/."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
import tornado.httpclient

from jupyter_mlship import history

pytest_plugins = ["pytest_jupyter.jupyter_server"]

# A stand-in for `mlship build`: prints a few lines slowly, then exits 0 (or 3 for a "broken" project).
FAKE_BUILD = (
    "import sys, time, pathlib\n"
    "project = pathlib.Path(sys.argv[1])\n"
    "print('building', project.name, flush=True)\n"
    "time.sleep(0.3)\n"
    "print('step 2/2', flush=True)\n"
    "sys.exit(3 if (project / 'BROKEN').exists() else 0)\n"
)


@pytest.fixture
def jp_server_config(jp_root_dir):
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_mlship.server": True}},
        "MlshipExtension": {"build_command": [sys.executable, "-c", FAKE_BUILD]},
    }


def body(response) -> dict:
    return json.loads(response.body)


def project_dir(root: Path, name: str) -> Path:
    project = root / "services" / name
    project.mkdir(parents=True)
    (project / "ship.json").write_text("{}")
    return project


def record(notebook: str | None, name: str, when: float, verified: bool = True) -> None:
    history.record_export(history.ExportRecord(
        notebook=notebook, name=name, version="1", project=f"/srv/{name}", time=when, verified=verified, ok=True))


async def test_history_lists_only_this_notebooks_exports_newest_first(jp_fetch, jp_root_dir):
    # Kernels record JPY_SESSION_NAME (absolute); the panel asks with the path relative to the root.
    record(str(jp_root_dir / "churn.ipynb"), "churn", 100.0)
    record(str(jp_root_dir / "churn.ipynb"), "churn-v2", 200.0, verified=False)
    record(str(jp_root_dir / "other.ipynb"), "other", 150.0)
    record(None, "headless", 120.0)

    exports = body(await jp_fetch("mlship", "history", params={"notebook": "churn.ipynb"}))["exports"]

    assert [e["name"] for e in exports] == ["churn-v2", "churn"]
    assert exports[0]["verified"] is False and exports[1]["verified"] is True
    assert {"notebook", "name", "version", "project", "time", "verified", "ok", "message"} <= exports[0].keys()


async def test_history_without_notebook_lists_everything(jp_fetch):
    record("/a.ipynb", "a", 1.0)
    record(None, "b", 2.0)
    exports = body(await jp_fetch("mlship", "history"))["exports"]
    assert [e["name"] for e in exports] == ["b", "a"]


async def test_builders_answers_whether_an_image_can_be_built(jp_fetch):
    answer = body(await jp_fetch("mlship", "builders"))
    assert set(answer) == {"available", "builder", "reason"}
    if answer["available"]:
        assert answer["builder"]
    else:
        assert answer["reason"]  # the sentence saying what to install


async def test_builders_reports_the_reason_when_no_builder_exists(jp_fetch, monkeypatch):
    from jupyter_mlship import build

    def no_builder(*args, **kwargs):
        raise build.BuildError("no container builder found: install podman or docker")

    monkeypatch.setattr(build, "detect_builder", no_builder)
    answer = body(await jp_fetch("mlship", "builders"))
    assert answer == {"available": False, "builder": None, "reason": "no container builder found: install podman or docker"}


async def test_build_of_a_missing_project_is_refused_with_a_clear_message(jp_fetch):
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch("mlship", "build", method="POST", body=json.dumps({"project": "services/nope"}))
    assert caught.value.code == 404
    assert body(caught.value.response)["message"] == "no service project at services/nope: the folder does not exist"


async def test_build_of_a_folder_that_is_not_a_project_is_refused(jp_fetch, jp_root_dir):
    (jp_root_dir / "notes").mkdir()
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch("mlship", "build", method="POST", body=json.dumps({"project": "notes"}))
    assert caught.value.code == 404
    assert "not a service project" in body(caught.value.response)["message"]


async def test_build_without_a_project_is_a_bad_request(jp_fetch):
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch("mlship", "build", method="POST", body="{}")
    assert caught.value.code == 400
    assert "no project given" in body(caught.value.response)["message"]


async def poll_until_finished(jp_fetch, build_id: str) -> tuple[dict, list[str]]:
    lines: list[str] = []
    since = 0
    for _ in range(100):
        state = body(await jp_fetch("mlship", "build", build_id, params={"since": str(since)}))
        lines += state["lines"]
        since = state["next"]
        if state["status"] != "running":
            return state, lines
        await asyncio.sleep(0.1)
    raise AssertionError("build did not finish")


async def test_build_starts_and_its_log_is_polled_line_by_line(jp_fetch, jp_root_dir):
    project = project_dir(jp_root_dir, "churn")
    started = body(await jp_fetch("mlship", "build", method="POST", body=json.dumps({"project": "services/churn"})))
    assert started["status"] == "running"
    assert started["project"] == str(project.resolve())

    state, lines = await poll_until_finished(jp_fetch, started["id"])

    assert state["status"] == "succeeded" and state["returncode"] == 0
    assert lines == ["building churn", "step 2/2"]  # each line once, in order, across polls


async def test_a_failing_build_reports_failed_with_its_exit_code(jp_fetch, jp_root_dir):
    project = project_dir(jp_root_dir, "broken")
    (project / "BROKEN").touch()
    started = body(await jp_fetch("mlship", "build", method="POST", body=json.dumps({"project": str(project)})))
    state, _ = await poll_until_finished(jp_fetch, started["id"])
    assert state["status"] == "failed" and state["returncode"] == 3


async def test_polling_an_unknown_build_is_404(jp_fetch):
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch("mlship", "build", "0123abcd")
    assert caught.value.code == 404


@pytest.mark.parametrize("method,path", [("GET", "mlship/history"), ("GET", "mlship/builders"),
                                         ("POST", "mlship/build"), ("GET", "mlship/build/0123abcd")])
async def test_unauthenticated_requests_are_forbidden(jp_fetch, method, path):
    with pytest.raises(tornado.httpclient.HTTPClientError) as caught:
        await jp_fetch(*path.split("/"), method=method, body="{}" if method == "POST" else None,
                       headers={"Authorization": ""})
    assert caught.value.code == 403
