"""Imports kept out of the export's path (imports.py): the same results, without the modules that cost seconds.

Each check runs in a fresh interpreter: what a process has imported is the thing under test."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest


def run_python(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_without_modules_hides_only_inside_the_block_and_leaves_imported_ones_alone():
    found = run_python(
        "import json, sys\n"
        "from jupyter_mlship.imports import without_modules\n"
        "import csv\n"
        "with without_modules('colorsys', 'csv'):\n"
        "    try:\n"
        "        import colorsys\n"
        "        inside = 'imported'\n"
        "    except ImportError:\n"
        "        inside = 'hidden'\n"
        "    import csv as again\n"
        "import colorsys\n"
        "print(json.dumps({'inside': inside, 'after': colorsys.__name__, 'csv': again is csv}))\n"
    )
    assert found == {"inside": "hidden", "after": "colorsys", "csv": True}


TRUSTED_TYPES = ("import json, sys\n"
                 "from skops.io import _trusted_types as t\n"
                 "print(json.dumps({'torch': 'torch' in sys.modules, "
                 "'types': sorted(t.SKLEARN_ESTIMATOR_TYPE_NAMES) + sorted(map(str, t._SKLEARN_INTERNAL_TYPES))}))\n")


def test_skops_imports_without_torch_and_trusts_the_same_types():
    if importlib.util.find_spec("skops") is None:
        pytest.skip("skops is not installed")
    plain = run_python("import skops.io\n" + TRUSTED_TYPES)
    ours = run_python(
        "from jupyter_mlship.capture.artifacts import import_skops_io\nimport_skops_io()\n" + TRUSTED_TYPES
    )
    assert ours["types"] == plain["types"] and len(ours["types"]) > 100
    assert not ours["torch"]
    if importlib.util.find_spec("torch") is not None:
        assert plain["torch"], "skops no longer imports torch by itself: import_skops_io can go"
        adapter = run_python(
            "import json\nfrom jupyter_mlship.capture.artifacts import import_skops_io\nimport_skops_io()\n"
            "import sklearn.externals.array_api_compat.torch as adapter\n"
            "print(json.dumps({'adapter': adapter.__name__}))\n"
        )
        assert adapter == {"adapter": "sklearn.externals.array_api_compat.torch"}  # importable again after


def test_export_reads_and_validates_notebooks_without_the_iri_grammar(tmp_path):
    (tmp_path / "broken.ipynb").write_text(json.dumps({"cells": "not a list", "metadata": {}, "nbformat": 4,
                                                       "nbformat_minor": 5}))
    found = run_python(
        "import json, sys\n"
        "from jupyter_mlship.cli import main\n"
        f"code = main(['export', {str(tmp_path / 'broken.ipynb')!r}])\n"
        "print(json.dumps({'code': code, 'nbformat': 'nbformat' in sys.modules, "
        "'grammar': 'rfc3987_syntax' in sys.modules and sys.modules['rfc3987_syntax'] is not None}))\n"
    )
    assert found == {"code": 1, "nbformat": True, "grammar": False}  # validated (and refused) all the same
