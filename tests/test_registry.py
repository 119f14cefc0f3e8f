"""The model registry on a local folder: a user pushes exports, promotes, rolls back, pulls and diffs them."""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path

import pytest
from support.notebooks import mlship
from support.registry import copy_project, export_projects, race

from jupyter_mlship.registry import RegistryError, UnknownRef, open_registry, parse_ref
from jupyter_mlship.registry.refs import Ref


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """Two real `%ship --no-verify` exports of `churn` (a tiny sklearn model, different C), made once."""
    return export_projects(tmp_path_factory.mktemp("exports"))


@pytest.fixture
def projects(exports, tmp_path):
    folder = tmp_path / "projects"
    folder.mkdir()
    return copy_project(exports[0], folder), copy_project(exports[1], folder)


@pytest.fixture(autouse=True)
def registry_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSHIP_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("MLSHIP_REGISTRY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "registry"


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- references ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, ref", [
    ("churn", Ref("churn")),
    ("churn@latest", Ref("churn")),
    ("churn@7", Ref("churn", version="7")),
    ("churn@production", Ref("churn", alias="production")),
    ("fraud-v2@canary_1", Ref("fraud-v2", alias="canary_1")),
])
def test_references_parse(text, ref):
    assert parse_ref(text) == ref


@pytest.mark.parametrize("text, words", [
    ("", "empty model reference"),
    ("churn@", "nothing after '@'"),
    ("Churn@7", "the name 'Churn'"),
    ("churn@7@8", "single '@'"),
    ("churn@07", "versions are positive integers"),
    ("churn@Prod!", "neither a version"),
])
def test_bad_references_are_refused_with_the_reason(text, words):
    with pytest.raises(RegistryError, match=words):
        parse_ref(text)


# --- push, list, immutability --------------------------------------------------------------------


def test_push_takes_the_next_version_and_repushing_identical_bytes_is_a_no_op(projects, registry_env):
    first, second = projects
    registry = open_registry()

    one = registry.push(first)
    again = registry.push(first)
    two = registry.push(second)

    assert (one.version, one.created, one.parent) == ("1", True, None)
    assert (again.version, again.created) == ("1", False)
    assert (two.version, two.created, two.parent) == ("2", True, "1")
    assert registry.models() == ["churn"]
    assert [v.version for v in registry.versions("churn")] == ["1", "2"]
    record = json.loads((registry_env / "churn/versions/2/version.json").read_text())
    assert record["notebook"].endswith("churn.ipynb") and record["cell"] and record["verify_result"] == "not run"
    assert set(record["sha256s"]) == {"clf"} and record["pushed_by"] and record["pushed_at"]
    # The manifest covers every file of the registry's copy, exactly.
    stored = tree(registry_env / "churn/versions/2/project")
    assert set(record["files"]) == set(stored)
    import hashlib
    assert all(hashlib.sha256(stored[p]).hexdigest() == f["sha256"] for p, f in record["files"].items())
    # ship.json and REVIEW.md name the registry, version and parent, in the folder and in the registry alike.
    ship = json.loads((second / "ship.json").read_text())
    assert ship["registry"]["version"] == "2" and ship["registry"]["parent"] == "1"
    assert ship["registry"]["uri"] == str(registry_env)
    assert "## Registry" in (second / "REVIEW.md").read_text()
    assert (second / "ship.json").read_bytes() == stored["ship.json"]
    assert (second / "REVIEW.md").read_bytes() == stored["REVIEW.md"]


def test_exporting_an_unchanged_notebook_again_pushes_nothing_new(tmp_path, registry_env):
    """The same notebook exported twice (the model trained afresh, so other objects at other addresses,
    at another time, verified in another number of seconds) is the same version; a real change is not."""
    import re

    notebook = str(tmp_path / "churn.ipynb")
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    first, second = export_projects(tmp_path / "a", notebook=notebook)[0], export_projects(tmp_path / "b", notebook=notebook)[0]
    artifact = json.loads((first / "ship.json").read_text())["artifacts"][0]
    assert artifact["format"] == "skops"
    assert (first / "model" / artifact["file"]).read_bytes() == (second / "model" / artifact["file"]).read_bytes()
    for project, when, seconds in ((first, "2030-06-07T08:09:10+00:00", "41.2"), (second, "2031-01-02T03:04:05+00:00", "7.9")):
        stamp = json.loads((project / "ship.json").read_text())["source"]["captured_at"]
        for file in ("ship.json", "README.md", "REVIEW.md"):
            text = (project / file).read_text()
            text = text.replace(stamp, when).replace(stamp.replace("+", "\\+"), when.replace("+", "\\+"))
            if file == "REVIEW.md":  # as after a verification that passed, in its own time
                text = re.sub(r"(?m)^\| not run \|.*$", f"| passed | 20 | 0 | {seconds} s (uv, reused environment) |", text)
                assert f"{seconds} s (uv" in text and when.replace("+", "\\+") in text
            (project / file).write_text(text)
    registry = open_registry()
    one, again = registry.push(first), registry.push(second)
    assert (one.version, again.version, again.created) == ("1", "1", False)

    review = second / "REVIEW.md"  # what the reviewer wrote is part of the version
    review.write_text(review.read_text().replace("## Verification", "Reviewed: the threshold is fine.\n\n## Verification"))
    assert (registry.push(second).version, registry.push(second).created) == ("2", False)
    readme = second / "README.md"
    readme.write_text(readme.read_text().replace("2031-01-02T03:04:05+00:00", "2031-01-02T03:04:05+00:00, by hand"))
    assert registry.push(second).version == "3"


def test_the_services_own_inference_log_in_the_project_is_never_pushed(projects, registry_env):
    """A service run in the project folder writes its inference log to PROJECT/logs: runtime data, not
    the version. Pushing leaves it out (and a file its writer renames meanwhile cannot fail the push);
    the version is the same as without it."""
    first, _ = projects
    registry = open_registry()
    one = registry.push(first)
    log_dir = first / "logs" / "predictions" / "date=2026-11-27"
    log_dir.mkdir(parents=True)
    (log_dir / "20261127T164026-vm-1-00001.parquet").write_bytes(b"PAR1 rows PAR1")
    (log_dir / ".20261127T164026-vm-1-00002.parquet.tmp").write_bytes(b"half")

    again = registry.push(first)

    assert (again.version, again.created) == (one.version, False)
    stored = tree(registry_env / "churn/versions/1/project")
    assert not [path for path in stored if path.startswith("logs/")]
    assert ".gitignore" in stored and "logs/" in stored[".gitignore"].decode().splitlines()


def test_a_version_is_immutable(projects, registry_env):
    first, second = projects
    registry = open_registry()
    registry.push(first, version="1")
    before = tree(registry_env)

    with pytest.raises(RegistryError, match="version 1 already exists .* with different contents; versions are immutable"):
        registry.push(second, version="1")

    assert tree(registry_env) == before
    assert registry.push(first, version="1").created is False  # the same bytes under the same version: fine
    with pytest.raises(RegistryError, match="positive integers"):
        registry.push(second, version="v2")


def test_an_uncommitted_version_is_invisible_and_gc_removes_it(projects, registry_env):
    first, second = projects
    registry = open_registry()
    registry.push(first)
    # An interrupted push: claimed and half uploaded, never committed (no version.json).
    leftover = registry_env / "churn/versions/2"
    (leftover / "project/model").mkdir(parents=True)
    (leftover / "claim.json").write_text(json.dumps({"by": "someone", "time": 0}))
    (leftover / "project/model/clf.skops").write_bytes(b"half")

    assert [v.version for v in registry.versions("churn")] == ["1"]
    assert registry.resolve("churn").version == "1"
    with pytest.raises(UnknownRef, match="churn has no version 2"):
        registry.resolve("churn@2")
    assert registry.push(second).version == "3"  # never the claimed number

    young = registry_env / "churn/versions/9"
    young.mkdir()
    (young / "claim.json").write_text(json.dumps({"by": "someone", "time": __import__("time").time()}))
    assert registry.gc() == ["churn/versions/2"]  # a young claim may be a push still running
    assert not leftover.exists() and young.exists()
    assert registry.gc("churn", older_than=0) == ["churn/versions/9"]
    assert [v.version for v in registry.versions("churn")] == ["1", "3"]


# --- aliases ----------------------------------------------------------------------------------------


def test_promote_rollback_and_the_alias_history(projects, registry_env):
    registry = open_registry()
    for project in projects:
        registry.push(project)

    registry.promote("churn", "1", "production")
    registry.promote("churn", "2", "production")
    assert registry.resolve("churn@production").version == "2"
    event = registry.rollback("churn", "production")
    assert (event.version, event.previous, event.action) == ("1", "2", "rollback")
    assert registry.resolve("churn@production").version == "1"
    with pytest.raises(RegistryError, match="no earlier version to roll back to"):
        registry.rollback("churn", "production")

    state = registry.aliases("churn")["production"]
    assert [(e.action, e.version, e.previous) for e in state.history] == [
        ("promote", "1", None), ("promote", "2", "1"), ("rollback", "1", "2")]
    assert all(e.time and e.by for e in state.history)
    # The documented layout: one exclusively created file per move; the highest SEQ is the target.
    files = sorted(p.name for p in (registry_env / "churn/aliases/production").iterdir())
    assert files == ["0000000001.json", "0000000002.json", "0000000003.json"]
    assert json.loads((registry_env / "churn/aliases/production/0000000003.json").read_text())["version"] == "1"

    before = tree(registry_env)
    assert registry.promote("churn", "1", "production").action == "unchanged"  # already there: no event
    with pytest.raises(UnknownRef, match="churn has no version 7"):
        registry.promote("churn", "7", "production")
    with pytest.raises(RegistryError, match="'latest' is reserved"):
        registry.promote("churn", "1", "latest")
    with pytest.raises(UnknownRef, match="no model 'fraud'"):
        registry.resolve("fraud@production")
    assert tree(registry_env) == before


def test_concurrent_promotes_never_lose_an_update(projects, registry_env):
    registry = open_registry()
    for project in projects:
        registry.push(project)
    racers = [open_registry() for _ in range(4)]  # separate clients, as separate users would have

    rounds = race([lambda r=r, v=str(i % 2 + 1): r.promote("churn", v, "production") for i, r in enumerate(racers)])

    # A racer whose version the alias already had changed nothing (no event): not a winner.
    won = [x for results in rounds for x in results if not isinstance(x, Exception) and x.action != "unchanged"]
    lost = [x for results in rounds for x in results if isinstance(x, Exception)]
    assert lost and all(isinstance(x, RegistryError) and "moved by someone else at the same moment" in str(x)
                        for x in lost)
    history = registry.aliases("churn")["production"].history
    assert [(e.seq, e.version) for e in history] == [(e.seq, e.version) for e in sorted(won, key=lambda e: e.seq)]  # every winner, in order
    for before, after in itertools.pairwise(history):
        assert after.previous == before.version  # nobody overwrote anybody


# --- pull ---------------------------------------------------------------------------------------------


def test_pull_checks_every_file_and_refuses_a_tampered_or_truncated_one(projects, registry_env, tmp_path):
    registry = open_registry()
    registry.push(projects[0])
    registry.promote("churn", "1", "production")

    out = registry.pull("churn@production", tmp_path / "pulled")
    assert tree(out) == tree(registry_env / "churn/versions/1/project")

    model = registry_env / "churn/versions/1/project/model/clf.skops"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(RegistryError, match=r"model/clf.skops of churn version 1 does not match its sha256 .*"
                                            r"\(tampered or truncated\); nothing was written"):
        registry.pull("churn@1", tmp_path / "again")
    assert not (tmp_path / "again").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".again")] == []
    with pytest.raises(RegistryError, match="already exists and is not empty"):
        registry.pull("churn@1", out)


# --- the real `mlship` entry point ---------------------------------------------------------------------


def test_cli_push_models_promote_rollback_pull_diff_gc(projects, registry_env, tmp_path):
    first, second = projects
    pushed = mlship("push", str(first))
    assert pushed.returncode == 0, pushed.stderr
    assert f"pushed churn version 1 to {registry_env}" in pushed.stdout
    assert "nothing pushed" in mlship("push", str(first)).stdout
    assert "(parent 1)" in mlship("push", str(second)).stdout
    refused = mlship("push", str(first), "--version", "2")
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines() == [(
        f"mlship push: churn version 2 already exists in {registry_env} with different contents; "
        "versions are immutable: push without --version to get the next one")]

    assert mlship("promote", "churn", "1", "--alias", "production").returncode == 0
    promoted = mlship("promote", "churn", "2", "--alias", "production")
    assert "churn@production → 2 (was 1)" in promoted.stdout and "promote" in promoted.stdout
    listing = mlship("models", "churn").stdout
    assert "version" in listing and "churn.ipynb In[" in listing and "clf:" in listing and "not run" in listing
    assert "churn@production → 2" in listing
    assert mlship("models").stdout.splitlines()[1].split()[:3] == ["churn", "2", "2"]
    rolled = mlship("rollback", "churn", "--alias", "production")
    assert rolled.returncode == 0 and "churn@production → 1 (was 2)" in rolled.stdout and "rollback" in rolled.stdout

    pulled = mlship("pull", "churn@production", "--out", str(tmp_path / "pulled"))
    assert pulled.returncode == 0 and "sha256 checked" in pulled.stdout
    assert json.loads((tmp_path / "pulled/ship.json").read_text())["registry"]["version"] == "1"

    diff = mlship("diff", "churn@1", "churn@production")
    assert diff.returncode == 0 and "No differences." in diff.stdout
    diff = mlship("diff", "churn@1", "churn@2").stdout
    assert "--- a/app/features.py" in diff and "+++ b/app/features.py" in diff
    assert "~ `clf`: sha256" in diff and "golden predictions changed on the same sample" in diff

    unknown = mlship("pull", "churn@9", "--out", str(tmp_path / "nine"))
    assert unknown.returncode == 1 and not (tmp_path / "nine").exists()
    assert unknown.stderr.strip() == f"mlship pull: churn has no version 9 in the registry {registry_env}"
    assert mlship("diff", "churn@1", "fraud@2").stderr.strip() == f"mlship diff: no model 'fraud' in the registry {registry_env}"

    (registry_env / "churn/versions/5").mkdir()
    gc = mlship("registry", "gc", "--older-than", "0")
    assert gc.returncode == 0 and "removed uncommitted churn/versions/5" in gc.stdout
    assert not (registry_env / "churn/versions/5").exists()


def test_serve_takes_a_registry_reference(projects, registry_env, tmp_path, serve):
    import sys

    import httpx

    registry = open_registry()
    registry.push(projects[0])
    registry.push(projects[1])
    registry.promote("churn", "2", "production")
    service = serve(tmp_path, command=lambda port: [sys.executable, "-m", "jupyter_mlship.cli", "serve",
                                                    "churn@production", "--port", str(port)])
    ship = json.loads((projects[1] / "ship.json").read_text())
    answer = httpx.post(f"{service.url}/predict", json={"instances": ship["golden"]["instances"]}).json()
    flat = [x for row in answer["predictions"] for x in row]
    assert flat == pytest.approx([x for row in ship["golden"]["predictions"] for x in row])
    service.stop()
    cached = list((tmp_path / "cache").glob("*/churn/2/ship.json"))
    assert len(cached) == 1  # pulled once into the cache, sha256-checked


def test_a_missing_registry_folder_is_not_created_by_reading(registry_env):
    registry = open_registry()
    assert registry.models() == []
    with pytest.raises(UnknownRef, match="no model 'churn'"):
        registry.resolve("churn@production")
    assert not registry_env.exists()
    assert os.environ["MLSHIP_REGISTRY"] == registry.uri


def test_build_takes_a_registry_reference(projects, registry_env, tmp_path):
    registry = open_registry()
    registry.push(projects[0])
    unknown = mlship("build", "churn@9")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == f"mlship build: churn has no version 9 in the registry {registry_env}"
    # A known reference is pulled into the cache and handed to the builder as a folder (whatever the builder
    # here can do: the daemon may be absent; that error is the builder's, not "not a project").
    built = mlship("build", "churn@1", "--builder", "docker", "--no-smoke", timeout=300)
    assert "ship.json" not in built.stderr and "churn@1" not in built.stderr, built.stderr
    assert len(list((tmp_path / "cache").glob("*/churn/1/ship.json"))) == 1


def test_diff_reports_pins_and_schema_changes_for_a_reviewer(projects):
    from jupyter_mlship.registry.diff import diff_refs

    first, second = projects
    requirements = (second / "requirements.txt").read_text().splitlines()
    changed = [line.replace("==", "==0.0.1+") if line.startswith("numpy==") else line for line in requirements]
    dropped = changed[-1].split("==")[0]
    (second / "requirements.txt").write_text("\n".join(changed[:-1] + ["tabulate==0.9.0"]) + "\n")
    ship = json.loads((second / "ship.json").read_text())
    ship["input"]["width"], ship["input"]["nullable"] = 3, True
    (second / "ship.json").write_text(json.dumps(ship))

    text = diff_refs(None, str(first), str(second)).to_text()

    assert "+ tabulate==0.9.0 (added)" in text and f"- {dropped.lower()}==" in text
    assert "~ numpy: " in text and "→ 0.0.1+" in text
    assert "~ request width: 2 → 3" in text and "~ request nullable: False → True" in text
    assert diff_refs(None, str(first), str(first)).identical


# --- what a push and a pull refuse --------------------------------------------------------------------


def test_a_push_refuses_a_bad_model_name_and_model_files_changed_since_export(projects, registry_env, tmp_path):
    registry = open_registry()
    ship = projects[0] / "ship.json"
    spec = json.loads(ship.read_text())
    for bad in ("../evil", "Clf"):
        ship.write_text(json.dumps({**spec, "name": bad}))
        with pytest.raises(RegistryError, match="invalid model name"):
            registry.push(projects[0])
    assert not (tmp_path / "evil").exists() and not registry_env.exists()
    ship.write_text(json.dumps(spec))

    model = projects[0] / "model" / "clf.skops"
    original = model.read_bytes()
    model.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))  # one flipped bit after the export
    with pytest.raises(RegistryError, match=r"model/clf.skops is not the file that was exported and verified"):
        registry.push(projects[0])
    model.write_bytes(original)
    assert registry.push(projects[0]).version == "1"


def test_concurrent_pushes_of_the_same_project_give_one_version(exports, tmp_path, monkeypatch):
    import threading

    for attempt in range(4):
        monkeypatch.setenv("MLSHIP_REGISTRY", str(tmp_path / f"registry-{attempt}"))
        copies = [copy_project(exports[0], tmp_path / f"a{attempt}-{i}") for i in range(4)]
        barrier = threading.Barrier(len(copies))
        versions: list = []

        def push(project, barrier=barrier, versions=versions):
            registry = open_registry()  # a client of its own, as another user's
            barrier.wait()
            versions.append(registry.push(project).version)

        threads = [threading.Thread(target=push, args=(p,)) for p in copies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert versions == ["1"] * len(copies), versions
        assert [r.version for r in open_registry().versions("churn")] == ["1"]


def test_a_pull_writes_nothing_outside_its_folder_and_names_what_it_cannot_write(projects, registry_env, tmp_path):
    registry = open_registry()
    registry.push(projects[0])
    record_file = registry_env / "churn/versions/1/version.json"
    record = json.loads(record_file.read_text())
    some = next(iter(record["files"].values()))
    hostile = {**record, "files": {**record["files"], "../../escaped.txt": some}}
    record_file.write_text(json.dumps(hostile))
    with pytest.raises(RegistryError, match=r"lists the file '../../escaped.txt', which is not inside a project"):
        registry.pull("churn@1", tmp_path / "deep" / "pulled")
    assert not list(tmp_path.rglob("escaped.txt")) and not (tmp_path / "deep").exists()
    record_file.write_text(json.dumps(record))

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(RegistryError, match="is a file"):
        registry.pull("churn@1", a_file)
    with pytest.raises(RegistryError, match=r"cannot write .*a-file/x"):
        registry.pull("churn@1", a_file / "x")
    out = registry.pull("churn@1", tmp_path / "pulled")
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_router_over_versions_that_take_different_requests_is_refused(projects, registry_env, tmp_path):
    registry = open_registry()
    registry.push(projects[0])
    ship = projects[1] / "ship.json"
    spec = json.loads(ship.read_text())
    width = spec["input"]["width"]  # an array model: one more feature
    ship.write_text(json.dumps({**spec, "input": {**spec["input"], "width": width + 1}}))
    registry.push(projects[1])
    result = mlship("router", "churn", "--registry", str(registry_env), "--versions", "1,2",
                    "--out", str(tmp_path / "router"))
    assert result.returncode == 1 and not (tmp_path / "router").exists()
    assert f"versions 1 and 2 of churn take different requests (~ request width: {width} → {width + 1})" in result.stderr
