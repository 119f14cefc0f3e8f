"""The ShipSpec: the one hand-off document between capture and render.

Capture knows Python objects and writes a ShipSpec (``ship.json``) plus the artifact files.
Render knows only the ShipSpec. Everything here is plain data (pydantic models), so the
spec can be written, read back and diffed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SPEC_VERSION = 1
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
DEFAULT_MAX_INSTANCES = 1000
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CapturedName(SpecModel):
    """One notebook name that the entry function reaches, transitively."""

    name: str
    kind: Literal["import", "function", "class", "constant", "artifact", "entry"]
    cell: int | None = None  # execution count (In[n]) of the cell that defined it, where known
    size_bytes: int = 0  # source size for code, file size for artifacts
    detail: str = ""  # e.g. "import numpy as np", "sklearn.pipeline.Pipeline"


class ArtifactSpec(SpecModel):
    """A saved model object. The file lives in ``model/`` of the generated project."""

    name: str  # the global name the feature code uses
    file: str  # relative to model/
    format: Literal[
        "skops", "xgboost-json", "lightgbm-txt", "npy", "torch-state-dict", "torchscript", "torch-pickle", "pickle"
    ]
    sha256: str
    size_bytes: int
    type: str  # fully qualified class of the live object
    frameworks: dict[str, str] = Field(default_factory=dict)  # distribution -> version it was saved with
    loader: dict[str, Any] = Field(default_factory=dict)  # format-specific (trusted types, init kwargs...)
    cell: int | None = None
    device: str = "cpu"  # where the object lived in the kernel: "cpu", "cuda:0", ... (torch models)


class Requirement(SpecModel):
    name: str  # distribution name as installed
    version: str  # exact installed version
    because: list[str] = Field(default_factory=list)  # modules or distributions that need it
    # PEP 508 marker where the pin holds on one platform only: the kernel's (e.g. colorama on Windows, kept
    # so verify on the kernel's machine installs it) or the container's (Linux x86-64). None: everywhere.
    marker: str | None = None

    @property
    def line(self) -> str:
        return f"{self.name}=={self.version}" + (f" ; {self.marker}" if self.marker else "")


class Column(SpecModel):
    name: str
    dtype: str  # pandas/numpy dtype string of the sample, e.g. "float64", "int64", "object", "category"
    json_type: Literal["integer", "number", "string", "boolean"]
    nullable: bool = False
    # How a null reaches the entry function: NaN, None, or (records only) the field left out.
    missing: Literal["nan", "none", "absent"] | None = None
    categories: list[Any] | None = None  # for categorical columns: the allowed values
    # records: a nullable field that must still be sent (as null), because the entry function reads it
    # without a default (record["note"]) and the sample always had it; others may be left out
    present: bool = False


class InputSchema(SpecModel):
    """What one instance of a request looks like, and how instances become the sample's type."""

    kind: Literal["dataframe", "ndarray", "strings", "records", "scalars"]
    columns: list[Column] = Field(default_factory=list)  # dataframe, records; ndarray: one per position
    width: int | None = None  # ndarray: number of columns
    dtype: str | None = None  # ndarray / scalars: numpy dtype of the sample
    json_type: Literal["integer", "number", "string", "boolean"] | None = None  # ndarray / scalars
    nullable: bool = False  # ndarray / scalars: NaN allowed (sent as null)


class OutputSchema(SpecModel):
    """What the entry function returned on the sample, one element per instance."""

    kind: Literal["scalar", "vector", "record"]  # per instance: a number/str, a fixed-width list, a dict
    container: str  # type the entry function returned, e.g. "numpy.ndarray", "pandas.Series", "list"
    json_type: Literal["integer", "number", "string", "boolean", "any"] = "any"
    width: int | None = None  # vector
    columns: list[Column] = Field(default_factory=list)  # record
    nullable: bool = False
    # vector of class probabilities: the class of each column (the classifier's classes_), when the export
    # could tell; the monitor reads outcomes named by class against them
    labels: list[Any] | None = None


class Golden(SpecModel):
    instances: list[Any]  # the sample, as JSON instances of a request
    predictions: list[Any]  # the kernel's own outputs on the sample, as JSON
    float_rel_tol: float = 1e-6


class Batching(SpecModel):
    """Whether the service may coalesce concurrent requests into one call of the entry function.

    Set at export by ``capture.batching.prove_rowwise``; edit ship.json (``"enabled": false``) to turn it off.
    """

    enabled: bool = False
    reason: str = ""  # why it is on or off, shown in REVIEW.md and the service's start-up log
    max_batch: int = 1024  # at most this many instances in one call
    max_wait_ms: float = 0.0  # under load only, how long a call may wait for more requests; 0: never waits


class Entry(SpecModel):
    name: str  # the function the service calls with the converted instances
    kind: Literal["function", "method"]
    model_var: str | None = None  # line form: the model variable
    method: str | None = None  # line form: the method called on it
    cell: int | None = None


class SecretFinding(SpecModel):
    file: str  # "app/features.py" or "constant NAME"
    line: int | None = None
    type: str  # detect-secrets plugin name, e.g. "AWS Access Key"
    name: str | None = None  # the captured name it belongs to, where known


class MonitoringSpec(SpecModel):
    """How the service watches its data (issue 10); the reference profile itself is model/reference.json."""

    log_exclude: list[str] = Field(default_factory=list)  # input fields never written to the inference log
    log_hash: list[str] = Field(default_factory=list)  # input fields written as a salted sha256 prefix
    guard: Literal["flag", "reject"] = "flag"  # values outside the training data: count, or refuse (422)
    window: int = Field(default=1000, ge=10)  # recent instances per feature that drift is measured on


class Source(SpecModel):
    notebook: str | None = None
    kernel_python: str  # e.g. "3.11.7"
    captured_at: str  # ISO 8601, UTC
    mlship_version: str


class RegistryInfo(SpecModel):
    """Where this project was pushed (written by the registry just before the files are hashed)."""

    uri: str
    version: str
    parent: str | None = None  # the newest version of the model when this one was pushed
    pushed_at: str  # ISO 8601, UTC


class ShipSpec(SpecModel):
    spec_version: int = SPEC_VERSION
    name: str
    version: str = "1"
    source: Source
    entry: Entry
    python_version: str  # major.minor.micro of the kernel
    features_source: str  # the full text of app/features.py
    local_modules: dict[str, str] = Field(default_factory=dict)  # app/local/<path> -> source: the notebook's own .py modules
    captured: list[CapturedName]
    artifacts: list[ArtifactSpec]
    requirements: list[Requirement]
    test_requirements: list[Requirement]
    input: InputSchema
    output: OutputSchema
    golden: Golden
    max_instances: int = DEFAULT_MAX_INSTANCES
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    batching: Batching = Field(default_factory=Batching)  # off unless proven row-wise at export
    warnings: list[str] = Field(default_factory=list)
    secrets_allowed: list[SecretFinding] = Field(default_factory=list)  # findings the user overrode
    registry: RegistryInfo | None = None  # set when the project is pushed to a model registry
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    # The reference profile (capture/reference.py): render writes it to model/reference.json, and ship.json
    # leaves it out so that it lives in one file; read() puts it back from the project beside ship.json.
    reference: dict[str, Any] | None = None
    # With no GPU where it runs, may a model that lived on one run on the CPU instead? True when every
    # model ran on the CPU, or when the export said --allow-cpu-fallback.
    device_fallback: bool = True

    def write(self, path: Path) -> None:
        path.write_text(self.model_dump_json(indent=2, exclude={"reference"}) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> "ShipSpec":
        try:
            spec = cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
            reference = Path(path).parent / "model" / "reference.json"
            if reference.is_file():
                spec.reference = json.loads(reference.read_text(encoding="utf-8"))
            return spec
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path} is not a readable ship.json: {exc}") from exc

    def to_json_dict(self) -> dict[str, Any]:
        return json.loads(self.model_dump_json())


VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")


def _matching(pattern: re.Pattern, value: str, refusal: str) -> str:
    if not pattern.match(value or ""):
        raise ValueError(refusal)
    return value


def validate_export_version(version: str) -> str:
    """--version: a label that goes into ship.json, the README, image tags and responses."""
    return _matching(VERSION_PATTERN, version, f"invalid --version {version!r}: use 1-64 characters, letters, "
                     "digits, '.', '_', '+' or '-', starting with a letter or digit (e.g. 3 or 2.1.0)")


def validate_name(name: str) -> str:
    """A service NAME becomes a folder, a Python-free URL segment and an image name."""
    return _matching(NAME_PATTERN, name, f"invalid NAME {name!r}: use 1-63 characters, lowercase letters, digits, "
                     "'-' or '_', starting with a letter (it becomes a folder and an image name)")
