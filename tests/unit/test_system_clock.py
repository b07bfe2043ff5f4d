"""SystemClock's timers: the ones due at one instant share one timer of the event loop."""

from __future__ import annotations

import asyncio
import functools
from datetime import timedelta
from typing import Any

import pytest

from anu_jobs import SystemClock


def _loop_timers(loop: asyncio.AbstractEventLoop) -> int:
    scheduled: list[asyncio.TimerHandle] = loop._scheduled  # type: ignore[attr-defined]
    return sum(1 for h in scheduled if not h.cancelled())


async def test_timers_of_one_instant_run_in_order_from_one_loop_timer() -> None:
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    before = _loop_timers(loop)
    at = clock.now() + timedelta(milliseconds=30)
    ran: list[int] = []
    for i in range(5):
        clock.call_at(at, functools.partial(ran.append, i))
    later = clock.call_at(at + timedelta(milliseconds=1), lambda: ran.append(99))
    assert _loop_timers(loop) == before + 2
    await asyncio.sleep(0)  # a pass of the loop, well before their time: nothing runs
    assert ran == []
    later.cancel()
    assert _loop_timers(loop) == before + 1  # its instant had nothing else: gone
    await asyncio.sleep(0.06)
    assert ran == [0, 1, 2, 3, 4]
    assert clock.now() >= at


async def test_a_cancelled_timer_does_not_run_even_from_an_earlier_callback() -> None:
    clock = SystemClock()
    at = clock.now() + timedelta(milliseconds=10)
    ran: list[str] = []
    handles: dict[str, Any] = {}

    def first() -> None:
        ran.append("first")
        handles["second"].cancel()

    handles["first"] = clock.call_at(at, first)
    handles["second"] = clock.call_at(at, lambda: ran.append("second"))
    clock.call_at(at, lambda: ran.append("third"))
    await asyncio.sleep(0.05)
    assert ran == ["first", "third"]
    handles["first"].cancel()  # a fired timer: cancelling it does nothing
    handles["second"].cancel()


async def test_a_timer_set_for_the_instant_being_run_runs_on_the_next_pass() -> None:
    clock = SystemClock()
    at = clock.now() + timedelta(milliseconds=10)
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        clock.call_at(at, lambda: ran.append("again"))  # in the past now

    clock.call_at(at, first)
    clock.call_at(at, lambda: ran.append("second"))
    await asyncio.sleep(0.03)
    assert ran == ["first", "second", "again"]  # not in the middle of its instant


async def test_a_failing_callback_is_reported_and_the_others_still_run() -> None:
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    at = clock.now() + timedelta(milliseconds=5)
    ran: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_at(at, boom)
    clock.call_at(at, lambda: ran.append("after"))
    await asyncio.sleep(0.03)
    loop.set_exception_handler(None)
    assert ran == ["after"]
    assert len(reported) == 1
    assert isinstance(reported[0]["exception"], RuntimeError)
    assert "boom" in str(reported[0]["exception"])


async def test_a_time_in_the_past_runs_at_once() -> None:
    clock = SystemClock()
    ran: list[str] = []
    clock.call_at(clock.now() - timedelta(seconds=5), lambda: ran.append("past"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert ran == ["past"]


def test_one_clock_serves_one_loop_after_another() -> None:
    clock = SystemClock()
    ran: list[int] = []

    async def once(i: int) -> None:
        at = clock.now() + timedelta(milliseconds=5)
        clock.call_at(at, lambda: ran.append(i))
        # A timer left pending when the loop closes must not reach the next loop.
        clock.call_at(at + timedelta(seconds=60), lambda: ran.append(-i))
        await asyncio.sleep(0.03)

    asyncio.run(once(1))
    asyncio.run(once(2))
    assert ran == [1, 2]


@pytest.mark.parametrize("n", [1, 1000])
async def test_many_timers_at_one_instant_all_run(n: int) -> None:
    clock = SystemClock()
    at = clock.now() + timedelta(milliseconds=10)
    ran: list[int] = []
    handles = [clock.call_at(at, functools.partial(ran.append, i)) for i in range(n)]
    for h in handles[::2]:
        h.cancel()
    await asyncio.sleep(0.05)
    assert ran == list(range(1, n, 2))


async def test_many_timers_of_one_instant_run_with_the_collector_paused() -> None:
    import gc

    clock = SystemClock()
    at = clock.now() + timedelta(milliseconds=5)
    seen: list[bool] = []
    for _ in range(17):
        clock.call_at(at, lambda: seen.append(gc.isenabled()))
    clock.call_at(at + timedelta(milliseconds=1), lambda: seen.append(gc.isenabled()))
    assert gc.isenabled()
    await asyncio.sleep(0.03)
    assert seen == [False] * 17 + [True]  # a lone timer runs with the collector on
    assert gc.isenabled()


async def test_a_collector_the_application_disabled_stays_disabled() -> None:
    import gc

    clock = SystemClock()
    at = clock.now() + timedelta(milliseconds=5)
    ran: list[int] = []
    for i in range(20):
        clock.call_at(at, functools.partial(ran.append, i))
    gc.disable()
    try:
        await asyncio.sleep(0.03)
        assert not gc.isenabled()
    finally:
        gc.enable()
    assert ran == list(range(20))
