"""Running the entry function for requests: adaptive micro-batching and failure isolation.

Concurrent requests wait in one queue; a single worker takes whatever is queued (up to max_batch
instances) and makes ONE call of the entry function for all of it, on a bounded thread pool so the
event loop (and /healthz) never waits for the model. With nothing queued a request runs at once: no
timer, no added wait. Coalescing is only switched on when jupyter-mlship proved at export that the
entry function is row-wise (ship.json "batching"); otherwise every request is its own call.

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

# Failures that are the server's own (500), not the request's: everything else raised by the
# entry function on a validated request is about that input (422).
SERVER_FAULTS = (MemoryError, SystemError, RecursionError)


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


class Batcher:
    """One queue, one worker; ``predict(instances)`` -> JSON predictions, or raises ModelRejection."""

    def __init__(self, predict_instances: Callable[[list], list], *, enabled: bool, max_batch: int,
                 max_wait_ms: float, threads: int, observe_batch: Callable[[int, int], None] | None = None) -> None:
        self.predict_instances = predict_instances
        self.enabled = enabled
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait_ms) / 1000
        self.executor = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="model")
        self.observe_batch = observe_batch or (lambda requests, instances: None)
        self.pending: deque[Job] = deque()
        self.wakeup: asyncio.Event | None = None
        self.worker: asyncio.Task | None = None

    async def predict(self, instances: list, request_id: str) -> list:
        loop = asyncio.get_running_loop()
        if not self.enabled:
            self.observe_batch(1, len(instances))
            outcome = (await loop.run_in_executor(self.executor, self.run_batch, [instances]))[0]
            return _unwrap(outcome)
        if self.worker is None or self.worker.done():
            self.wakeup = asyncio.Event()
            self.worker = loop.create_task(self._work())
        job = Job(instances, request_id, loop.create_future())
        self.pending.append(job)
        self.wakeup.set()
        return _unwrap(await job.future)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
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
            try:
                outcomes = await loop.run_in_executor(self.executor, self.run_batch, [j.instances for j in batch])
            except BaseException as exc:  # the pool itself failed: every waiting request learns it
                outcomes = [exc] * len(batch)
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
        """In a pool thread: one entry call for all requests; each request's predictions or its failure."""
        instances = requests[0] if len(requests) == 1 else [i for r in requests for i in r]
        try:
            predictions = self.predict_instances(instances)
        except SERVER_FAULTS as exc:
            return [exc] * len(requests)
        except Exception as exc:
            if len(requests) > 1:  # isolate: the requests that are fine get their answers
                return [self.run_batch([r])[0] for r in requests]
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


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def _unwrap(outcome: Any) -> list:
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
