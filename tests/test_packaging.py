"""`pip install .` alone installs and enables the lab extension and the server extension."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import jupyter_mlship

REPO = Path(__file__).resolve().parent.parent
EDITABLE = Path(jupyter_mlship.__file__).resolve().is_relative_to(REPO)

pytestmark = pytest.mark.skipif(
    EDITABLE, reason="editable install: the lab extension and server config are shared-data, installed from a wheel only"
)


def jupyter(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "jupyter", *args], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def test_lab_extension_is_installed_enabled_and_ok():
    lines = [line for line in jupyter("labextension", "list").splitlines() if "jupyter-mlship" in line]
    assert lines and "enabled" in lines[0] and "OK" in lines[0], lines


def test_server_extension_is_enabled():
    lines = [line for line in jupyter("server", "extension", "list").splitlines() if "jupyter_mlship" in line]
    assert any("enabled" in line for line in lines), lines


def test_the_template_ships_inside_the_package():
    from jupyter_mlship.runtime import template_dir

    assert template_dir().parent.parent == Path(jupyter_mlship.__file__).resolve().parent
