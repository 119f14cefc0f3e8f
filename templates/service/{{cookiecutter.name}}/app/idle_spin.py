"""Idle spinning: after the last request in flight is answered, the event loop polls for a moment
instead of sleeping, while the next request has lately been coming that soon.

A client that sends its next request as soon as it has the answer (one request at a time) leaves the
server's core idle for some tens of microseconds between requests. Sleeping through that gap costs more
than the gap: the thread blocks in epoll_wait and must be woken when the request comes (on a virtual
machine the vCPU halts, and the hypervisor has to run it again), and meanwhile the model's data leaves
the core's caches. Measured on a 2-core KVM guest whose kernel does not halt-poll (guest_halt_poll_ns 0;
where it does, the vCPU's wake-up is cheaper and the gain smaller), 1-row HistGradientBoosting (0.26 ms in
process), one client: p50 0.39-0.43 ms sleeping, 0.36-0.39 ms spinning.

How: a callback that puts itself back on the loop's ready queue makes the loop poll its sockets with a
zero timeout (uvloop and asyncio alike), until a request arrives or ``window`` seconds have passed
(MLSHIP_IDLE_SPIN_US, default 200 µs: the default of Linux's own halt-polling in KVM guests). Only while it
pays: each gap between an answer and the next request is scored (within the window or not), and the loop
spins only while at least half of the recent gaps were within it. So traffic with longer gaps does not
spin, and a spin that catches no request costs at most one window of CPU. It never spins while a model
call runs on the thread pool (on one CPU that would take the call's core), and app.main turns it off
by default when there are more workers than CPUs (one worker's polling would take another's core).
``MLSHIP_IDLE_SPIN_US=0`` turns it off. The CPU spent, caught (a request came) and missed, is counted for /metrics.
"""

from __future__ import annotations

import asyncio
import math
from time import perf_counter
from typing import Any, Callable, Mapping

ENV = "MLSHIP_IDLE_SPIN_US"
DEFAULT_US = 200.0


def window_from(environ: Mapping[str, str]) -> float:
    """Seconds of MLSHIP_IDLE_SPIN_US (microseconds); ValueError naming the variable when it is no such number."""
    text = environ.get(ENV, "").strip()
    try:
        micros = float(text) if text else DEFAULT_US
    except ValueError:
        micros = math.nan
    if not (math.isfinite(micros) and micros >= 0):
        raise ValueError(f"{ENV}={text!r}: expected microseconds, a number >= 0 (0 turns idle spinning off)")
    return micros / 1e6


class IdleSpin:
    """Call ``started()`` when a request arrives and ``ended()`` (in a finally) when it is answered."""

    def __init__(self, window_s: float, *, pool_busy: Callable[[], bool] = lambda: False,
                 weight: float = 0.125) -> None:
        self.window = max(0.0, window_s)
        self.pool_busy = pool_busy
        self.weight = weight  # of the latest gap in the decaying share ``pays``
        self.pays = 0.0  # recent gaps between an answer and the next request within the window (share)
        self.in_flight = 0
        self.idle_since: float | None = None  # when the last request in flight was answered
        self.loop: asyncio.AbstractEventLoop | None = None  # the loop spinning now
        self.seconds = {"caught": 0.0, "missed": 0.0}  # spinning that ended with a request / without
        self.spins = {"caught": 0, "missed": 0}

    def worth_it(self) -> bool:
        return self.pays >= 0.5 and not self.pool_busy()

    def started(self) -> None:
        self.in_flight += 1
        if self.idle_since is None:
            return
        gap = perf_counter() - self.idle_since
        self.idle_since = None
        self.pays += self.weight * ((gap <= self.window) - self.pays)
        if self.loop is not None:  # spinning: this request was caught (the poll sees it and stops)
            self.seconds["caught"] += min(gap, self.window)
            self.spins["caught"] += 1

    def ended(self) -> None:
        self.in_flight -= 1
        if self.in_flight or not self.window:
            return
        self.idle_since = perf_counter()
        if self.worth_it():
            loop = asyncio.get_running_loop()
            if self.loop is not loop:  # not spinning (or on a loop that is gone)
                self.loop = loop
                loop.call_soon(self._poll)

    def _poll(self) -> None:
        if self.idle_since is None:  # a request came (it is in flight): started() counted the spin
            self.loop = None
            return
        waited = perf_counter() - self.idle_since
        if waited < self.window and self.worth_it():
            self.loop.call_soon(self._poll)
            return
        self.loop = None
        self.seconds["missed"] += min(waited, self.window)  # beyond it: other callbacks ran meanwhile
        self.spins["missed"] += 1

    def collect(self) -> list[Any]:
        """A prometheus_client collector: the time spent spinning and the spins, by outcome."""
        from prometheus_client.core import CounterMetricFamily

        seconds = CounterMetricFamily(
            "mlship_idle_spin_seconds", f"Time the event loop polled instead of sleeping after the last request "
            f"({ENV}), by outcome: caught (a request came) or missed.", labels=["outcome"])
        spins = CounterMetricFamily("mlship_idle_spins", "Idle spins, by outcome (caught or missed).",
                                    labels=["outcome"])
        for outcome in ("caught", "missed"):
            seconds.add_metric([outcome], self.seconds[outcome])
            spins.add_metric([outcome], self.spins[outcome])
        return [seconds, spins]
