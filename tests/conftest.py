"""Shared fixtures: a real IPython shell with the extension loaded, notebooks on disk, a live service."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.notebooks import Service

# Verify environments are reused across tests and runs by their requirements' hash.
os.environ.setdefault("MLSHIP_ENV_CACHE", str(Path.home() / ".cache" / "jupyter-mlship" / "envs"))


@pytest.fixture(autouse=True)
def _isolated_history(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("MLSHIP_HISTORY", str(tmp_path_factory.mktemp("history") / "history.jsonl"))


@pytest.fixture
def ipython(tmp_path, monkeypatch):
    """A real IPython shell, fresh namespace, cwd in a temp folder, with `%load_ext jupyter_mlship`."""
    from IPython.core.interactiveshell import InteractiveShell

    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.reset(new_session=True)
    shell.run_cell("%load_ext jupyter_mlship", store_history=True)
    yield shell
    shell.reset(new_session=True)


@pytest.fixture
def serve():
    started: list[Service] = []

    def start(project: Path, env: dict[str, str] | None = None) -> Service:
        service = Service(project, env)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()
