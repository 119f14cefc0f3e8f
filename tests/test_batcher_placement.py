"""Where the service's Batcher runs a model call (app/batching.py, imported as the service has it): on the
event loop when the learned cost says the call is cheap, on the thread pool when it is slow or unknown,
and coalesced into one call when requests come together."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from jupyter_mlship.runtime import runtime_module

batching = runtime_module("batching")


def test_the_cost_model_learns_a_fixed_and_a_per_instance_part():
    cost = batching.CallCost()
    assert cost.predict(10) is None  # nothing measured: unknown, so never "cheap"
    for n in (1, 10, 100, 1, 50):
        cost.add(n, 0.002 + 0.0001 * n)
    assert cost.predict(1) == pytest.approx(0.0021, rel=1e-6)
    assert cost.predict(1000) == pytest.approx(0.102, rel=1e-6)
    single = batching.CallCost()
    single.add(4, 0.004)  # one size only: all of it counted per instance (the cautious guess)
    assert single.predict(8) == pytest.approx(0.008)


def run_rounds(batcher, rounds: list[list[list]]) -> list[list]:
    """Each round's requests at once, the rounds one after the other, on one event loop."""
    async def main():
        return [await asyncio.gather(*(batcher.predict(r, f"r{i}") for i, r in enumerate(requests)))
                for requests in rounds]

    return asyncio.run(main())


def test_cheap_calls_run_on_the_event_loop_and_slow_ones_on_the_pool():
    threads: list[str] = []

    def entry(delay: float):
        def predict(instances: list) -> list:
            threads.append(threading.current_thread().name)
            time.sleep(delay)
            return [x * 2 for x in instances]
        return predict

    cheap = batching.Batcher(entry(0.0), enabled=True, max_batch=64, max_wait_ms=0, threads=1, inline_ms=5)
    assert run_rounds(cheap, [[[1, 2]]] * 3) == [[[2, 4]]] * 3
    # The first call is not measured yet: the pool. Then the loop's own thread (asyncio.run's: main).
    assert threads[0].startswith("model") and threads[1:] == [threading.main_thread().name] * 2

    threads.clear()
    slow = batching.Batcher(entry(0.02), enabled=True, max_batch=64, max_wait_ms=0, threads=1, inline_ms=5)
    assert run_rounds(slow, [[[3]]] * 3) == [[[6]]] * 3
    assert all(name.startswith("model") for name in threads)  # 20 ms > 5 ms: never on the loop


def test_requests_that_arrive_together_are_one_call():
    calls: list[int] = []

    def predict(instances: list) -> list:
        calls.append(len(instances))
        return [x + 1 for x in instances]

    batcher = batching.Batcher(predict, enabled=True, max_batch=64, max_wait_ms=0, threads=1, inline_ms=5)
    together = [[i] for i in range(8)]
    assert run_rounds(batcher, [[[0]], together]) == [[[1]], [[i + 1] for i in range(8)]]
    assert calls == [1, 8]  # measured once; then eight requests at once: one call, none of them alone


def test_a_call_that_fails_as_a_whole_is_run_again_request_by_request():
    """A nesting too deep for one request's input is that request's 422, not every co-batched request's
    500; a call of several requests too large for memory is run again one request at a time."""
    def predict(instances):
        if len(instances) > 3:
            raise MemoryError("the joined call is too large")
        if "deep" in instances:
            raise RecursionError("maximum recursion depth exceeded")
        return [len(text) for text in instances]

    batcher = batching.Batcher(predict, enabled=True, max_batch=100, max_wait_ms=0, threads=1)
    outcomes = batcher.run_batch([["a"], ["bb", "deep"], ["ccc"]])
    assert outcomes[0] == [1] and outcomes[2] == [3]
    assert isinstance(outcomes[1], batching.ModelRejection) and outcomes[1].index == 1
    assert "RecursionError" in outcomes[1].cause
    assert batcher.run_batch([["a", "b"], ["cc", "dd"]]) == [[1, 1], [2, 2]]  # 4 together: too large
    alone = batcher.run_batch([["a", "b", "c", "d"]])  # one request too large on its own: the server's fault
    assert isinstance(alone[0], MemoryError)


def test_a_model_error_is_told_by_its_first_line():
    """An XGBoost error goes on with a native stack trace naming the server's files: the 422 keeps the
    first line."""
    def predict(instances):
        raise ValueError("[20:36:40] data.cc:1196: Check failed: valid: Input data contains `inf`\n"
                         "Stack trace:\n  [bt] (0) /usr/lib/python3/site-packages/xgboost/lib/libxgboost.so(+0x2c1a8c)")

    batcher = batching.Batcher(predict, enabled=True, max_batch=100, max_wait_ms=0, threads=1)
    (rejection,) = batcher.run_batch([[1.0]])
    assert rejection.cause == "ValueError: [20:36:40] data.cc:1196: Check failed: valid: Input data contains `inf`"
