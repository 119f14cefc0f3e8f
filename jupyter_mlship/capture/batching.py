"""Is the entry function row-wise? Then the service may coalesce concurrent requests into one call.

A service that batches answers request A with rows of a call that also held request B's rows. That is
only faithful when each output row depends on its own input row alone. It is shown, not assumed, on the
notebook's sample, along the service's own path (JSON instances -> the sample's type -> the entry
function -> JSON predictions): the outputs of the whole sample must equal the concatenated outputs of
the sample split several ways (halves, uneven parts, single rows), and reordering the rows must reorder
the outputs. Any difference, or an error on a part, leaves batching off with the reason.

The sample alone can hide a dependence on the other rows: a column whose nulls change its type for the
whole call (an integer column becomes float), an imputer fitted on the call's own rows, a per-key
aggregate when every key of the sample is unique, padding to the call's longest text when every text has
the same length. So the same check also runs on variants of the sample built from its own values: with
nulls where the schema allows them, with values shared between rows, and with texts of
other lengths. A variant the entry function cannot take as a whole proves nothing and is skipped; a
part of it that fails alone while the whole works is a dependence on the other rows.
"""

from __future__ import annotations

import copy
import math
import random
import time
from types import ModuleType
from typing import Any, Callable

from ..spec import Batching, Golden, InputSchema, OutputSchema

BatchingDecision = Batching
MAX_PROOF_ROWS = 64  # more rows prove no more and cost calls
MAX_NULL_ROWS = 32  # ... but rows holding nulls are taken first, up to this many
MAX_SINGLE_ROWS = 4  # rows also run one at a time (a batch of one is the idle service's case)
MAX_SINGLE_NULL_ROWS = 16  # ... and of the sample with nulls: a null elsewhere in a call can retype a column
# The model's own float noise at another batch size (float32 layers sum in other blocks) widens the
# comparison up to this relative tolerance; a dependence on other rows is rarely that small.
MAX_NOISE_TOLERANCE = 1e-5
MAX_SHARED_COLUMNS = 64  # wider tables or arrays: no shared-value variants (a key among them is unlikely)
PROOF_BUDGET_SECONDS = 20.0  # a slow entry function must not make %%ship slow: stop, leave batching off


SAMPLE = "the sample"  # the label of the sample itself, beside its variants


class _NotRowwise(Exception):
    """The reason batching stays off."""


def prove_rowwise(entry: Callable[[Any], Any], sample: Any, *, golden: Golden, input_schema: InputSchema,
                  output_schema: OutputSchema, convert: ModuleType, max_batch: int = 1024) -> BatchingDecision:
    """Batching on when ``entry`` is row-wise on the golden sample and its variants; off with the reason
    otherwise.

    ``sample`` is the notebook's object (only its row count matters here: the proof runs on the JSON
    instances a request would carry, as the service would convert them).
    """
    instances = proof_rows(golden.instances)
    if len(instances) < 2:
        return Batching(enabled=False, reason="the sample has one row: row-wise outputs cannot be shown; "
                        "export with a sample of several rows to allow micro-batching")
    inputs, outputs = input_schema.model_dump(), output_schema.model_dump()

    def run(rows: list) -> list:
        converted = convert.instances_to_sample(copy.deepcopy(rows), inputs)
        return convert.outputs_to_json(entry(converted), outputs, len(rows))

    started = time.monotonic()
    try:
        whole = run(instances)
    except Exception as exc:
        return Batching(enabled=False, reason=f"the entry function raised {type(exc).__name__} on the sample: {exc}")
    tolerance = _tolerance(run, instances, whole, golden.float_rel_tol)
    proof = _Proof(run, convert, tolerance, started)
    n = len(instances)
    checked: dict[str, int] = {}  # what the variants that ran were made of -> how many ran
    try:
        proof.check(instances, whole, SAMPLE, _splits(n, every=True))
        for made, label, rows in sample_variants(instances, input_schema):
            try:
                variant_whole = run(rows)
            except Exception:  # synthetic rows this code cannot take: they prove nothing either way
                continue
            singles = MAX_SINGLE_NULL_ROWS if made == NULLS else MAX_SINGLE_ROWS
            proof.check(rows, variant_whole, label, _splits(len(rows), every=False, singles=singles))
            checked[made] = checked.get(made, 0) + 1
    except _NotRowwise as reason:
        return Batching(enabled=False, reason=str(reason))
    rows_used = f"{n} rows" if n == len(golden.instances) else f"{n} of its {len(golden.instances)} rows"
    also = [made if count == 1 else f"{made} ({count} ways)" for made, count in checked.items()]
    return Batching(enabled=True, max_batch=max_batch,
                    reason=f"row-wise on the sample ({rows_used} split 5 ways and reordered gave the same "
                           f"outputs{'; so did its variants with ' + ', with '.join(also) if also else ''})")


class _Proof:
    def __init__(self, run: Callable[[list], list], convert: ModuleType, tolerance: float, started: float) -> None:
        self.run, self.convert, self.tolerance, self.started = run, convert, tolerance, started

    def check(self, instances: list, whole: list, label: str, splits: dict[str, list[int]]) -> None:
        """Raise _NotRowwise unless every split and a reordering of ``instances`` give ``whole``. A part
        of a variant that fails alone while its whole call worked is a dependence on the other rows; a
        part of the sample that fails is the entry function failing on the sample."""
        n = len(instances)
        variant = label != SAMPLE
        for how, cuts in splits.items():
            self._in_budget()
            edges = [0, *[c for c in cuts if 0 < c < n], n]
            joined: list = []
            for a, b in zip(edges, edges[1:]):
                try:
                    joined += self.run(instances[a:b])
                except Exception as exc:
                    if variant:
                        raise _NotRowwise(
                            f"not row-wise: {label}, split {how}, raised {type(exc).__name__} on rows {a}-{b - 1} "
                            f"that the whole call took: {exc}") from None
                    raise _NotRowwise(f"the entry function raised {type(exc).__name__} on {label} split {how}: "
                                      f"{exc}") from None
            problems = self.convert.compare_predictions(whole[: len(joined)], joined, self.tolerance)
            if problems:
                raise _NotRowwise(f"not row-wise: {label} split {how} gives other outputs than the whole "
                                  f"{'of it' if variant else 'sample'} ({problems[0]})")
        self._in_budget()
        order = list(range(n))
        random.Random(0).shuffle(order)
        try:
            shuffled = self.run([instances[i] for i in order])
        except Exception as exc:
            raise _NotRowwise(f"the entry function raised {type(exc).__name__} on the rows of {label} "
                              f"reordered: {exc}") from None
        problems = self.convert.compare_predictions([whole[i] for i in order], shuffled, self.tolerance)
        if problems:
            which = f"the rows of {label}" if variant else "the sample's rows"
            raise _NotRowwise(f"not row-wise: reordering {which} changes their outputs ({problems[0]})")

    def _in_budget(self) -> None:
        if time.monotonic() - self.started > PROOF_BUDGET_SECONDS:
            raise _NotRowwise(f"the row-wise proof stopped after {PROOF_BUDGET_SECONDS:g} s (the entry function "
                              "is slow on the sample); export with a smaller sample to allow it")


def _tolerance(run: Callable[[list], list], instances: list, whole: list, tolerance: float) -> float:
    """The relative tolerance of the proof: the golden tests', widened to four times the model's own
    float noise at another batch size, at most MAX_NOISE_TOLERANCE. The noise is measured on the sample
    twice over, which leaves a call's statistics as they were (mean, median, longest text, per-key
    groups), so what changes there is rounding: a float32 network's outputs moved by 1e-6 relative."""
    try:
        doubled = run(instances + instances)
    except Exception:
        return tolerance
    noise = max(_spread(whole, doubled[: len(whole)]), _spread(whole, doubled[len(whole):]))
    return max(tolerance, min(4 * noise, MAX_NOISE_TOLERANCE))


def _spread(a: Any, b: Any) -> float:
    """The largest relative difference between the numbers of two JSON values of the same shape."""
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return max((_spread(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return max((_spread(a[k], b[k]) for k in a), default=0.0)
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        scale = max(abs(a), abs(b))
        return abs(a - b) / scale if scale and math.isfinite(scale) else 0.0
    return 0.0


def _splits(n: int, every: bool, singles: int = MAX_SINGLE_ROWS) -> dict[str, list[int]]:
    """Where to cut n rows. The sample is cut five ways; a variant only in halves and into single rows
    (enough to part rows that share values, nulls or lengths from the others)."""
    singles = list(range(1, min(n, singles)))
    if not every:
        return {"in halves": [n // 2], "into single rows": singles}
    return {
        "in halves": [n // 2],
        "into an uneven first row and rest": [1],
        "into a rest and an uneven last row": [n - 1],
        "into thirds": sorted({max(1, n // 3), max(1, 2 * n // 3)}),
        "into single rows": singles,
    }


def _has_null(instance: Any, keys: set[str]) -> bool:
    if instance is None:
        return True
    if isinstance(instance, dict):
        return bool(keys - instance.keys()) or any(v is None for v in instance.values())
    if isinstance(instance, list):
        return any(v is None for v in instance)
    return False


def proof_rows(instances: list) -> list:
    """Up to MAX_PROOF_ROWS rows of the sample, in its order: every row holding a null first (up to
    MAX_NULL_ROWS; nulls are where calls most often depend on their other rows), the rest spread evenly."""
    n = len(instances)
    if n <= MAX_PROOF_ROWS:
        return list(instances)
    keys = set().union(*(i.keys() for i in instances if isinstance(i, dict)))
    chosen = {i for i, row in enumerate(instances) if _has_null(row, keys)}
    chosen = set(sorted(chosen)[:MAX_NULL_ROWS])
    rest = [i for i in range(n) if i not in chosen]
    room = MAX_PROOF_ROWS - len(chosen)
    chosen |= {rest[round(k * (len(rest) - 1) / max(1, room - 1))] for k in range(room)} if room > 0 else set()
    return [instances[i] for i in sorted(chosen)]


NULLS, SHARED, LENGTHS = "nulls in its nullable fields", "values shared by its rows", "texts of other lengths"


def sample_variants(instances: list, schema: InputSchema) -> list[tuple[str, str, list]]:
    """(what it is made of, label, rows) variants of the proof rows, built from their own values."""
    variants = []
    nulled = _with_nulls(instances, schema)
    if nulled is not None:
        variants.append((NULLS, f"the sample with {NULLS}", nulled))
    variants += [(SHARED, label, rows) for label, rows in _with_shared_values(instances, schema)]
    lengths = _with_other_lengths(instances, schema)
    if lengths is not None:
        variants.append((LENGTHS, f"the sample with {LENGTHS}", lengths))
    return variants


def _with_nulls(instances: list, schema: InputSchema) -> list | None:
    """Nulls where the schema allows them, in a third of the rows, at other rows for each field (so that
    some parts of a split hold nulls and others do not); a field the code takes left out is left out."""
    rows = copy.deepcopy(instances)
    if schema.kind in ("dataframe", "records"):
        fields = [(j, c) for j, c in enumerate(schema.columns) if c.nullable]
        if not fields:
            return None
        for k, row in enumerate(rows):
            for j, column in fields:
                if (k + j) % 3 == 0 and isinstance(row, dict):
                    if column.missing == "absent":
                        row.pop(column.name, None)
                    else:
                        row[column.name] = None
        return rows
    if not schema.nullable:
        return None
    if schema.kind == "ndarray":
        for k, row in enumerate(rows):
            for j in range(len(row) if isinstance(row, list) else 0):
                if (k + j) % 3 == 0:
                    row[j] = None
        return rows
    return [None if k % 3 == 0 else row for k, row in enumerate(rows)]


def _with_shared_values(instances: list, schema: InputSchema) -> list[tuple[str, list]]:
    """Every row taking the first row's values of some fields and keeping its own in the others, for
    every way of dividing the fields by one bit of their position (both ways round): any two fields are
    divided in one of them, so a per-key aggregate sees one key with many values, which a sample of
    unique keys never shows (a split into single rows then gives each row a group of its own)."""
    if schema.kind in ("dataframe", "records"):
        names: list[Any] = [c.name for c in schema.columns]
    elif schema.kind == "ndarray" and schema.width:
        names = list(range(schema.width))
    else:
        return []
    if not 2 <= len(names) <= MAX_SHARED_COLUMNS or len(instances) < 2:
        return []
    variants = []
    for bit in range(math.ceil(math.log2(len(names)))):
        for side in (0, 1):
            shared = [name for j, name in enumerate(names) if (j >> bit) & 1 == side]
            rows = copy.deepcopy(instances)
            source = rows[0]
            for row in rows[1:]:
                for name in shared:
                    if isinstance(row, dict) and isinstance(source, dict):
                        if name in source:
                            row[name] = copy.deepcopy(source[name])
                        else:
                            row.pop(name, None)
                    elif isinstance(row, list) and isinstance(source, list) and name < len(row):
                        row[name] = copy.deepcopy(source[name])
            if rows != instances:
                variants.append((f"the sample with every row taking the first row's {_fields(shared)}", rows))
    return variants


def _fields(names: list) -> str:
    shown = ", ".join(str(n) for n in names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
    return f"{'field' if len(names) == 1 else 'fields'} {shown}"


def _with_other_lengths(instances: list, schema: InputSchema) -> list | None:
    """Texts of other lengths: every third row joined with the next, every third cut to its first word."""
    if schema.kind != "strings" or not all(isinstance(t, str) for t in instances):
        return None
    rows = []
    for k, text in enumerate(instances):
        if k % 3 == 0:
            rows.append(f"{text} {instances[(k + 1) % len(instances)]}")
        elif k % 3 == 1:
            rows.append(text.split()[0] if text.split() else text)
        else:
            rows.append(text)
    return rows if rows != instances else None
