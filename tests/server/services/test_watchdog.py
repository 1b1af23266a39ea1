"""The worker's loop watchdog: a blocked event loop is seen from a thread, explained, interrupted
when it holds a task past its timeout, and the worker ended when nothing else helps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from llamactl.server.services.watchdog import EXIT_STALLED, LoopBlockedError, LoopWatchdog
from tests.e2e.waiting import wait_until
from tests.loop_wakeups import LoopWakeups


def block_for(seconds: float) -> None:
    time.sleep(seconds)  # a blocking call in async code: the fault under test


async def test_a_blocked_loop_is_reported_with_where_it_is_stuck(caplog: pytest.LogCaptureFixture) -> None:
    watchdog = LoopWatchdog(warn_after=0.3, exit_after=60)
    watchdog.start()
    try:
        with caplog.at_level(logging.WARNING, logger="llamactl.server.services.watchdog"):
            block_for(1.0)
            await asyncio.sleep(0.3)
    finally:
        watchdog.stop()
    (line,) = [r.getMessage() for r in caplog.records if "blocked" in r.getMessage()]
    print(line)
    assert "the event loop has been blocked for" in line
    assert "test_watchdog.py" in line and "block_for" in line
    assert watchdog.stalls == 1


async def test_a_task_past_its_timeout_has_the_blocking_call_interrupted() -> None:
    watchdog = LoopWatchdog(warn_after=0.2, exit_after=60)
    watchdog.start()
    watchdog.track("t1", 0.5)
    started = time.monotonic()
    try:
        with pytest.raises(LoopBlockedError, match=r"past a task's timeout of 0.5 s"):
            block_for(20)
    finally:
        watchdog.untrack("t1")
        watchdog.stop()
    took = time.monotonic() - started
    print(f"the blocking call was interrupted after {took:.2f} s")
    assert took < 5


async def test_a_loop_that_stays_blocked_ends_the_worker() -> None:
    exits: list[int] = []
    watchdog = LoopWatchdog(warn_after=0.2, exit_after=0.8, exit=exits.append)
    watchdog.start()
    try:
        deadline = time.monotonic() + 10
        while not exits and time.monotonic() < deadline:
            block_for(0.05)  # never yields to the loop
    finally:
        watchdog.stop()
    assert exits == [EXIT_STALLED]


async def test_an_interrupt_that_is_swallowed_ends_the_worker() -> None:
    exits: list[int] = []
    watchdog = LoopWatchdog(warn_after=0.2, exit_after=60, interrupt_grace=0.5, exit=exits.append)
    watchdog.start()
    watchdog.track("t1", 0.3)
    try:
        deadline = time.monotonic() + 10
        while not exits and time.monotonic() < deadline:
            with contextlib.suppress(LoopBlockedError):  # user code that catches everything
                block_for(0.05)
    finally:
        watchdog.stop()
    assert exits == [EXIT_STALLED]


async def test_a_loop_that_keeps_turning_is_left_alone() -> None:
    exits: list[int] = []
    watchdog = LoopWatchdog(warn_after=0.2, exit_after=0.5, exit=exits.append)
    watchdog.start()
    watchdog.track("t1", 0.1)
    try:
        for _ in range(20):
            await asyncio.sleep(0.05)
    finally:
        watchdog.stop()
    assert exits == [] and watchdog.stalls == 0


async def test_an_idle_loop_is_woken_only_by_the_watchdogs_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker with nothing to run should cost nothing: its loop used to tick ten times a second
    for the watchdog; now it wakes only when the thread looks (at most twice a second, idle)."""
    wakeups = LoopWakeups(monkeypatch)
    watchdog = LoopWatchdog(exit_after=60)
    watchdog.start()
    try:
        await asyncio.sleep(0.1)  # started
        wakeups.reset()
        await asyncio.sleep(2.0)
    finally:
        watchdog.stop()
    print(f"the idle loop woke {wakeups.count} times in 2 s")
    assert wakeups.count <= 8  # ~4 looks and the sleep's end (it was 20: a tick every 0.1 s)


class CountedWake:
    """Counts the wake-ups of a watchdog's thread (sets of its event)."""

    def __init__(self, watchdog: LoopWatchdog) -> None:
        self.sets = 0
        real_set = watchdog._wake.set

        def counted_set() -> None:
            self.sets += 1
            real_set()

        watchdog._wake.set = counted_set  # type: ignore[method-assign]


async def test_tasks_started_one_after_another_do_not_each_wake_the_thread() -> None:
    """A task's start woke the watchdog's thread whenever no other task ran: with function tasks
    run one at a time that was a thread wake-up per task, most of such a task's own cost. It wakes
    the thread only when the thread waits out an idle pause longer than its usual look."""
    watchdog = LoopWatchdog(exit_after=60)
    wake = CountedWake(watchdog)
    watchdog.start()
    try:
        for i in range(200):
            watchdog.track(f"t{i}", None)
            await asyncio.sleep(0)
            watchdog.untrack(f"t{i}")
            await asyncio.sleep(0.001)
    finally:
        watchdog.stop()
    assert wake.sets <= 10, f"{wake.sets} wake-ups of the thread for 200 tasks (200 before)"


async def test_a_task_started_during_an_idle_pause_wakes_the_thread() -> None:
    """The thread idles a second between looks (warn_after 2 s); a task that starts meanwhile
    wakes it, so the task is looked at at the usual pace, not a second later."""
    watchdog = LoopWatchdog(warn_after=2.0, exit_after=60)
    wake = CountedWake(watchdog)
    watchdog.start()
    try:
        await wait_until(lambda: watchdog._next_look - time.monotonic() > 0.5, timeout=5)  # a pause
        watchdog.track("t1", None)
        assert wake.sets == 1
        watchdog.untrack("t1")
    finally:
        watchdog.stop()
