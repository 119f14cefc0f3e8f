"""Is the entry function row-wise? Then the service may coalesce concurrent requests into one call.

A service that batches answers request A with rows of a call that also held request B's rows. That is
only faithful when each output row depends on its own input row alone. It is shown, not assumed, on the
notebook's sample, along the service's own path (JSON instances -> the sample's type -> the entry
function -> JSON predictions): the outputs of the whole sample must equal the concatenated outputs of
the sample split several ways (halves, uneven parts, single rows), and reordering the rows must reorder
the outputs. Any difference, or an error on a part, leaves batching off with the reason.
"""

from __future__ import annotations

import copy
import random
import time
from types import ModuleType
from typing import Any, Callable

from ..spec import Batching, Golden, InputSchema, OutputSchema

BatchingDecision = Batching
MAX_PROOF_ROWS = 64  # more rows prove no more and cost calls
MAX_SINGLE_ROWS = 4  # rows also run one at a time (a batch of one is the idle service's case)
PROOF_BUDGET_SECONDS = 20.0  # a slow entry function must not make %%ship slow: stop, leave batching off


def prove_rowwise(entry: Callable[[Any], Any], sample: Any, *, golden: Golden, input_schema: InputSchema,
                  output_schema: OutputSchema, convert: ModuleType, max_batch: int = 1024) -> BatchingDecision:
    """Batching on when ``entry`` is row-wise on the golden sample; off with the reason otherwise.

    ``sample`` is the notebook's object (only its row count matters here: the proof runs on the JSON
    instances a request would carry, as the service would convert them).
    """
    instances = golden.instances[:MAX_PROOF_ROWS]
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
    n = len(instances)
    splits = {
        "in halves": [n // 2],
        "into an uneven first row and rest": [1],
        "into a rest and an uneven last row": [n - 1],
        "into thirds": sorted({max(1, n // 3), max(1, 2 * n // 3)}),
        "into single rows": list(range(1, min(n, MAX_SINGLE_ROWS))),
    }
    for how, cuts in splits.items():
        if time.monotonic() - started > PROOF_BUDGET_SECONDS:
            return Batching(enabled=False, reason=f"the row-wise proof stopped after {PROOF_BUDGET_SECONDS:g} s "
                            "(the entry function is slow on the sample); export with a smaller sample to allow it")
        edges = [0, *[c for c in cuts if 0 < c < n], n]
        parts = [instances[a:b] for a, b in zip(edges, edges[1:])]
        try:
            joined = [p for part in parts for p in run(part)]
        except Exception as exc:
            return Batching(enabled=False, reason=f"the entry function raised {type(exc).__name__} on the sample "
                            f"split {how}: {exc}")
        expected = whole[: len(joined)]
        problems = convert.compare_predictions(expected, joined, golden.float_rel_tol)
        if problems:
            return Batching(enabled=False, reason=f"not row-wise: the sample split {how} gives other outputs "
                            f"than the whole sample ({problems[0]})")
    order = list(range(n))
    random.Random(0).shuffle(order)
    try:
        shuffled = run([instances[i] for i in order])
    except Exception as exc:
        return Batching(enabled=False, reason=f"the entry function raised {type(exc).__name__} on the sample's "
                        f"rows reordered: {exc}")
    problems = convert.compare_predictions([whole[i] for i in order], shuffled, golden.float_rel_tol)
    if problems:
        return Batching(enabled=False, reason=f"not row-wise: reordering the sample's rows changes their outputs "
                        f"({problems[0]})")
    return Batching(enabled=True, max_batch=max_batch,
                    reason=f"row-wise on the sample ({n} rows split 5 ways and reordered gave the same outputs)")
