"""Running the entry function for requests: adaptive micro-batching and failure isolation.

Concurrent requests wait in one queue; a single worker takes whatever is queued (up to max_batch
instances) and makes ONE call of the entry function for all of it. With nothing queued a request runs
at once: no timer, no added wait. Coalescing is only switched on when jupyter-mlship proved at export
that the entry function is row-wise (ship.json "batching"); otherwise every request is its own call.

Where a call runs: the cost of a call is learned from the calls themselves (seconds = fixed + per
instance, a decaying least-squares fit). A call predicted to take less than ``inline_ms``
(MLSHIP_INLINE_MS; app.main's default is 5 ms with one CPU, 0.5 ms with more) runs on the event loop
itself: on one CPU a thread hand-off costs more than such a call and makes the loop wait for the GIL,
and a probe waits at most that long. Anything slower, or not yet measured, runs on a bounded thread
pool, so a slow model never keeps /healthz waiting.

When a call fails, the requests in it are re-run one by one so that one bad request never fails the
others, and within a failing request the instance that the model cannot take is found by bisection.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

# Failures that are the server's own (500), not the request's: everything else raised by the entry
# function on a validated request is about that input (422), a RecursionError included (the self-check
# ran the code on the sample: a nesting too deep is this input's). A call of several requests that fails
# in any way is run again request by request first: a batch too large for memory fails no request.
SERVER_FAULTS = (MemoryError, SystemError)


@dataclass
class ModelRejection(Exception):
    """The model could not take a validated request: which instance (None: only in combination) and why."""

    index: int | None
    cause: str

    def __str__(self) -> str:
        where = f"instances[{self.index}]" if self.index is not None else "instances"
        return f"{where}: the model cannot take this input: {self.cause}"


@dataclass
class Job:
    instances: list
    request_id: str
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class CallCost:
    """Seconds per entry call as ``fixed + per_instance * n``, fitted to recent calls (older ones decay)."""

    def __init__(self, decay: float = 0.95) -> None:
        self.decay = decay
        self.w = self.n = self.t = self.nn = self.nt = 0.0

    def add(self, instances: int, seconds: float) -> None:
        d = self.decay
        self.w, self.n, self.t = self.w * d + 1, self.n * d + instances, self.t * d + seconds
        self.nn, self.nt = self.nn * d + instances * instances, self.nt * d + instances * seconds

    def predict(self, instances: int) -> float | None:
        """Expected seconds for a call on ``instances``; None until a call was measured."""
        if not self.w:
            return None
        spread = self.nn * self.w - self.n * self.n
        if spread <= 1e-9 * self.nn * self.w:  # one size seen so far: all of the cost per instance
            return self.t / self.n * instances if self.n else self.t / self.w
        per_instance = max(0.0, (self.nt * self.w - self.n * self.t) / spread)
        fixed = max(0.0, (self.t - per_instance * self.n) / self.w)
        return fixed + per_instance * instances


class Batcher:
    """One queue, one worker; ``predict(instances)`` -> JSON predictions, or raises ModelRejection.

    A request that arrives alone and is cheap runs at once; a request with company waits in the queue,
    and the worker makes one call for everything queued."""

    def __init__(self, predict_instances: Callable[[list], list], *, enabled: bool, max_batch: int,
                 max_wait_ms: float, threads: int, observe_batch: Callable[[int, int], None] | None = None,
                 inline_ms: float = 1.0, join: Callable[[list], Any] | None = None) -> None:
        self.predict_instances = predict_instances
        # Several requests' instances as one (app.convert.join_instances: lists, or float matrices).
        self.join = join or (lambda parts: parts[0] if len(parts) == 1 else [i for part in parts for i in part])
        self.enabled = enabled
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self.executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="model")
        self.observe_batch = observe_batch or (lambda requests, instances: None)
        self.inline_seconds = max(0.0, inline_ms) / 1000
        self.cost = CallCost()
        self.pending: deque[Job] = deque()
        self.wakeup: asyncio.Event | None = None
        self.worker: asyncio.Task | None = None
        self.arriving = 0  # requests between arrival and their place in the queue
        self.in_pool = 0  # calls running on the thread pool now
        self.running = False  # the worker holds a batch (taken from the queue, not yet answered)

    def cheap(self, instances: int) -> bool:
        """Is a call on ``instances`` expected to be shorter than a thread hand-off is worth?"""
        expected = self.cost.predict(instances)
        return expected is not None and expected < self.inline_seconds

    async def run(self, requests: list[list]) -> list[Any]:
        """One call for ``requests``: on the event loop when cheap, else on the thread pool."""
        if self.cheap(sum(len(r) for r in requests)):
            return self.run_batch(requests)
        self.in_pool += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.executor, self.run_batch, requests)
        finally:
            self.in_pool -= 1

    async def predict(self, instances: list, request_id: str) -> list:
        loop = asyncio.get_running_loop()
        if not self.enabled:
            self.observe_batch(1, len(instances))
            return _unwrap((await self.run([instances]))[0])
        self.arriving += 1
        try:
            # One turn of the loop: requests that arrived together reach this point too, so a lone
            # request can tell that it is alone (and run at once) from one that has company (and queue).
            await asyncio.sleep(0)
        finally:
            self.arriving -= 1
        alone = not self.arriving and not self.pending and not self.in_pool and not self.running
        if alone and self.cheap(len(instances)):
            self.observe_batch(1, len(instances))
            return _unwrap(self.run_batch([instances])[0])
        if self.worker is None or self.worker.done():
            self.wakeup = asyncio.Event()
            self.worker = loop.create_task(self._work())
        job = Job(instances, request_id, loop.create_future())
        self.pending.append(job)
        self.wakeup.set()
        return _unwrap(await job.future)

    async def _work(self) -> None:
        busy = False  # did the last call hold several requests (a sign of load)?
        while True:
            if not self.pending:
                busy = False
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            batch = self._take()
            if busy and self.max_wait and sum(len(j.instances) for j in batch) < self.max_batch:
                # Under load only: give stragglers up to max_wait to join. Idle requests never wait.
                await asyncio.sleep(self.max_wait)
                batch += self._take(self.max_batch - sum(len(j.instances) for j in batch))
            busy = len(batch) > 1
            self.observe_batch(len(batch), sum(len(j.instances) for j in batch))
            self.running = True
            try:
                outcomes = await self.run([j.instances for j in batch])
            except BaseException as exc:  # the pool itself failed: every waiting request learns it
                outcomes = [exc] * len(batch)
            finally:
                self.running = False
            for job, outcome in zip(batch, outcomes):
                if not job.future.done():  # the client may have gone away meanwhile
                    job.future.set_result(outcome)

    def _take(self, room: int | None = None) -> list[Job]:
        """Queued jobs in order, up to ``room`` instances (always at least one job when room is None)."""
        room = self.max_batch if room is None else room
        batch: list[Job] = []
        while self.pending and (not batch and room == self.max_batch or len(self.pending[0].instances) <= room):
            job = self.pending.popleft()
            batch.append(job)
            room -= len(job.instances)
        return batch

    def run_batch(self, requests: list[list]) -> list[Any]:
        """One entry call for all requests (on the loop or a pool thread, see ``run``); each request's
        predictions or its failure."""
        instances = self.join(requests)
        started = time.perf_counter()
        try:
            predictions = self.predict_instances(instances)
            self.cost.add(len(instances), time.perf_counter() - started)
        except Exception as exc:
            if len(requests) > 1:  # isolate: the requests that are fine get their answers
                return [self.run_batch([r])[0] for r in requests]
            if isinstance(exc, SERVER_FAULTS):
                return [exc]
            return [self.find_culprit(instances, exc)]
        outcomes, start = [], 0
        for r in requests:
            outcomes.append(predictions[start:start + len(r)])
            start += len(r)
        return outcomes

    def find_culprit(self, instances: list, exc: Exception) -> ModelRejection:
        """Bisect a failing request to the first instance that fails on its own."""
        offset, cause = 0, exc
        while len(instances) > 1:
            half = len(instances) // 2
            for start, part in ((0, instances[:half]), (half, instances[half:])):
                try:
                    self.predict_instances(part)
                except SERVER_FAULTS:
                    raise
                except Exception as failure:
                    offset, instances, cause = offset + start, part, failure
                    break
            else:
                return ModelRejection(None, _describe(exc))  # each half works alone: only the mix fails
        return ModelRejection(offset, _describe(cause))


MAX_CAUSE_CHARS = 300


def _describe(exc: Exception) -> str:
    """The model's error as a 422 gives it: the first line of its message only (a native library's goes
    on with a stack trace naming the server's files), and not too long to read."""
    lines = str(exc).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if len(text) > MAX_CAUSE_CHARS:
        text = text[: MAX_CAUSE_CHARS - 3] + "..."
    return f"{type(exc).__name__}: {text}"


def _unwrap(outcome: Any) -> list:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
