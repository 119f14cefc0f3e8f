"""The reference profile: what the training data looked like, for drift and the skew guard (issue 10).

Per watched feature: dtype, null rate, min/max, decile bin edges with the fraction in each bin, the top
categories with their frequencies (+ "other"), and for text or wide arrays a summary (lengths, norms);
the same for the model's predictions on that data. Aggregates only, no raw rows: safe to ship as
``model/reference.json``. Features and bins come from the service's own ``app/monitoring.py`` (imported
through ``runtime_module``), so the kernel, the service and ``mlship monitor`` measure the same things.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from ..runtime import runtime_module
from ..spec import InputSchema, MonitoringSpec, OutputSchema

MAX_PROFILE_ROWS = 50_000  # a larger reference is sampled (seeded) to keep export quick
MAX_PREDICTION_ROWS = 5_000  # rows the entry function is run on for the prediction distribution


def reference_profile(data: Any, input_schema: InputSchema, predictions: list | None = None,
                      output_schema: OutputSchema | None = None, source: str = "reference") -> dict:
    """Profile ``data`` (the --reference, or the sample) as the service will see it: as JSON instances."""
    from .schema import sample_to_instances

    monitoring = runtime_module("monitoring")
    schema = input_schema.model_dump()
    instances = sample_to_instances(subsample(data, MAX_PROFILE_ROWS), input_schema)
    features = monitoring.instance_features(instances, schema)
    kinds = monitoring.watched_features(schema)
    dtypes = {c.name: c.dtype for c in input_schema.columns}
    profile: dict[str, Any] = {
        "source": source,
        "rows": _rows(data),
        "profiled_rows": len(instances),
        "features": {},
        "prediction": None,
    }
    for name, values in features.items():
        entry = monitoring.profile_values(kinds[name], values)
        entry["dtype"] = dtypes.get(name, input_schema.dtype or "")
        profile["features"][name] = entry
    if predictions is not None and output_schema is not None:
        profile["prediction"] = _prediction_profile(predictions, output_schema)
    return profile


def _prediction_profile(predictions: list, output_schema: OutputSchema) -> dict | None:
    kind, values = runtime_module("monitoring").prediction_values(predictions, output_schema.model_dump())
    return None if kind == "other" else runtime_module("monitoring").profile_values(kind, values)


def _predict_like_the_service(reference: Any, input_schema: InputSchema, predict: Callable[[Any], list]) -> list:
    """The entry function on a seeded subsample of the reference, passed through JSON as a request is
    (so extra columns such as the target are dropped and dtypes are the service's)."""
    from .schema import sample_to_instances

    instances = sample_to_instances(subsample(reference, MAX_PREDICTION_ROWS), input_schema)
    return predict(runtime_module("convert").instances_to_sample(instances, input_schema.model_dump()))


def build_reference(sample: Any, reference: Any, input_schema: InputSchema, output_schema: OutputSchema,
                    sample_predictions: list, predict: Callable[[Any], list],
                    warnings: list[str], guard: str = "flag", golden_instances: list | None = None) -> dict:
    """The profile from --reference (predictions of the entry function on a seeded subsample of it), else
    from the sample with a warning in the review. With ``guard`` "reject", a sample the guard would refuse
    is an error: the service's own golden test would be answered 422."""
    profile = _profile(sample, reference, input_schema, output_schema, sample_predictions, predict, warnings)
    if guard == "reject" and golden_instances:
        refused = guard_violations(profile, golden_instances, input_schema)
        if refused:
            raise ValueError(f"--guard reject would refuse the sample itself ({refused[0]}); pass a --reference "
                             "that covers the sample, or use --guard flag")
    return profile


def guard_violations(profile: dict, instances: list, input_schema: InputSchema) -> list[str]:
    """The skew guard's messages for these instances against this profile (the service's own check)."""
    monitoring = runtime_module("monitoring")
    schema = input_schema.model_dump()
    messages = []
    for name, values in monitoring.instance_features(instances, schema).items():
        feature = profile["features"].get(name)
        if feature:
            messages += [f"{monitoring.feature_path(schema, index, name)}: {message}"
                         for index, _, message in monitoring.guard_feature(name, feature, values)]
    return messages


def _profile(sample: Any, reference: Any, input_schema: InputSchema, output_schema: OutputSchema,
             sample_predictions: list, predict: Callable[[Any], list], warnings: list[str]) -> dict:
    if reference is not None:
        try:
            profile = reference_profile(reference, input_schema, source="reference")
        except Exception as exc:  # a reference the service's schema cannot read: say so, fall back
            warnings.append(f"--reference could not be profiled ({type(exc).__name__}: {exc}); drift is "
                            "measured against the sample instead")
        else:
            predictions, source = sample_predictions, "sample"
            try:
                predictions, source = _predict_like_the_service(reference, input_schema, predict), "reference"
            except Exception as exc:
                warnings.append(f"the entry function failed on --reference ({type(exc).__name__}: {exc}); "
                                "prediction drift is measured against the sample's predictions")
            profile["prediction"] = _prediction_profile(predictions, output_schema)
            profile["prediction_source"] = source
            return profile
    else:
        warnings.append(
            f"no --reference given: drift and the skew guard compare requests with the sample ({_rows(sample)} "
            "rows); pass --reference with the training data for measures you can trust"
        )
    return reference_profile(sample, input_schema, sample_predictions, output_schema, "sample")


def subsample(data: Any, limit: int) -> Any:
    """At most ``limit`` rows of a DataFrame, array or list; the same rows on every export (seeded)."""
    n = _rows(data)
    if n <= limit:
        return data
    chosen = sorted(random.Random(0).sample(range(n), limit))
    if hasattr(data, "iloc"):
        return data.iloc[chosen]
    if hasattr(data, "shape"):
        return data[chosen]
    return [data[i] for i in chosen]


def monitoring_options(log_exclude: str | None, guard: str | None, window: int | None,
                       input_schema: InputSchema) -> MonitoringSpec:
    """`--log-exclude a,b,c:hash --guard reject` -> MonitoringSpec; a name the schema lacks is an error."""
    exclude, hashed = [], []
    for item in filter(None, (part.strip() for part in (log_exclude or "").split(","))):
        name, _, how = item.partition(":")
        if how not in ("", "hash"):
            raise ValueError(f"--log-exclude `{item}`: write NAME to leave a field out or NAME:hash to hash it")
        (hashed if how == "hash" else exclude).append(name)
    known = [c.name for c in input_schema.columns]
    for name in exclude + hashed:
        if name not in known:
            raise ValueError(f"--log-exclude: `{name}` is not a field of the request "
                             f"({', '.join(known) if known else 'instances have no named fields'})")
    options: dict[str, Any] = {"log_exclude": exclude, "log_hash": hashed}
    if guard:
        options["guard"] = guard
    if window:
        options["window"] = window
    return MonitoringSpec(**options)


def _rows(data: Any) -> int:
    shape = getattr(data, "shape", None)
    return int(shape[0]) if shape else len(data)
