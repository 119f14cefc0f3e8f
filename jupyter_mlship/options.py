"""What a front end asks the pipeline for: one export's options, parsed from a magic line or the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


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
