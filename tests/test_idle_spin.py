"""Idle spinning (the service's own app/idle_spin.py) on a real event loop: the loop polls after the last
request only while the next one has lately come within the window, stops when one comes or the window
is over, and never while a request is in flight or a model call runs on the pool."""

from __future__ import annotations

import asyncio
import time

import pytest

from jupyter_mlship.runtime import runtime_module

idle_spin = runtime_module("idle_spin")


async def one_at_a_time(spin, requests: int, gap: float) -> None:
    """``requests`` answered one after the other with ``gap`` seconds between an answer and the next."""
    for _ in range(requests):
        spin.started()
        await asyncio.sleep(0)  # the request's own awaits (body, send)
        spin.ended()
        await asyncio.sleep(gap)


async def cpu_while_idle(seconds: float) -> float:
    """CPU time of this thread (the loop's) while it awaits ``seconds`` of nothing."""
    before = time.thread_time()
    await asyncio.sleep(seconds)
    return time.thread_time() - before


def test_a_one_at_a_time_client_is_caught_by_polling_and_the_poll_stops_after_the_window():
    window = 0.1
    spin = idle_spin.IdleSpin(window)

    async def main():
        await one_at_a_time(spin, 12, gap=0.001)  # gaps well within the window: it pays
        assert spin.pays >= 0.5
        spinning = await cpu_while_idle(window * 2)  # the loop polls for one window, then sleeps
        after = await cpu_while_idle(window * 2)
        return spinning, after

    spinning, after = asyncio.run(main())
    assert spin.spins["caught"] == 5  # gaps 7-11: the share passes one half after six gaps within the window
    assert spin.spins["missed"] == 1 and spin.seconds["missed"] == pytest.approx(window, rel=0.2)
    assert spinning >= window / 4  # polled: the loop's thread was busy for much of the window ...
    assert after < window / 10  # ... and then slept: no spinning without requests
    assert spin.loop is None


def test_no_spinning_when_the_gaps_are_longer_than_the_window():
    spin = idle_spin.IdleSpin(0.002)

    async def main():
        await one_at_a_time(spin, 6, gap=0.02)
        return await cpu_while_idle(0.05)

    assert asyncio.run(main()) < 0.01
    assert spin.pays == 0 and spin.spins == {"caught": 0, "missed": 0}


def test_the_share_that_pays_decides_and_follows_the_traffic():
    spin = idle_spin.IdleSpin(0.05)

    async def main():
        await one_at_a_time(spin, 12, gap=0.0005)  # a one-at-a-time client: spinning
        caught = spin.spins["caught"]
        await one_at_a_time(spin, 12, gap=0.08)  # then sparse traffic: the share falls, spinning stops
        return caught

    caught = asyncio.run(main())
    assert caught == 5 and spin.pays < 0.5
    # each sparse gap that still spun was a miss of one window at most; the last few gaps did not spin
    assert 1 <= spin.spins["missed"] <= 7 and spin.seconds["missed"] <= spin.spins["missed"] * 0.05 * 1.2


def test_no_polling_while_a_request_is_in_flight_or_a_model_call_is_on_the_pool():
    pool = {"busy": False}
    spin = idle_spin.IdleSpin(0.2, pool_busy=lambda: pool["busy"])

    async def main():
        await one_at_a_time(spin, 12, gap=0.0005)
        spin.started()  # a slow request: the poll stops at its next turn and the loop may sleep
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert spin.loop is None
        in_flight = await cpu_while_idle(0.1)
        pool["busy"] = True  # answered, but a model call of another request runs on the pool
        spin.ended()
        assert spin.loop is None
        return in_flight, await cpu_while_idle(0.1)

    in_flight, pool_busy = asyncio.run(main())
    assert in_flight < 0.02 and pool_busy < 0.02


def test_a_new_event_loop_gets_its_own_poll():
    spin = idle_spin.IdleSpin(0.05)
    asyncio.run(one_at_a_time(spin, 12, gap=0.0005))  # ends with a poll pending on a loop now closed
    assert spin.loop is not None

    async def main():
        await one_at_a_time(spin, 4, gap=0.0005)
        return await cpu_while_idle(0.1)

    assert asyncio.run(main()) >= 0.05 / 4  # this loop polls after its last request


def test_the_window_comes_from_the_environment_and_a_bad_value_names_the_variable():
    assert idle_spin.window_from({}) == pytest.approx(200e-6)
    assert idle_spin.window_from({"MLSHIP_IDLE_SPIN_US": "50"}) == pytest.approx(50e-6)
    off = idle_spin.IdleSpin(idle_spin.window_from({"MLSHIP_IDLE_SPIN_US": "0"}))

    async def main():
        await one_at_a_time(off, 12, gap=0)
        return off.loop

    assert asyncio.run(main()) is None and off.spins == {"caught": 0, "missed": 0}
    for bad in ("fast", "-1", "nan", "inf"):
        with pytest.raises(ValueError, match=f"MLSHIP_IDLE_SPIN_US='{bad}': expected microseconds"):
            idle_spin.window_from({"MLSHIP_IDLE_SPIN_US": bad})


def test_the_metrics_report_the_time_spent_by_outcome():
    spin = idle_spin.IdleSpin(0.05)
    asyncio.run(one_at_a_time(spin, 12, gap=0.001))
    families = {f.name: {s.labels["outcome"]: s.value for s in f.samples if s.name.endswith("_total")}
                for f in spin.collect()}
    assert families["mlship_idle_spins"] == {"caught": spin.spins["caught"], "missed": spin.spins["missed"]}
    assert families["mlship_idle_spin_seconds"]["caught"] == spin.seconds["caught"] > 0
