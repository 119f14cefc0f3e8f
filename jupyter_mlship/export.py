"""The export pipeline: capture → ShipSpec → render → verify → (build).

``capture_spec`` is the only stage that touches live Python objects; it ends with a ShipSpec and
the artifact files in a staging directory. ``export`` renders that into a temporary directory
beside the destination, verifies it there, and moves it into place only when everything passed.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as _dt
import shutil
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from . import __version__
from .capture.artifacts import SAFE_FORMATS, artifact_strings, format_candidates, load_saved, save_artifact
from .capture.code import CellHistory, CodeCapture, CodeWalker, Definition, local_module_files
from .errors import ShipError
from .runtime import runtime_module
from .spec import (
    ArtifactSpec,
    CapturedName,
    Entry,
    SecretFinding,
    ShipSpec,
    Source,
    validate_name,
)

SERVICE_MODULES = ("fastapi", "pydantic", "uvicorn", "prometheus_client", "numpy")
FORMAT_MODULES = {"skops": "skops", "xgboost-json": "xgboost", "lightgbm-txt": "lightgbm",
                  "torch-state-dict": "torch", "torch-pickle": "torch", "npy": "numpy"}
LARGE_ARTIFACT_BYTES = 100 * 1024 * 1024


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


class Reporter(Protocol):
    def step(self, step: str, status: str, seconds: float | None = None, detail: str = "") -> None: ...
    def log(self, line: str) -> None: ...
    def review(self, spec: ShipSpec, markdown: str) -> None: ...


@dataclass
class Captured:
    spec: ShipSpec
    staging: Path  # holds the artifact files named in spec.artifacts
    findings: list[SecretFinding] = field(default_factory=list)

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


@dataclass
class ShipOutcome:
    ok: bool
    name: str
    version: str
    project: Path | None = None
    verified: bool = False
    tests_passed: int | None = None
    tests_failed: int | None = None
    test_output: str = ""
    message: str = ""
    review_markdown: str = ""
    image: str | None = None
    pushed: str | None = None  # "NAME@VERSION" in the registry, when pushed
    git_commit: str | None = None  # the export's commit in the project's own repository


# --- capture -----------------------------------------------------------------------------


def evaluate(expr: str, user_ns: dict[str, Any], flag: str) -> Any:
    try:
        return eval(expr, user_ns)  # the user's own expression, in the user's own namespace
    except Exception as exc:
        raise ShipError(f"{flag} `{expr}` could not be evaluated: {type(exc).__name__}: {exc}") from exc


def _call(entry: Callable[[Any], Any], sample: Any) -> Any:
    # Entry functions may change their argument in place; the sample must stay as the user made it.
    return entry(copy.deepcopy(sample))


def _entry_for(options: ShipOptions, user_ns: dict[str, Any],
               walker: CodeWalker) -> tuple[str, Callable[[Any], Any], CodeCapture, Entry]:
    if options.model_var:
        var, method = options.model_var, options.method
        if var not in user_ns:
            raise ShipError(f"--model `{var}` is not defined in the notebook")
        if not callable(getattr(user_ns[var], method, None)):
            raise ShipError(f"--model `{var}` ({type(user_ns[var]).__name__}) has no method `{method}`")
        entry_name = method if method.isidentifier() and method != var else f"{method}_entry"
        captured = walker.capture(entry_name, None, start_names=[var])
        cell = captured.cells.get(var)
        source = (
            f"def {entry_name}(instances):\n"
            f'    """Entry point: `{var}.{method}` on the converted instances."""\n'
            f"    return {var}.{method}(instances)\n"
        )
        captured.definitions[entry_name] = Definition(entry_name, "function", source, cell, (10**9, 0))
        entry = getattr(user_ns[var], method)
        return entry_name, entry, captured, Entry(name=entry_name, kind="method", model_var=var, method=method, cell=cell)
    name = options.entry
    if not name or name not in user_ns or not callable(user_ns[name]):
        raise ShipError(f"the entry function `{name}` is not defined in the notebook")
    captured = walker.capture(name, user_ns[name])
    return name, user_ns[name], captured, Entry(name=name, kind="function", cell=captured.cells.get(name))


def capture_spec(options: ShipOptions, user_ns: dict[str, Any], history: CellHistory) -> Captured:
    """Live notebook state → ShipSpec + artifact files. Raises ShipError with one sentence."""
    from .capture.environment import capture_requirements, python_version, test_requirements
    from .capture.schema import infer_input_schema, infer_output_schema, make_golden
    from .capture.secrets import scan_for_secrets

    try:
        validate_name(options.name)
    except ValueError as exc:
        raise ShipError(str(exc)) from exc
    convert = runtime_module("convert")
    walker = CodeWalker(user_ns, history)
    sample = evaluate(options.sample_expr, user_ns, "--sample")
    reference = evaluate(options.reference_expr, user_ns, "--reference") if options.reference_expr else None
    entry_name, entry, captured, entry_spec = _entry_for(options, user_ns, walker)
    where = f"`{entry_name}`" if not options.model_var else f"`{options.model_var}.{options.method}`"

    try:
        result = _call(entry, sample)
    except Exception as exc:
        raise ShipError(f"the entry function {where} raised {type(exc).__name__} on the sample: {exc}") from exc
    warnings: list[str] = []

    def accepts_missing(variant: Any) -> bool:
        try:
            _call(entry, variant)
            return True
        except Exception:
            return False

    try:
        input_schema = infer_input_schema(sample, reference, accepts_missing)
        output_schema = infer_output_schema(result, _rows(sample))
        golden = make_golden(sample, result, input_schema, output_schema)
    except ValueError as exc:
        raise ShipError(str(exc)) from exc
    try:
        again = convert.outputs_to_json(_call(entry, sample), output_schema.model_dump(), len(golden.instances))
        if convert.compare_predictions(golden.predictions, again, golden.float_rel_tol):
            warnings.append(f"the entry function {where} gives different outputs when run twice on the sample")
    except Exception as exc:
        warnings.append(f"the entry function {where} failed when run a second time: {exc}")
    for name in captured.unresolved:
        warnings.append(f"`{name}` is used by the captured code but not defined in the notebook")

    staging = Path(tempfile.mkdtemp(prefix="mlship-capture-"))
    try:
        def features_text() -> str:
            return captured.features_source(_docstring(options, entry_name), _load_line)

        converted = convert.instances_to_sample(golden.instances, input_schema.model_dump())

        def check(objects: dict[str, Any], loaded: dict[str, ArtifactSpec]) -> list[str]:
            """Run app/features.py's text with these objects; mismatches against the golden outputs."""
            namespace = rehearse(features_text(), objects, loaded, staging)
            outputs = convert.outputs_to_json(namespace[entry_name](copy.deepcopy(converted)),
                                              output_schema.model_dump(), len(golden.instances))
            return convert.compare_predictions(golden.predictions, outputs, golden.float_rel_tol)

        live = dict(captured.artifacts)
        try:
            mismatches = check(live, {})
        except Exception as exc:
            raise ShipError(
                f"the captured code of {where} fails outside the notebook: {type(exc).__name__}: {exc}"
            ) from exc
        if mismatches:
            raise ShipError(
                f"requests converted back to the sample's type give other outputs than the sample: {mismatches[0]}"
            )

        artifacts = [
            _save_best(name, value, captured, staging, check, live, warnings)
            for name, value in captured.artifacts.items()
        ]
        features_source = features_text()
        local_modules = {
            path: text
            for module, folder in sorted(captured.local_modules.items())
            for path, text in local_module_files(module, folder).items()
        }
        findings = scan_for_secrets(_secret_scan_files(features_source, local_modules))
        findings += _artifact_secrets(captured.artifacts)
        for finding in findings:
            if finding.file == "app/features.py":
                finding.name = finding.name or _name_at_line(features_source, finding.line)
        if findings and not options.allow_secrets:
            first = findings[0]
            if first.file.startswith("artifact "):
                raise ShipError(
                    f"possible secret ({first.type}) inside the object `{first.name}`: remove it from the "
                    "model's attributes, or pass --allow-secrets after checking it"
                )
            raise ShipError(
                f"possible secret ({first.type}) in the exported code"
                + (f", in `{first.name}`" if first.name else "")
                + f" at {first.file} line {first.line}: remove it from the code the entry function uses "
                "(read it from an environment variable), or pass --allow-secrets after checking it"
            )
        modules = set(captured.modules) | set(SERVICE_MODULES)
        modules |= {FORMAT_MODULES[a.format] for a in artifacts if a.format in FORMAT_MODULES}
        if input_schema.kind == "dataframe" or type(result).__module__.startswith("pandas"):
            modules.add("pandas")
        requirements = capture_requirements(sorted(modules))
        for artifact in artifacts:
            if artifact.size_bytes > LARGE_ARTIFACT_BYTES:
                warnings.append(f"artifact `{artifact.name}` is large ({artifact.size_bytes // 2**20} MiB)")
            if artifact.format in {"pickle", "torch-pickle"}:
                warnings.append(
                    f"artifact `{artifact.name}` is saved with pickle (fallback): it loads only with the pinned "
                    "Python and library versions, and only after its sha256 is checked"
                )
        spec = ShipSpec(
            name=options.name,
            version=options.version,
            source=Source(
                notebook=options.notebook,
                kernel_python=python_version(),
                captured_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                mlship_version=__version__,
            ),
            entry=entry_spec,
            python_version=python_version(),
            features_source=features_source,
            local_modules=local_modules,
            captured=_captured_names(captured, artifacts),
            artifacts=artifacts,
            requirements=requirements,
            test_requirements=test_requirements(),
            input=input_schema,
            output=output_schema,
            golden=golden,
            warnings=warnings,
            secrets_allowed=findings,
        )
        return Captured(spec=spec, staging=staging, findings=findings)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _rows(sample: Any) -> int:
    shape = getattr(sample, "shape", None)
    return int(shape[0]) if shape else len(sample)


def _docstring(options: ShipOptions, entry_name: str) -> str:
    origin = f" of {options.notebook}" if options.notebook else ""
    return (
        f"Notebook code{origin} that `{entry_name}` reaches, captured by jupyter-mlship.\n\n"
        "Generated: change the notebook and export again rather than editing this file.\n"
    )


def _load_line(name: str) -> str:
    return f'{name} = load_artifact("{name}")'


def _save_best(name: str, value: Any, captured: CodeCapture, staging: Path,
               check: Callable[[dict[str, Any], dict[str, ArtifactSpec]], list[str]],
               live: dict[str, Any], warnings: list[str]) -> ArtifactSpec:
    """Save with the safest format whose reloaded object reproduces the kernel's outputs."""
    from .capture.environment import distributions_for_modules

    cell = captured.cells.get(name)
    modules = captured.artifact_modules[name] | {type(value).__module__.split(".")[0]}
    frameworks = _versions(distributions_for_modules(sorted(modules)))
    reasons = []
    for fmt in format_candidates(value, refers_to_notebook=bool(captured.notebook_refs[name])):
        try:
            artifact = save_artifact(name, value, fmt, staging, frameworks, cell)
            mismatches = check(live, {name: artifact})
        except Exception as exc:
            reasons.append(f"{fmt}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        if mismatches:
            reasons.append(f"{fmt}: reloaded object predicts differently ({mismatches[0]})")
            continue
        if reasons and fmt not in SAFE_FORMATS:
            warnings.append(f"artifact `{name}`: safer formats did not round-trip ({'; '.join(reasons)})")
        return artifact
    raise ShipError(f"`{name}`{f' (In[{cell}])' if cell else ''} cannot be saved faithfully: {'; '.join(reasons)}")


def _versions(distributions: dict[str, list[str]]) -> dict[str, str]:
    import importlib.metadata

    return {dist: importlib.metadata.version(dist) for dist in sorted(distributions)}


@contextlib.contextmanager
def _service_modules() -> Iterator[tuple[types.ModuleType, types.ModuleType]]:
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
    with _service_modules() as (loaders, features):
        namespace = features.__dict__

        def load_artifact(name: str) -> Any:
            if name in saved:
                return load_saved(saved[name], staging, namespace)
            return live[name]

        loaders.load_artifact = load_artifact  # type: ignore[attr-defined]
        namespace["__file__"] = str(staging / "app" / "features.py")
        exec(compile(source, "app/features.py", "exec"), namespace)
    return namespace


def _artifact_secrets(artifacts: dict[str, Any]) -> list[SecretFinding]:
    """Credentials held inside model objects; only named detectors count there (a vocabulary is not a key)."""
    from .capture.secrets import GENERIC_SECRET_TYPES, scan_for_secrets

    texts = {f"artifact {name}.txt": "\n".join(artifact_strings(value)) for name, value in artifacts.items()}
    findings = scan_for_secrets({label: text for label, text in texts.items() if text})
    for finding in findings:
        finding.name = finding.file.removeprefix("artifact ").removesuffix(".txt")
    return [f for f in findings if f.type not in GENERIC_SECRET_TYPES]


def _secret_scan_files(features_source: str, local_modules: dict[str, str]) -> dict[str, str]:
    return {"app/features.py": features_source, **{f"app/local/{p}": t for p, t in local_modules.items()}}


def _name_at_line(source: str, line: int | None) -> str | None:
    """The top-level name whose definition holds ``line`` of features.py."""
    if not line:
        return None
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if node.lineno <= line <= (node.end_lineno or node.lineno):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                return node.name
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                return node.targets[0].id
    return None


def _captured_names(captured: CodeCapture, artifacts: list[ArtifactSpec]) -> list[CapturedName]:
    names = [
        CapturedName(name=name, kind="import", size_bytes=len(statement), detail=statement)
        for name, statement in sorted(captured.imports.items())
    ]
    names += [
        CapturedName(name=name, kind="constant", cell=captured.cells.get(name), size_bytes=len(src),
                     detail=src if len(src) <= 60 else src[:57] + "...")
        for name, src in captured.constants.items()
    ]
    for definition in sorted(captured.definitions.values(), key=lambda d: d.order):
        kind = "entry" if definition.name == captured.entry_name else definition.kind
        names.append(CapturedName(name=definition.name, kind=kind, cell=definition.cell,
                                  size_bytes=len(definition.source.encode()),
                                  detail=definition.source.strip().splitlines()[0][:80]))
    names += [
        CapturedName(name=name, kind="function", cell=captured.cells.get(target), detail=f"{name} = {target}")
        for name, target in sorted(captured.aliases.items())
    ]
    names += [
        CapturedName(name=a.name, kind="artifact", cell=a.cell, size_bytes=a.size_bytes, detail=f"{a.type} ({a.format})")
        for a in artifacts
    ]
    return names


# --- render, verify, move into place ---------------------------------------------------------


class _Timer:
    def __init__(self, reporter: Reporter, step: str, detail: str = "") -> None:
        self.reporter, self.step, self.detail = reporter, step, detail

    def __enter__(self) -> "_Timer":
        self.start = time.monotonic()
        self.reporter.step(self.step, "running", None, self.detail)
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        seconds = time.monotonic() - self.start
        self.reporter.step(self.step, "failed" if exc else "done", seconds, str(exc) if exc else self.detail)


def export(options: ShipOptions, user_ns: dict[str, Any], history: CellHistory, reporter: Reporter) -> ShipOutcome:
    """The whole pipeline for one %%ship. Raises ShipError; leaves nothing half-written."""
    from .history import ExportRecord, now, record_export
    from .review import review_markdown

    with _Timer(reporter, "capture"):
        captured = capture_spec(options, user_ns, history)
    try:
        spec = captured.spec
        markdown = review_markdown(spec, None)
        reporter.review(spec, markdown)
        outcome = ShipOutcome(ok=True, name=spec.name, version=spec.version, review_markdown=markdown)
        if options.dry_run:
            outcome.message = "dry run: the review above shows what would be exported; nothing was written"
            return outcome
        destination = (options.out / spec.name).resolve()
        _check_destination(destination)
        destination.parent.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f".{spec.name}.mlship-", dir=destination.parent))
        try:
            project = workdir / spec.name
            with _Timer(reporter, "render", str(destination)):
                _render(spec, captured.staging, project)
            verify_result = None
            if options.verify:
                verify_result = _verify(project, reporter)
            (project / "REVIEW.md").write_text(review_markdown(spec, verify_result), encoding="utf-8")
            _move_into_place(project, destination)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        outcome.project = destination
        outcome.verified = verify_result is not None
        if verify_result is not None:
            outcome.tests_passed, outcome.tests_failed = verify_result.tests_passed, verify_result.tests_failed
            outcome.test_output = verify_result.output
        outcome.message = f"exported to {destination}" + (" and verified" if verify_result else " (not verified)")
        record_export(ExportRecord(notebook=options.notebook, name=spec.name, version=spec.version,
                                   project=str(destination), time=now(), verified=outcome.verified, ok=True))
        # Registry push (--push) and the project's own git commit (issue 8): a few lines for pipeline.py.
        from .publish import publish

        published = publish(destination, options.push, options.registry,
                            f"passed ({verify_result.tests_passed} tests)" if verify_result else "not run")
        outcome.pushed, outcome.git_commit = published.pushed, published.git_commit
        outcome.message += published.message
        outcome.review_markdown = (destination / "REVIEW.md").read_text(encoding="utf-8")
        if options.build:
            outcome.image = _build(destination, reporter)
            outcome.message += f"; built and smoke-tested image {outcome.image}"
        return outcome
    finally:
        captured.cleanup()


def _render(spec: ShipSpec, staging: Path, project: Path) -> None:
    from .render import render_project

    render_project(spec, staging, project)
    for relative, text in spec.local_modules.items():
        target = project / "app" / "local" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def _verify(project: Path, reporter: Reporter) -> Any:
    from .verify import VerifyError, verify_project

    with _Timer(reporter, "verify", "tests of the generated project in a clean environment"):
        try:
            result = verify_project(
                project,
                on_line=reporter.log,
                on_step=lambda step, status, seconds: reporter.step(f"verify:{step}", status, seconds, ""),
            )
        except VerifyError as exc:
            raise ShipError(f"verify could not build the clean environment: {exc}", output=getattr(exc, "output", "")) from exc
        if not result.passed:
            raise ShipError(
                f"the generated project's tests failed in a clean environment "
                f"({result.tests_failed} failed, {result.tests_passed} passed); nothing was exported",
                output=result.output,
            )
    return result


def _build(project: Path, reporter: Reporter) -> str:
    try:
        from .build import BuildError, build_image
    except ImportError as exc:
        raise ShipError("container builds are not available in this installation") from exc
    with _Timer(reporter, "build", str(project)):
        try:
            result = build_image(project, on_line=reporter.log)
        except BuildError as exc:
            raise ShipError(f"the image build failed: {exc}") from exc
    return result.tag


def _check_destination(destination: Path) -> None:
    if destination.exists() and not (destination / "ship.json").is_file():
        raise ShipError(
            f"{destination} exists and is not a jupyter-mlship project; choose another --out or move it away"
        )


def _move_into_place(project: Path, destination: Path) -> None:
    """Replace an earlier export only once the new one is complete."""
    previous = None
    if destination.exists():
        previous = destination.with_name(f".{destination.name}.previous-{int(time.time())}")
        destination.rename(previous)
    try:
        project.rename(destination)
    except OSError:
        if previous is not None:
            previous.rename(destination)
        raise
    if previous is not None:
        from .gitrepo import carry_history

        carry_history(previous, destination)  # the project's git history survives a re-export
        shutil.rmtree(previous, ignore_errors=True)
