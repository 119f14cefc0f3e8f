"""Rehearse the service in the kernel: run the text of app/features.py as the service will import it.

Artifacts named in ``saved`` come back from their files through the service's own loader, so a format
is only chosen once the reloaded object reproduces the kernel's outputs.
"""

from __future__ import annotations

import contextlib
import sys
import types
from pathlib import Path
from typing import Any, Iterator

from ..spec import ArtifactSpec
from .artifacts import load_saved


@contextlib.contextmanager
def service_modules() -> Iterator[tuple[types.ModuleType, types.ModuleType]]:
    """Stand-ins for the service's `app` package while app/features.py's text runs in the kernel."""
    names = ("app", "app.loaders", "app.features")
    saved = {name: sys.modules.get(name) for name in names}
    package = types.ModuleType("app")
    package.__path__ = []  # type: ignore[attr-defined]
    loaders = types.ModuleType("app.loaders")
    features = types.ModuleType("app.features")
    sys.modules.update({"app": package, "app.loaders": loaders, "app.features": features})
    saved_path = list(sys.path)
    try:
        yield loaders, features
    finally:
        sys.path[:] = saved_path  # features.py may add app/local; the kernel's path stays as it was
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def rehearse(source: str, live: dict[str, Any], saved: dict[str, ArtifactSpec], staging: Path) -> dict[str, Any]:
    """Execute the text of app/features.py as the service will; artifacts in ``saved`` come from files."""
    with service_modules() as (loaders, features):
        namespace = features.__dict__

        def load_artifact(name: str) -> Any:
            if name in saved:
                return load_saved(saved[name], staging, namespace)
            return live[name]

        loaders.load_artifact = load_artifact  # type: ignore[attr-defined]
        namespace["__file__"] = str(staging / "app" / "features.py")
        # dont_inherit: this module's `from __future__ import annotations` must not apply to the service's
        # file, whose annotations are evaluated when each def runs (a missing import shows here, not later).
        exec(compile(source, "app/features.py", "exec", dont_inherit=True), namespace)
    return namespace
