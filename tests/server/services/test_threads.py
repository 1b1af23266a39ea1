"""The daemon thread pool that runs sync user functions."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from collections.abc import Callable

import pytest

from llamactl.server.services.threads import (
    DaemonExecutor,
    DaemonThreadPool,
    Job,
    abandoned_calls,
    run_in_daemon_thread,
)

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")


def _job(fn: Callable[[], object]) -> Job:
    """A pool job that calls ``fn`` and has nothing to do once its thread is free again."""

    def job() -> Callable[[], None]:
        fn()
        return lambda: None

    return job


def _wait_until(check: object, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.005)


async def test_calls_one_after_another_reuse_one_thread() -> None:
    seen = {await run_in_daemon_thread(threading.get_ident) for _ in range(20)}
    assert len(seen) == 1
    assert threading.get_ident() not in seen  # not the loop's thread


async def test_results_exceptions_and_context_reach_the_caller() -> None:
    _VAR.set("caller")
    assert await run_in_daemon_thread(lambda a, b=0: a + b, 2, b=3) == 5
    assert await run_in_daemon_thread(_VAR.get) == "caller"
    with pytest.raises(ZeroDivisionError):
        await run_in_daemon_thread(lambda: 1 / 0)


def test_a_stuck_call_gets_its_thread_left_alone_and_the_next_call_another() -> None:
    pool = DaemonThreadPool(idle=60.0)
    release = threading.Event()
    ran: list[int] = []
    pool.submit(_job(release.wait))
    pool.submit(_job(lambda: ran.append(threading.get_ident())))
    _wait_until(lambda: ran)
    assert pool.threads == 2
    release.set()


def test_idle_threads_exit_and_new_calls_still_run() -> None:
    pool = DaemonThreadPool(idle=0.05)
    done = threading.Event()
    pool.submit(_job(done.set))
    assert done.wait(5)
    _wait_until(lambda: pool.threads == 0)
    again = threading.Event()
    pool.submit(_job(again.set))
    assert again.wait(5)


def test_many_calls_at_once_each_run_exactly_once() -> None:
    pool = DaemonThreadPool(idle=0.01)  # idle timeouts race with new calls all along
    counts: list[int] = []
    lock = threading.Lock()

    def count() -> None:
        with lock:
            counts.append(1)

    for n in range(2000):
        pool.submit(_job(count))
        if n % 100 == 0:
            time.sleep(0.012)
    _wait_until(lambda: len(counts) == 2000)
    assert pool.threads <= 2000


async def _wait_for(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def test_a_call_its_caller_gave_up_on_counts_as_abandoned_until_it_returns() -> None:
    before = abandoned_calls()
    release = threading.Event()
    waiting = asyncio.create_task(run_in_daemon_thread(release.wait))
    assert await run_in_daemon_thread(lambda: 1) == 1  # the stuck one is running meanwhile
    assert abandoned_calls() == before
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert abandoned_calls() == before + 1
    release.set()
    await _wait_for(lambda: abandoned_calls() == before)


async def test_the_daemon_executor_runs_calls_past_any_number_of_stuck_ones() -> None:
    """asyncio's default executor has min(32, cpus + 4) threads: that many stuck calls, and
    every later one waits for ever. The daemon executor starts another thread instead."""
    loop = asyncio.get_running_loop()
    executor = DaemonExecutor()
    before = abandoned_calls()
    release = threading.Event()
    stuck = [loop.run_in_executor(executor, release.wait) for _ in range(40)]
    assert await asyncio.wait_for(loop.run_in_executor(executor, lambda: "ran"), 10) == "ran"
    with pytest.raises(ZeroDivisionError):
        await loop.run_in_executor(executor, lambda: 1 / 0)
    for future in stuck:
        future.cancel()
    await asyncio.wait(stuck)
    assert abandoned_calls() == before + 40
    executor.shutdown(wait=True)  # returns at once: nothing to join
    release.set()
    await _wait_for(lambda: abandoned_calls() == before)


class _Gauge:
    """Counts the calls running at once, and the most seen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.most = 0

    def run(self, release: threading.Event) -> str:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            release.wait(10)
            return "ran"
        finally:
            with self._lock:
                self.now -= 1


async def test_the_daemon_executor_runs_at_most_its_limit_of_calls_at_once() -> None:
    """Before the limit, a task handing it 200 calls at once got 200 threads."""
    loop = asyncio.get_running_loop()
    executor = DaemonExecutor(limit=4)
    gauge, release = _Gauge(), threading.Event()
    calls = [loop.run_in_executor(executor, gauge.run, release) for _ in range(200)]
    await _wait_for(lambda: gauge.now == 4)
    release.set()
    assert await asyncio.gather(*calls) == ["ran"] * 200
    assert gauge.most == 4


async def test_calls_their_callers_gave_up_on_leave_their_place_to_waiting_ones() -> None:
    loop = asyncio.get_running_loop()
    executor = DaemonExecutor(limit=2)
    stuck_release = threading.Event()
    stuck = [loop.run_in_executor(executor, stuck_release.wait) for _ in range(2)]
    waiting = loop.run_in_executor(executor, lambda: "ran")  # both places are taken
    for future in stuck:
        future.cancel()
    assert await asyncio.wait_for(waiting, 10) == "ran"
    cancelled_first = loop.run_in_executor(executor, stuck_release.wait)  # waits for a place
    cancelled_first.cancel()
    assert await asyncio.wait_for(loop.run_in_executor(executor, lambda: "next"), 10) == "next"
    stuck_release.set()
