"""Capture: live notebook objects → ShipSpec + artifact files.

The only stage that touches live Python objects. ``code`` slices the notebook code the entry function
reaches, ``artifacts`` saves model objects in their safest faithful format, ``schema`` infers the request
and response schemas from the sample, ``environment`` pins the kernel's distributions, ``secrets`` scans
what would be exported.
"""

from __future__ import annotations

import copy
import datetime as _dt
import shutil
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .. import __version__
from ..errors import ShipError
from ..options import ShipOptions
from ..runtime import runtime_module
from ..spec import ArtifactSpec, CapturedName, Entry, MonitoringSpec, SecretFinding, ShipSpec, Source, validate_export_version, validate_name
from .artifacts import choose_format, device_fallback, is_torch_module
from .batching import prove_rowwise
from .cpu_builds import image_pins
from .code import CellHistory, CodeCapture, CodeWalker, Definition, changed_module_constants, local_module_files
from .environment import (distributions_for_modules, pip_index_settings, python_version, service_modules,
                          test_requirements)
from .reference import build_reference, monitoring_options
from .rehearsal import rehearse
from .schema import class_labels, infer_input_schema, infer_output_schema, make_golden
from .secrets import find_secrets, refuse_unless_allowed
from .target import service_requirements

LARGE_ARTIFACT_BYTES = 100 * 1024 * 1024


@dataclass
class Captured:
    """The capture's hand-off: the ShipSpec and a staging folder with the artifact files it names."""

    spec: ShipSpec
    staging: Path
    findings: list[SecretFinding] = field(default_factory=list)

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def __enter__(self) -> "Captured":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.cleanup()


@dataclass
class _Run:
    """What the entry function is and what it did on the sample."""

    name: str
    call: Callable[[Any], Any]
    code: CodeCapture
    entry: Entry
    where: str  # how messages name it: `predict` or `clf.predict_proba`
    sample: Any
    reference: Any
    result: Any = None


def capture(options: ShipOptions, user_ns: dict[str, Any], history: CellHistory) -> Captured:
    """Live notebook state → ShipSpec + artifact files. Raises ShipError with one sentence."""
    try:
        validate_name(options.name)
        validate_export_version(options.version)
    except ValueError as exc:
        raise ShipError(str(exc)) from exc
    # The user's pip index settings are part of the pinned requirements' cache key, and reading them starts
    # pip (0.2 s): that runs on another core while the entry function is studied.
    index_settings = _in_background(pip_index_settings)
    run = _run_entry(options, user_ns, CodeWalker(user_ns, history))
    warnings: list[str] = []
    input_schema, output_schema, golden = _schemas(run)
    monitoring, reference_profile = _monitoring(options, run, input_schema, output_schema, golden, warnings)
    _check_determinism(run, output_schema, golden, warnings)
    # Micro-batching in the service: on only where the entry function is proven row-wise.
    batching = prove_rowwise(lambda x: call_on_copy(run.call, x), run.sample, golden=golden,
                             input_schema=input_schema, output_schema=output_schema, convert=runtime_module("convert"))
    warnings += [f"`{name}` is used by the captured code but not defined in the notebook" for name in run.code.unresolved]
    warnings += run.code.outside_inputs()
    warnings += [
        f"`{function}` assigns the global {', '.join(f'`{g}`' for g in sorted(written))}: in the service that is "
        "state of each worker process, starting from the notebook's value and never shared or reset"
        for function, written in sorted(run.code.globals_written.items())
    ]
    warnings += [
        f"`{function}` changes {', '.join(f'`{g}`' for g in sorted(changed))} in place: in the service that is "
        "state of each worker process (a cache grows without a bound), starting from the notebook's contents"
        for function, changed in sorted(run.code.changed_in_place().items())
    ]

    changed = changed_module_constants(run.code.local_modules)  # before anything is saved
    if changed:
        raise ShipError(
            f"{'; '.join(changed)}: the service imports the module's file, so it would answer with the "
            "file's value; change the file (and reload the module), or pass the value to the code"
        )

    staging = Path(tempfile.mkdtemp(prefix="mlship-capture-"))
    try:
        features_text = run.code.features_source(_docstring(options, run.name), _load_line)
        artifacts = _save_artifacts(run, input_schema, output_schema, golden, features_text, staging, warnings)
        local_modules = {
            path: text
            for module, folder in sorted(run.code.local_modules.items())
            for path, text in local_module_files(module, folder).items()
        }
        findings = find_secrets(features_text, local_modules, run.code.artifacts)
        refuse_unless_allowed(findings, options.allow_secrets)
        modules = service_modules(run.code.modules, [a.format for a in artifacts], input_schema,
                                  type(run.result).__module__)
        # Resolved for the container's platform.
        pins = service_requirements(modules, python_version(), index_settings.result())
        warnings += pins.warnings
        # CPU images carry no CUDA: xgboost-cpu, torch +cpu where the index has them.
        image = image_pins(pins.requirements, [a.device for a in artifacts])
        requirements, warnings = image.requirements, warnings + image.warnings
        warnings += _artifact_warnings(artifacts)
        spec = ShipSpec(
            name=options.name,
            version=options.version,
            source=Source(
                notebook=options.notebook,
                kernel_python=python_version(),
                captured_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                mlship_version=__version__,
            ),
            entry=run.entry,
            python_version=python_version(),
            features_source=features_text,
            local_modules=local_modules,
            captured=_captured_names(run.code, artifacts),
            artifacts=artifacts,
            requirements=requirements,
            test_requirements=test_requirements(),
            input=input_schema,
            output=output_schema,
            golden=golden,
            batching=batching,
            warnings=warnings,
            secrets_allowed=findings,
            monitoring=monitoring,
            reference=reference_profile,
            device_fallback=device_fallback([a.device for a in artifacts], options.allow_cpu_fallback),
        )
        return Captured(spec=spec, staging=staging, findings=findings)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _in_background(function: Callable[[], Any]) -> Future:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlship-capture")
    try:
        return pool.submit(function)
    finally:
        pool.shutdown(wait=False)  # the thread ends with its one task


def evaluate(expr: str, user_ns: dict[str, Any], flag: str) -> Any:
    try:
        return eval(expr, user_ns)  # the user's own expression, in the user's own namespace
    except Exception as exc:
        raise ShipError(f"{flag} `{expr}` could not be evaluated: {type(exc).__name__}: {exc}") from exc


def call_on_copy(entry: Callable[[Any], Any], sample: Any) -> Any:
    # Entry functions may change their argument in place; the sample must stay as the user made it.
    return entry(copy.deepcopy(sample))


def _run_entry(options: ShipOptions, user_ns: dict[str, Any], walker: CodeWalker) -> _Run:
    """Find the entry function, slice the code it reaches, and call it on the sample."""
    sample = evaluate(options.sample_expr, user_ns, "--sample")
    try:  # a sample of an unsupported kind is the sample's fault, before the entry function is blamed
        infer_input_schema(sample)
    except ValueError as exc:
        raise ShipError(str(exc)) from exc
    reference = evaluate(options.reference_expr, user_ns, "--reference") if options.reference_expr else None
    if options.model_var:
        var, method = options.model_var, options.method
        if var not in user_ns:
            raise ShipError(f"--model `{var}` is not defined in the notebook")
        if not callable(getattr(user_ns[var], method, None)):
            raise ShipError(f"--model `{var}` ({type(user_ns[var]).__name__}) has no method `{method}`")
        name = method if method.isidentifier() and method != var else f"{method}_entry"
        code = walker.capture(name, None, start_names=[var])
        cell = code.cells.get(var)
        source = (
            f"def {name}(instances):\n"
            f'    """Entry point: `{var}.{method}` on the converted instances."""\n'
            f"    return {var}.{method}(instances)\n"
        )
        code.definitions[name] = Definition(name, "function", source, cell, (10**9, 0))
        run = _Run(name, getattr(user_ns[var], method), code,
                   Entry(name=name, kind="method", model_var=var, method=method, cell=cell),
                   f"`{var}.{method}`", sample, reference)
    else:
        name = options.entry
        if not name or name not in user_ns:
            raise ShipError(f"the entry function `{name}` is not defined in the notebook")
        if not callable(user_ns[name]):
            raise ShipError(
                f"`{name}` is a {type(user_ns[name]).__name__}, not a function: name a function with --entry, or "
                f"ship the object's method with the line form (`%ship NAME --model {name} --sample ...`)"
            )
        code = walker.capture(name, user_ns[name])
        run = _Run(name, user_ns[name], code, Entry(name=name, kind="function", cell=code.cells.get(name)),
                   f"`{name}`", sample, reference)
    try:
        run.result = call_on_copy(run.call, sample)
    except Exception as exc:
        raise ShipError(f"the entry function {run.where} raised {type(exc).__name__} on the sample: {exc}") from exc
    return run


def _schemas(run: _Run) -> tuple[Any, Any, Any]:
    convert = runtime_module("convert")
    # A model that answers null or NaN on the sample itself may do so for any input: there, only an error
    # tells that it cannot take a missing value.
    try:
        answers_missing = _holds_missing(convert.result_rows(run.result))
    except ValueError:  # not one prediction per instance: infer_output_schema below says so
        answers_missing = True

    def accepts_missing(variant: Any) -> bool:
        """Does the entry function take ``variant`` (a missing value in it) and still predict? Not raising
        is not enough: numpy, pandas, torch and a scaler carry NaN through to a NaN prediction, which the
        service would then answer as null with 200 instead of refusing the request."""
        try:
            result = call_on_copy(run.call, variant)
            return answers_missing or not _holds_missing(convert.result_rows(result))
        except Exception:
            return False

    try:
        input_schema = infer_input_schema(run.sample, run.reference, accepts_missing)
        output_schema = infer_output_schema(run.result, _rows(run.sample))
        golden = make_golden(run.sample, run.result, input_schema, output_schema)
    except ValueError as exc:
        raise ShipError(str(exc)) from exc
    labels = class_labels(run.code.artifacts.values(), output_schema, golden.predictions)
    if labels is not None:
        output_schema = output_schema.model_copy(update={"labels": labels})
    return input_schema, output_schema, golden


def _monitoring(options: ShipOptions, run: _Run, input_schema: Any, output_schema: Any, golden: Any,
                warnings: list[str]) -> tuple[MonitoringSpec, dict]:
    """The service's monitoring options, and the training data's profile for drift and the skew guard."""
    convert = runtime_module("convert")

    def predict(rows: Any) -> list:
        return convert.outputs_to_json(call_on_copy(run.call, rows), output_schema.model_dump(), _rows(rows))

    try:
        monitoring = monitoring_options(options.log_exclude, options.guard, None, input_schema)
        profile = build_reference(run.sample, run.reference, input_schema, output_schema, golden.predictions,
                                  predict, warnings, monitoring.guard, golden.instances)
    except ValueError as exc:
        raise ShipError(str(exc)) from exc
    return monitoring, profile


def _check_determinism(run: _Run, output_schema: Any, golden: Any, warnings: list[str]) -> None:
    """Run the entry function again on the sample: a service must answer what the notebook answered, and
    its golden test compares exactly that, so outputs that change between runs are refused here, with
    the reason (they would otherwise fail later, as a conversion or a verify failure)."""
    convert = runtime_module("convert")
    try:
        again = convert.outputs_to_json(call_on_copy(run.call, run.sample), output_schema.model_dump(),
                                        len(golden.instances))
    except Exception as exc:
        warnings.append(f"the entry function {run.where} failed when run a second time: {exc}")
        return
    differences = convert.compare_predictions(golden.predictions, again, golden.float_rel_tol)
    if not differences:
        return
    training = [name for name, value in run.code.artifacts.items() if _torch_in_training(value)]
    if training:  # dropout left on: seeding would keep it on in the service
        fix = (f"{', '.join(f'`{n}`' for n in training)} "
               f"{'is a torch module' if len(training) == 1 else 'are torch modules'} in training mode "
               "(dropout and batch statistics change every call); call "
               f"{' and '.join(f'`{n}.eval()`' for n in training)} before shipping")
    else:
        fix = ("seed its randomness (e.g. np.random.default_rng(0) inside the function) or remove it, so that "
               "the service answers what the notebook answers")
    raise ShipError(f"the entry function {run.where} gives different outputs when run twice on the same sample "
                    f"({differences[0]}): {fix}")


def _torch_in_training(value: Any) -> bool:
    """Is ``value`` a torch module with dropout or batch normalisation in training mode?"""
    if not is_torch_module(value):
        return False
    layers = ("torch.nn.modules.dropout", "torch.nn.modules.batchnorm")
    try:
        return any(module.training and type(module).__module__ in layers for module in value.modules())
    except Exception:
        return False


def _save_artifacts(run: _Run, input_schema: Any, output_schema: Any, golden: Any, features_text: str,
                    staging: Path, warnings: list[str]) -> list[ArtifactSpec]:
    """Rehearse the service with the live objects, then choose each artifact's format by rehearsal."""
    convert = runtime_module("convert")
    converted = convert.instances_to_sample(golden.instances, input_schema.model_dump())
    live = dict(run.code.artifacts)

    def check(saved: dict[str, ArtifactSpec]) -> list[str]:
        """Run app/features.py's text with these objects; mismatches against the golden outputs."""
        namespace = rehearse(features_text, live, saved, staging)
        outputs = convert.outputs_to_json(namespace[run.name](copy.deepcopy(converted)),
                                          output_schema.model_dump(), len(golden.instances))
        return convert.compare_predictions(golden.predictions, outputs, golden.float_rel_tol)

    try:
        mismatches = check({})
    except Exception as exc:
        raise ShipError(
            f"the captured code of {run.where} fails outside the notebook: {type(exc).__name__}: {exc}"
        ) from exc
    if mismatches:
        raise ShipError(
            f"requests converted back to the sample's type give other outputs than the sample: {mismatches[0]}"
        )
    artifacts = []
    for name, value in run.code.artifacts.items():
        modules = run.code.artifact_modules[name] | {type(value).__module__.split(".")[0]}
        frameworks = _versions(distributions_for_modules(sorted(modules)))
        artifacts.append(choose_format(name, value, run.code.cells.get(name), bool(run.code.notebook_refs[name]),
                                       frameworks, staging, check, warnings))
    return artifacts


def _artifact_warnings(artifacts: list[ArtifactSpec]) -> list[str]:
    warnings = []
    for artifact in artifacts:
        if artifact.size_bytes > LARGE_ARTIFACT_BYTES:
            warnings.append(f"artifact `{artifact.name}` is large ({artifact.size_bytes // 2**20} MiB)")
        if artifact.format in {"pickle", "torch-pickle"}:
            warnings.append(
                f"artifact `{artifact.name}` is saved with pickle (fallback): it loads only with the pinned "
                "Python and library versions, and only after its sha256 is checked"
            )
    return warnings


def _holds_missing(value: Any) -> bool:
    """Is there a null or a NaN anywhere in these JSON values?"""
    if value is None or (isinstance(value, float) and value != value):
        return True
    if isinstance(value, dict):
        value = list(value.values())
    return isinstance(value, list) and any(_holds_missing(v) for v in value)


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


def _versions(distributions: dict[str, list[str]]) -> dict[str, str]:
    import importlib.metadata

    return {dist: importlib.metadata.version(dist) for dist in sorted(distributions)}


def _captured_names(code: CodeCapture, artifacts: list[ArtifactSpec]) -> list[CapturedName]:
    """Every captured name with its cell and size, for the review."""
    names = [
        CapturedName(name=name, kind="import", size_bytes=len(statement), detail=statement)
        for name, statement in sorted(code.imports.items())
    ]
    names += [
        CapturedName(name=name, kind="constant", cell=code.cells.get(name), size_bytes=len(src),
                     detail=src if len(src) <= 60 else src[:57] + "...")
        for name, src in code.constants.items()
    ]
    for definition in sorted(code.definitions.values(), key=lambda d: d.order):
        kind = "entry" if definition.name == code.entry_name else definition.kind
        names.append(CapturedName(name=definition.name, kind=kind, cell=definition.cell,
                                  size_bytes=len(definition.source.encode()),
                                  detail=definition.source.strip().splitlines()[0][:80]))
    names += [
        CapturedName(name=name, kind="function", cell=code.cells.get(target), detail=f"{name} = {target}")
        for name, target in sorted(code.aliases.items())
    ]
    names += [
        CapturedName(name=a.name, kind="artifact", cell=a.cell, size_bytes=a.size_bytes, detail=f"{a.type} ({a.format})")
        for a in artifacts
    ]
    return names
