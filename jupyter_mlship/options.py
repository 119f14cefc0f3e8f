"""What a front end asks the pipeline for: one export's options, parsed from a magic line or the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Set by `mlship export` in the kernel it starts; read by the magic there.
OUT_OVERRIDE_ENV = "MLSHIP_OUT_OVERRIDE"  # every ship cell writes to this folder (`--out DIR`)
PROGRESS_ENV = "MLSHIP_PROGRESS"  # "stderr": also print each step on the kernel process's stderr


@dataclass
class ShipOptions:
    name: str
    sample_expr: str
    out: Path
    version: str = "1"
    entry: str | None = None  # cell form: the entry function's name
    model_var: str | None = None  # line form
    method: str = "predict"
    reference_expr: str | None = None
    dry_run: bool = False
    verify: bool = True
    build: bool = False
    allow_secrets: bool = False
    notebook: str | None = None
    push: bool = False  # publish the verified export to the model registry
    registry: str | None = None  # registry URI; None: $MLSHIP_REGISTRY, else the default folder
    log_exclude: str | None = None  # monitoring: columns left out of (or hashed in) the inference log, "a,b:hash"
    guard: str | None = None  # monitoring: "flag" (count) or "reject" (422) out-of-training values
    allow_cpu_fallback: bool = False  # a model that ran on a GPU may run on the CPU where none is visible
