"""`%%ship ... --push` and the generated project as a git repository: a re-export is a reviewable commit."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from support.notebooks import ok_cell, run_cell

from jupyter_mlship.registry import open_registry

TRAIN = """
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    X = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 1.0], [3.0, 0.0], [0.5, 2.0], [2.5, 2.0]])
    y = np.array([0, 0, 1, 1, 0, 1])
    clf = LogisticRegression(C={c}).fit(X, y)
"""

SHIP = """
    %%ship churn --sample X[:3] --no-verify --push --registry {registry} --out {out}
    def predict(x):
        return clf.predict_proba(x)[:, 1]
"""


def git(project: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=project, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def no_git_identity(tmp_path, monkeypatch):
    """A user who never configured git: no global or system config, no identity in the environment."""
    empty = tmp_path / "empty.gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(key, raising=False)


def test_ship_push_publishes_each_export_and_commits_it_in_the_projects_repository(ipython, tmp_path, capsys,
                                                                                   no_git_identity):
    registry_dir = tmp_path / "registry"
    ok_cell(ipython, TRAIN.format(c="1.0"))
    ok_cell(ipython, SHIP.format(registry=registry_dir, out="services"))
    first_out = capsys.readouterr().out
    project = Path("services/churn").resolve()

    assert f"pushed to {registry_dir} as churn@1" in first_out and "committed" in first_out
    ship = json.loads((project / "ship.json").read_text())
    assert ship["registry"]["version"] == "1" and ship["registry"]["uri"] == str(registry_dir)
    assert "## Registry" in (project / "REVIEW.md").read_text()
    assert git(project, "log", "--format=%an <%ae>").strip() == "jupyter-mlship <jupyter-mlship@localhost>"
    subject = git(project, "log", "-1", "--format=%s").strip()
    assert subject.startswith("Export churn 1 from ") and "In[" in subject and subject.endswith("verify: not run")
    assert "Pushed to the registry as churn@1." in git(project, "log", "-1", "--format=%b")
    assert git(project, "status", "--porcelain") == ""  # the commit holds the registry stamp too

    # The notebook changes; the same cell exports again: a second version and a second, reviewable commit.
    ok_cell(ipython, TRAIN.format(c="0.1"))
    ok_cell(ipython, SHIP.format(registry=registry_dir, out="services"))
    assert "as churn@2" in capsys.readouterr().out
    assert len(git(project, "log", "--format=%H").split()) == 2
    changed = git(project, "diff", "--name-only", "HEAD~1", "HEAD").split()
    assert {"model/clf.skops", "ship.json", "REVIEW.md"} <= set(changed)
    assert "app/main.py" not in changed  # only what the notebook changed shows up for review
    assert json.loads((project / "ship.json").read_text())["registry"]["parent"] == "1"
    assert sorted(p.name for p in Path("services").iterdir()) == ["churn"]  # no backup folder left behind

    registry = open_registry(str(registry_dir))
    assert [v.version for v in registry.versions("churn")] == ["1", "2"]
    assert registry.resolve("churn@2").notebook == ship["source"]["notebook"]


def test_inside_a_users_repository_the_export_commits_nothing_and_says_so(ipython, tmp_path, capsys):
    subprocess.run(["git", "init", "-q", str(tmp_path / "work")], check=True)
    ok_cell(ipython, TRAIN.format(c="1.0"))
    ok_cell(ipython, "%ship churn --model clf --sample X[:3] --no-verify --out work/services")
    out = capsys.readouterr().out
    project = (tmp_path / "work/services/churn").resolve()
    assert f"not committed: {project} is inside the git repository {(tmp_path / 'work').resolve()}" in out
    assert not (project / ".git").exists()
    assert git(tmp_path / "work", "status", "--porcelain").strip().startswith("??")  # left for the user to commit


def test_a_failed_push_names_the_cause_and_keeps_the_export(ipython, tmp_path, capsys):
    ok_cell(ipython, TRAIN.format(c="1.0"))
    Path("not-a-folder").write_text("a file where the registry folder should be")
    result = run_cell(ipython, SHIP.format(registry=tmp_path / "not-a-folder", out="services"))
    assert not result.success
    message = str(result.error_in_exec)
    assert message == (f"exported to {Path('services/churn').resolve()}, but the push failed: "
                       f"the registry {tmp_path / 'not-a-folder'} is a file, not a folder: choose another --registry")
    assert (Path("services/churn") / "ship.json").is_file()
