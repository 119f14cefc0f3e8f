"""The Jupyter server side of the lab panel: thin HTTP handlers over history and build.

The server extension is enabled as ``jupyter_mlship.server`` (jupyter-config/), so it loads even
before anything is re-exported from the top-level package.
"""

from __future__ import annotations

from typing import Any


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    # Used by `jupyter labextension develop .`; an installed wheel ships the extension as shared-data.
    # `src` is relative to the package that re-exports this function: jupyter_mlship/.
    return [{"src": "labextension", "dest": "jupyter-mlship"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    from .extension import MlshipExtension

    return [{"module": "jupyter_mlship.server", "app": MlshipExtension}]
