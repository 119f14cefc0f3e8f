"""Build stage: the container image of a generated project, proved with the golden request, pushed.

One job per module:

- ``builders``: which builder (docker, podman, buildah) and the flags this host needs to run images.
- ``pip``: the machine's pip settings carried into the build.
- ``image``: ``build_image`` and ``push_image``, labels, the builder's command line.
- ``smoke``: start the image once and check the golden predictions.
- ``cli``: ``mlship build``.

The CUDA policy (which base image a GPU model needs) is ``jupyter_mlship.cuda``: the review reads it
before anything is built. Names are re-exported lazily, so importing one does not load the builder.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "builders": ("BUILDERS", "Builder", "BuildError", "detect_builder", "image_size", "run_flags", "runner_for"),
    "pip": ("PipPassThrough", "pip_pass_through"),
    "image": ("BuildResult", "build_command", "build_image", "default_tag", "dockerfile_base_image", "git_revision",
              "image_labels", "parse_build_args", "push_image", "read_project"),
    "smoke": ("smoke_test",),
    "cuda": ("cuda_version", "gpu_base_image", "cpu_only_reason"),
    "cli": ("add_build_parser", "build_main"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}" if module != "cuda" else "jupyter_mlship.cuda"), name)
    globals()[name] = value  # later lookups (and monkeypatch.setattr) see a plain attribute
    return value
