"""The registry on S3 for real: moto in server mode on 127.0.0.1, used through s3fs like any bucket."""

from __future__ import annotations

import itertools
import json
import os
import time

import pytest
from support.notebooks import free_port, mlship
from support.registry import copy_project, export_projects, moto_s3, race

from jupyter_mlship.registry import RegistryError, UnknownRef, open_registry

pytest.importorskip("s3fs")
pytest.importorskip("moto")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    return export_projects(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="module")
def s3():
    with moto_s3("models") as options:
        yield options


@pytest.fixture
def projects(exports, tmp_path):
    folder = tmp_path / "projects"
    folder.mkdir()
    return copy_project(exports[0], folder), copy_project(exports[1], folder)


@pytest.fixture
def uri(s3, request):
    return f"s3://models/{request.node.name[:40]}-{time.monotonic_ns()}"


def connect(s3, uri):
    return open_registry(uri, {"endpoint_url": s3["endpoint"]})


def objects(registry) -> dict[str, bytes]:
    registry.fs.invalidate_cache()
    paths = registry.fs.find(registry.root)
    return registry.fs.cat(paths) if paths else {}


def test_push_list_promote_rollback_pull_on_s3(s3, uri, projects, tmp_path):
    registry = connect(s3, uri)
    first, second = projects
    assert registry.push(first).version == "1"
    assert registry.push(first).created is False
    assert (registry.push(second).version, registry.resolve("churn").parent) == ("2", "1")
    assert registry.models() == ["churn"]
    assert [v.version for v in registry.versions("churn")] == ["1", "2"]

    registry.promote("churn", "1", "production")
    registry.promote("churn", "2", "production")
    assert registry.rollback("churn", "production").version == "1"
    assert [e.version for e in registry.aliases("churn")["production"].history] == ["1", "2", "1"]
    keys = sorted(k.rsplit("/", 1)[-1] for k in objects(registry) if "/aliases/production/" in k)
    assert keys == ["0000000001.json", "0000000002.json", "0000000003.json"]

    out = registry.pull("churn@production", tmp_path / "pulled")
    assert json.loads((out / "ship.json").read_text())["registry"] == {
        "uri": uri, "version": "1", "parent": None, "pushed_at": registry.resolve("churn@1").pushed_at}

    before = objects(registry)
    with pytest.raises(RegistryError, match="versions are immutable"):
        registry.push(first, version="2")
    assert objects(registry) == before


def test_pull_refuses_a_tampered_object_on_s3(s3, uri, projects, tmp_path):
    registry = connect(s3, uri)
    registry.push(projects[0])
    registry.fs.pipe_file(f"{registry.root}/churn/versions/1/project/app/features.py", b"import os\nos.system('x')\n")
    with pytest.raises(RegistryError, match=r"app/features.py of churn version 1 does not match its sha256"):
        registry.pull("churn@1", tmp_path / "pulled")
    assert not (tmp_path / "pulled").exists()


def test_concurrent_promotes_on_s3_never_lose_an_update(s3, uri, projects):
    registry = connect(s3, uri)
    for project in projects:
        registry.push(project)
    racers = [connect(s3, uri) for _ in range(3)]

    rounds = race([lambda r=r, v=str(i % 2 + 1): r.promote("churn", v, "production") for i, r in enumerate(racers)])

    # A racer whose version the alias already had changed nothing (no event): not a winner.
    won = [x for results in rounds for x in results if not isinstance(x, Exception) and x.action != "unchanged"]
    lost = [x for results in rounds for x in results if isinstance(x, Exception)]
    assert lost and all("moved by someone else at the same moment" in str(x) for x in lost)
    history = registry.aliases("churn")["production"].history
    assert [(e.seq, e.version) for e in history] == [(e.seq, e.version) for e in sorted(won, key=lambda e: e.seq)]
    for before, after in itertools.pairwise(history):
        assert after.previous == before.version


def test_concurrent_pushes_on_s3_get_distinct_versions(s3, uri, projects):
    racers = [connect(s3, uri) for _ in range(2)]
    calls = [lambda r=racers[0]: r.push(projects[0]), lambda r=racers[1]: r.push(projects[1])]
    import threading

    results = [None, None]
    barrier = threading.Barrier(2)

    def run(i):
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(r.version for r in results) == ["1", "2"]
    assert [v.content_sha256 for v in connect(s3, uri).versions("churn")] == \
        [r.content_sha256 for r in sorted(results, key=lambda r: r.version)]


def test_gc_on_s3_removes_only_uncommitted_versions(s3, uri, projects):
    registry = connect(s3, uri)
    registry.push(projects[0])
    registry.fs.pipe_file(f"{registry.root}/churn/versions/2/claim.json", json.dumps({"time": 0}).encode())
    registry.fs.pipe_file(f"{registry.root}/churn/versions/2/project/model/clf.skops", b"half")
    assert [v.version for v in registry.versions("churn")] == ["1"]
    with pytest.raises(UnknownRef):
        registry.resolve("churn@2")
    assert registry.gc() == ["churn/versions/2"]
    assert not [k for k in objects(registry) if "/versions/2/" in k]
    assert registry.resolve("churn").version == "1"


def test_missing_bucket_credentials_and_unreachable_endpoint_are_one_sentence(s3, projects, monkeypatch):
    before = objects(connect(s3, "s3://models"))
    with pytest.raises(RegistryError, match=r"^the registry s3://nobucket/reg does not exist \(no such bucket\)"):
        connect(s3, "s3://nobucket/reg").push(projects[0])
    with pytest.raises(RegistryError, match="does not exist"):
        connect(s3, "s3://nobucket/reg").models()

    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(RegistryError, match=r"^no credentials for the registry s3://models/x while pushing churn: "
                                            r"set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        connect(s3, "s3://models/x").push(projects[0])
    monkeypatch.undo()

    closed = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(RegistryError, match=r"^the registry s3://models/x cannot be reached while listing models"):
        open_registry("s3://models/x", {"endpoint_url": closed, "config_kwargs": {"retries": {"max_attempts": 1}}}).models()
    assert objects(connect(s3, "s3://models")) == before  # nothing was written by any of them


def test_cli_against_s3(s3, uri, projects, tmp_path):
    # The endpoint reaches the subprocess through fsspec's FSSPEC_S3_ENDPOINT_URL, set by the fixture.
    pushed = mlship("push", str(projects[0]), "--registry", uri)
    assert pushed.returncode == 0, pushed.stderr
    assert mlship("push", str(projects[1]), "--registry", uri).returncode == 0
    assert "churn@canary → 2" in mlship("promote", "churn", "2", "--alias", "canary", "--registry", uri).stdout
    listing = mlship("models", "churn", "--registry", uri, "--json")
    data = json.loads(listing.stdout)
    assert [v["version"] for v in data["versions"]] == ["1", "2"] and data["aliases"]["canary"]["version"] == "2"
    pulled = mlship("pull", "churn@canary", "--out", str(tmp_path / "pulled"), "--registry", uri)
    assert pulled.returncode == 0, pulled.stderr
    assert json.loads((tmp_path / "pulled/ship.json").read_text())["registry"]["version"] == "2"
