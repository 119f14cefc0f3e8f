"""Pin what the kernel ran: the distributions behind the modules the service imports, at their exact
installed versions, and the user's pip index settings needed to install them again elsewhere."""

from __future__ import annotations

import ast
import functools
import importlib.metadata as metadata
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from packaging.markers import Marker
from packaging.requirements import InvalidRequirement
from packaging.requirements import Requirement as PackagingRequirement
from packaging.specifiers import SpecifierSet

from ..spec import InputSchema, Requirement

# Notebook front-end and plotting distributions: libraries often declare them, a service never needs them.
# They are pinned only when a module passed in maps to them directly.
NOTEBOOK_ONLY = re.compile(r"^(ipython|ipykernel|ipywidgets|jupyter.*|notebook|matplotlib|matplotlib-inline|"
                           r"widgetsnbextension)$")
# The generated tests' own tools: (version known to run them, versions accepted from the kernel). They are
# not dependencies of jupyter-mlship (a kernel needs neither), so this table is the source of truth where
# the kernel lacks them; where the kernel has an accepted version, its closure is pinned as installed.
TEST_TOOLS: dict[str, tuple[str, str]] = {"pytest": ("8.4.2", ">=8,<10"), "httpx": ("0.28.1", ">=0.27,<1")}
# What every generated service imports (app/main.py), whatever the notebook did.
# The web stack (uvloop, httptools and orjson make it fast; simdjson reads an array model's numbers
# straight into a float buffer), and the inference log (its Parquet pages compressed by zstandard; fsspec
# for object storage).
SERVICE_RUNTIME_MODULES = ("fastapi", "pydantic", "uvicorn", "uvloop", "httptools", "orjson", "simdjson",
                           "prometheus_client", "zstandard", "fsspec")
# Artifact format -> the module its loader imports in the service (app/loaders.py).
ARTIFACT_FORMAT_MODULES = {"skops": "skops", "xgboost-json": "xgboost", "lightgbm-txt": "lightgbm",
                           "torch-state-dict": "torch", "torchscript": "torch", "torch-pickle": "torch",
                           "npy": "numpy"}


def python_version() -> str:
    """The kernel's interpreter version, e.g. "3.11.7" (the service image and venvs must match it)."""
    return platform.python_version()


def normalize(name: str) -> str:
    """PEP 503 name, so "Scikit_Learn" and "scikit-learn" compare equal."""
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def _module_index() -> dict[str, list[str]]:
    """Top-level module -> distributions providing it (expensive: reads every RECORD once)."""
    return metadata.packages_distributions()


@functools.lru_cache(maxsize=None)
def _distribution(normalized: str) -> metadata.Distribution | None:
    """The installed distribution of that name that imports would find first, or None."""
    try:
        return metadata.distribution(normalized)
    except metadata.PackageNotFoundError:
        return None


def distributions_for_modules(modules: Iterable[str]) -> dict[str, list[str]]:
    """Distribution name -> the imported top-level modules it provides; stdlib and local modules are skipped."""
    index = _module_index()
    found: dict[str, list[str]] = {}
    for module in sorted(set(modules)):
        top = module.split(".")[0]
        if not top or top in sys.stdlib_module_names:
            continue
        for dist_name in index.get(top, ()):
            dist = _distribution(normalize(dist_name))
            if dist is None:
                continue
            reasons = found.setdefault(dist.metadata["Name"], [])
            if top not in reasons:
                reasons.append(top)
    return found


def _requirements_of(dist: metadata.Distribution, extras: frozenset[str],
                     environment: Mapping[str, str] | None = None) -> list[PackagingRequirement]:
    """Requirements that apply to this interpreter (or to the marker ``environment`` given), including those
    of extras a parent asked for."""
    wanted = {""} | set(extras)
    result = []
    for text in dist.requires or ():
        try:
            requirement = PackagingRequirement(text)
        except InvalidRequirement:
            continue
        marker: Marker | None = requirement.marker
        if marker is not None and not any(marker.evaluate({**(environment or {}), "extra": extra})
                                          for extra in wanted):
            continue
        result.append(requirement)
    return result


def _closure(roots: dict[str, list[str]], environment: Mapping[str, str] | None = None) -> list[Requirement]:
    """Roots (distribution -> reasons) plus their installed transitive requirements, pinned exactly."""
    pinned: dict[str, tuple[metadata.Distribution, list[str]]] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    queue: list[tuple[str, frozenset[str]]] = []

    def add(name: str, reason: str, extras: frozenset[str], root: bool) -> None:
        key = normalize(name)
        if not root and NOTEBOOK_ONLY.match(key):
            return
        dist = _distribution(key)
        if dist is None:
            return
        _, reasons = pinned.setdefault(key, (dist, []))
        if reason and reason not in reasons:
            reasons.append(reason)
        if (key, extras) not in seen:
            seen.add((key, extras))
            queue.append((key, extras))

    for name, reasons in roots.items():
        for reason in reasons or [""]:
            add(name, reason, frozenset(), root=True)
    while queue:
        key, extras = queue.pop()
        dist = pinned[key][0]
        for requirement in _requirements_of(dist, extras, environment):
            add(requirement.name, dist.metadata["Name"], frozenset(requirement.extras), root=False)
    return sorted(
        (Requirement(name=dist.metadata["Name"], version=dist.version, because=sorted(reasons))
         for dist, reasons in pinned.values()),
        key=lambda r: normalize(r.name),
    )


def capture_requirements(modules: Iterable[str], distributions: Iterable[str] = (),
                         environment: Mapping[str, str] | None = None) -> list[Requirement]:
    """The pinned, closed set of distributions a service importing ``modules`` needs, at the kernel's versions.

    Dependency markers are evaluated for the kernel's platform, or for the marker ``environment`` given
    (e.g. ``{"sys_platform": "win32", ...}``); capture/target.py resolves them again for the container."""
    return _closure(root_distributions(modules, distributions), environment)


def root_distributions(modules: Iterable[str], distributions: Iterable[str] = ()) -> dict[str, list[str]]:
    """The distributions the service asks for directly (installed name -> why), before their dependencies."""
    roots = distributions_for_modules(modules)
    for name in distributions:
        dist = _distribution(normalize(name))
        if dist is not None:
            roots.setdefault(dist.metadata["Name"], []).append("requested")
    return roots


def service_modules(code_modules: Iterable[str], artifact_formats: Iterable[str], input_schema: InputSchema,
                    result_module: str) -> list[str]:
    """Top-level modules the generated service imports: its web stack, the captured code's imports, the
    artifacts' loaders, and numpy/pandas only where the sample's conversion or the outputs need them
    (app/convert.py imports them lazily: a service for a pure-Python model has neither)."""
    modules = set(SERVICE_RUNTIME_MODULES) | {m.split(".")[0] for m in code_modules}
    modules |= {ARTIFACT_FORMAT_MODULES[f] for f in artifact_formats if f in ARTIFACT_FORMAT_MODULES}
    result_top = result_module.split(".")[0]
    if input_schema.kind == "dataframe" or result_top == "pandas":
        modules |= {"pandas", "numpy"}
    if input_schema.kind == "ndarray" or input_schema.dtype or result_top in {"numpy", "torch"}:
        modules.add("numpy")  # arrays in or out; torch tensors become JSON through .numpy()
    return sorted(modules)


def test_requirements() -> list[Requirement]:
    """What the generated project's tests need on top of requirements.txt.

    Each tool of TEST_TOOLS at the kernel's version with its installed dependencies where the kernel has an
    accepted version; else the table's version, its dependencies left to the installer."""
    installed: dict[str, list[str]] = {}
    fallback: list[Requirement] = []
    for name, (known, accepted) in TEST_TOOLS.items():
        dist = _distribution(normalize(name))
        if dist is not None and SpecifierSet(accepted).contains(dist.version, prereleases=True):
            installed[dist.metadata["Name"]] = ["tests"]
        else:
            fallback.append(Requirement(name=name, version=known, because=["tests"]))
    pinned = _closure(installed)
    taken = {normalize(r.name) for r in pinned}
    return sorted(pinned + [r for r in fallback if normalize(r.name) not in taken], key=lambda r: normalize(r.name))


test_requirements.__test__ = False  # type: ignore[attr-defined]  # not a pytest test despite its name


def find_uv() -> str | None:
    """uv from its Python package (a dependency of jupyter-mlship), else from PATH; None where neither exists."""
    try:
        import uv

        return uv.find_uv_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("uv")


@dataclass
class PipIndexSettings:
    """Where the user's pip finds packages; uv does not read pip's configuration, so verify carries it over."""

    index_url: str | None = None
    extra_index_urls: list[str] = field(default_factory=list)
    find_links: list[str] = field(default_factory=list)
    trusted_hosts: list[str] = field(default_factory=list)
    cert: str | None = None
    no_index: bool = False

    def uv_args(self) -> list[str]:
        """The same settings as `uv pip install` flags."""
        args: list[str] = []
        if self.no_index:
            args.append("--no-index")
        if self.index_url:
            args += ["--index-url", self.index_url]
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        for location in self.find_links:
            args += ["--find-links", location]
        for host in self.trusted_hosts:
            args += ["--allow-insecure-host", host]
        return args

    def uv_env(self) -> dict[str, str]:
        """Environment for uv: pip's CA bundle, and pip's any-index-best-version resolution."""
        env = {"UV_INDEX_STRATEGY": "unsafe-best-match"}  # pip picks the best version across all indexes
        if self.cert:
            env["SSL_CERT_FILE"] = self.cert
        return env


_PIP_KEYS = {"index-url", "extra-index-url", "find-links", "trusted-host", "cert", "no-index"}
# pip's precedence: [global] < [install] < PIP_* environment variables (":env:").
_SECTION_ORDER = {"global": 0, "install": 1, ":env:": 2}


@functools.lru_cache(maxsize=4)
def _pip_config_files(config_file: str | None) -> tuple[tuple[str, str], ...]:
    """pip's config files only (cached: a pip start is 0.4 s); PIP_* variables are read live by the caller."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("PIP_")}
    if config_file is not None:
        env["PIP_CONFIG_FILE"] = config_file
    try:
        completed = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60, env=env,
        )
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(_parse_config_list(completed.stdout)) if completed.returncode == 0 else ()


def _parse_config_list(text: str) -> list[tuple[str, str]]:
    """`section.key='value'` lines of `pip config list`, ordered from weakest to strongest."""
    entries = []
    for line in text.splitlines():
        match = re.match(r"^(.+?)\.([A-Za-z0-9_-]+)=(.*)$", line.strip())
        if not match or match.group(1) not in _SECTION_ORDER:
            continue
        value = match.group(3)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            try:  # pip prints repr(value): a multi-line value (one URL a line) arrives as '...\\n...'
                value = str(ast.literal_eval(value))
            except (ValueError, SyntaxError):
                value = value[1:-1]
        entries.append((_SECTION_ORDER[match.group(1)], match.group(2).lower(), value))
    entries.sort(key=lambda e: e[0])
    return [(key, value) for _, key, value in entries]


def pip_index_settings() -> PipIndexSettings:
    """Read index settings the way pip does (config files, then PIP_* variables), for installers that don't."""
    values: dict[str, str] = {}
    for key, value in _pip_config_files(os.environ.get("PIP_CONFIG_FILE")):
        if key in _PIP_KEYS:
            values[key] = value
    for key in _PIP_KEYS:  # PIP_* variables win, as in pip
        env_value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env_value is not None:
            values[key] = env_value

    def many(key: str) -> list[str]:
        return shlex.split(values.get(key, ""))

    return PipIndexSettings(
        index_url=values.get("index-url") or None,
        extra_index_urls=many("extra-index-url"),
        find_links=many("find-links"),
        trusted_hosts=many("trusted-host"),
        cert=values.get("cert") or None,
        no_index=values.get("no-index", "").lower() in {"1", "true", "yes", "on"},
    )
