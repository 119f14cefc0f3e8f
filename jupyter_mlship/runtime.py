"""Access to the generated service's own runtime modules from inside the kernel.

A few modules of the generated project (``app/convert.py``, ``app/loaders.py``) are plain Python
that must behave the same in the kernel (when capture rehearses the service) and in the service.
They live once, in the cookiecutter template, and are imported from there, so there is one
implementation and the generated project never imports jupyter_mlship.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

TEMPLATE_PROJECT = "{{cookiecutter.name}}"


def templates_root() -> Path:
    """The folder of cookiecutter templates: inside the wheel, or at the repository root in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "templates", here.parent / "templates"):
        if (candidate / "service" / "cookiecutter.json").is_file():
            return candidate
    raise FileNotFoundError("jupyter_mlship's cookiecutter templates are missing from this installation")


def template_dir(kind: str = "service") -> Path:
    """One cookiecutter template: ``service`` (a model's service) or ``router`` (traffic between versions)."""
    return templates_root() / kind


@cache
def runtime_module(name: str, kind: str = "service") -> ModuleType:
    """Import ``app/<name>.py`` of a template (the service's by default) as ``jupyter_mlship._runtime_...``."""
    path = template_dir(kind) / TEMPLATE_PROJECT / "app" / f"{name}.py"
    module_name = f"jupyter_mlship._runtime_{name}" if kind == "service" else f"jupyter_mlship._{kind}_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec and spec.loader, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module
