"""Every module the package imports is declared in pyproject.toml; the kernel gets no test-only tools."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parent.parent
# Imported only inside a guard, each with its reason: not runtime dependencies.
OPTIONAL = {
    "torch": "the user's own framework, imported only to save or load a torch model",
    "filelock": "verify locks with fcntl where it is not installed",
}


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def declared(names: list[str]) -> set[str]:
    return {Requirement(text).name.lower().replace("_", "-") for text in names}


def imported_top_level_modules() -> dict[str, set[str]]:
    """Third-party top-level module -> files of jupyter_mlship that import it (lazily or not)."""
    found: dict[str, set[str]] = {}
    for path in (REPO / "jupyter_mlship").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top != "jupyter_mlship":
                    found.setdefault(top, set()).add(str(path.relative_to(REPO)))
    return found


def test_every_imported_module_is_a_declared_dependency():
    runtime = declared(project()["dependencies"])
    index = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in imported_top_level_modules().items():
        if module in OPTIONAL:
            continue
        distributions = {name.lower().replace("_", "-") for name in index.get(module, [module])}
        if not distributions & runtime:
            missing[module] = sorted(files)
    assert not missing, f"imported but not declared in [project].dependencies: {missing}"


def test_test_tools_are_an_extra_not_a_runtime_dependency():
    runtime = declared(project()["dependencies"])
    assert not {"pytest", "httpx"} & runtime
    assert {"pytest", "httpx"} <= declared(project()["optional-dependencies"]["test"])
    # The package itself never imports them: the generated project's tests do, in verify's clean venv.
    assert not {"pytest", "httpx"} & set(imported_top_level_modules())
