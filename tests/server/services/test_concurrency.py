"""AdaptiveLimit: how many tasks a worker runs at once, driven here by fake clocks."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from llamactl.server.services.concurrency import FLOOR, WINDOW, AdaptiveLimit, Slot, ThreadBusyClock


class Clocks:
    """Wall time and the loop thread's busy time, moved by the test."""

    def __init__(self) -> None:
        self.wall = 0.0
        self.busy = 0.0

    def advance(self, seconds: float, *, busy: float) -> None:
        """``seconds`` pass, ``busy`` of them (a share) with the loop's thread on a CPU."""
        self.wall += seconds
        self.busy += seconds * busy


def limiter(clocks: Clocks, maximum: int = 64, floor: int = FLOOR) -> AdaptiveLimit:
    return AdaptiveLimit(maximum, floor=floor, clock=lambda: clocks.wall, busy_clock=lambda: clocks.busy)


async def start(limit: AdaptiveLimit, n: int) -> list[Slot]:
    slots = []
    for _ in range(n):
        slot = await limit.acquire()
        slot.begin()
        slots.append(slot)
    return slots


Idle = Callable[[int], float]
"""The share of a wave the worker's loop waits with no task, given how many ran at once."""


def easing(at_once: int) -> float:
    """Waves that ease as fewer tasks run at once (the server turns a smaller wave around
    sooner), down to 10 % of the time at four."""
    return 0.1 + 0.2 * (at_once - FLOOR) / 28


async def wave(limit: AdaptiveLimit, clocks: Clocks, n: int, idle: Idle = easing) -> None:
    """``n`` computing tasks start together (as many as the limit lets), finish together after
    30 ms, then the worker waits ``idle(how many ran)`` of the wave for more."""
    slots = await start(limit, min(n, limit.limit))
    clocks.advance(0.03, busy=1.0)
    for slot in slots:
        slot.release()
    share = idle(len(slots))
    clocks.advance(0.03 * share / (1 - share), busy=0.05)


async def brought_to_the_floor(clocks: Clocks) -> AdaptiveLimit:
    """A limit that waves easing as fewer run at once brought down to the floor."""
    limit = limiter(clocks)
    for _ in range(60):
        await wave(limit, clocks, 32)
    assert limit.limit == FLOOR
    return limit


async def test_tasks_that_compute_in_waves_bring_the_limit_down_to_the_floor() -> None:
    clocks = Clocks()
    limit = limiter(clocks)
    seen = []
    for _ in range(120):  # 7 s
        await wave(limit, clocks, 32)
        seen.append(limit.limit)
    # Each step three quarters of the most that ran (32 at first), after a few windows at each;
    # still starved at the floor, it probes 6 now and then, which goes back.
    floor_at = seen.index(FLOOR)
    assert list(dict.fromkeys(seen[: floor_at + 1])) == [64, 24, 18, 13, 9, 6, FLOOR]
    assert seen[:floor_at] == sorted(seen[:floor_at], reverse=True)
    assert sum(1 for n in seen[floor_at:] if n == FLOOR) >= 0.7 * len(seen[floor_at:])
    assert limit.prefetch.value == FLOOR  # the broker hands out no more than it would start


async def test_too_few_at_once_to_bridge_the_server_s_turn_bring_the_limit_back() -> None:
    """Waves while many run at once, but fewer than 13 leave the worker waiting for its next
    delivery more, not less (it happened on the workflow echo at 32 clients): each probe below
    13 goes back, and the limit stays at 13."""

    def idle(at_once: int) -> float:
        return easing(at_once) if at_once >= 13 else 0.25

    clocks = Clocks()
    limit = limiter(clocks)
    seen = []
    for _ in range(300):  # 12 s
        await wave(limit, clocks, 32, idle)
        seen.append(limit.limit)
    assert list(dict.fromkeys(seen)) == [64, 24, 18, 13, 9, 19]  # then more: waves again
    assert seen[-1] == 13  # each probe, to 9 or to 19, went back
    assert sum(1 for n in seen[50:] if n != 13) <= 0.2 * len(seen[50:])  # a probe every 2 s


async def test_time_without_any_task_before_a_load_is_not_read_as_waves() -> None:
    """A worker idle since its first task (or since the last load) is not starved by waves: the
    first window of a new load starts with its first task."""
    clocks = Clocks()
    limit = limiter(clocks)
    await wave(limit, clocks, 1)  # one task, then nothing for a while
    clocks.advance(5.0, busy=0.0)
    slots = await start(limit, 32)  # a load begins: 32 tasks computing
    seen = []
    for _ in range(5):  # within the load's first window
        clocks.advance(0.01, busy=1.0)
        slots.pop(0).release()
        seen.append(limit.limit)
        if limit.in_use < limit.limit:
            slots += await start(limit, 1)
    assert seen == [64] * 5  # read as starved 99 % of the window, it went to 24


async def test_a_load_that_grows_brings_a_limit_at_the_floor_back_up() -> None:
    """Down at the floor after a light load, a heavier one starves the worker the fewer run at
    once, down to 13: probes of half as many more climb back to 13, and the probes past it (to
    19, waves again) and below it (to 9) go back."""

    def idle(at_once: int) -> float:
        return easing(at_once) if at_once >= 13 else 0.45 - 0.025 * at_once

    clocks = Clocks()
    limit = await brought_to_the_floor(clocks)
    seen = []
    for _ in range(400):  # ~24 s
        await wave(limit, clocks, 32, idle)
        seen.append(limit.limit)
    assert list(dict.fromkeys(seen))[:4] == [FLOOR, 6, 9, 13]
    assert seen[-1] == 13
    assert sum(1 for n in seen[100:] if n == 13) >= 0.7 * len(seen[100:])


async def test_waiting_tasks_that_fill_every_slot_double_the_limit_up_to_the_maximum() -> None:
    clocks = Clocks()
    limit = await brought_to_the_floor(clocks)
    seen = []
    for _ in range(6):
        slots = await start(limit, limit.limit)  # every slot taken, the loop mostly idle
        clocks.advance(WINDOW * 1.2, busy=0.1)  # (exactly a window may round to less)
        for slot in slots:
            slot.release()
        seen.append(limit.limit)
    assert seen == [8, 16, 32, 64, 64, 64]


async def simulate(
    limit: AdaptiveLimit, clocks: Clocks, *, await_ms: int, cpu_ms: int, ms: int, deliver_ms: int = 0
) -> list[int]:
    """A worker given as many tasks as its limit takes, each arriving ``deliver_ms`` after its
    place was freed (0: never starved), awaiting ``await_ms`` then computing ``cpu_ms`` on the
    loop, which gives one millisecond at a time to the ready tasks in turn; ``ms`` milliseconds
    of it. Returns when each task ended (ms)."""
    delivering: list[tuple[int, Slot]] = []
    awaiting: list[tuple[int, Slot]] = []
    ready: deque[list[Any]] = deque()
    ended: list[int] = []
    for now in range(ms):
        while limit.in_use < limit.limit:
            delivering.append((now + deliver_ms, await limit.acquire()))
        for due, slot in delivering:
            if due <= now:
                slot.begin()
                awaiting.append((now + await_ms, slot))
        delivering = [(due, slot) for due, slot in delivering if due > now]
        ready.extend([cpu_ms, slot] for due, slot in awaiting if due <= now)
        awaiting = [(due, slot) for due, slot in awaiting if due > now]
        if not ready:
            clocks.advance(0.001, busy=0.0)
            continue
        task = ready.popleft()
        clocks.advance(0.001, busy=1.0)
        task[0] -= 1
        if task[0] > 0:
            ready.append(task)
        else:
            task[1].release()
            ended.append(now)
    return ended


async def test_a_loop_saturated_by_computing_tasks_gives_up_what_it_cannot_run_sooner() -> None:
    """A replica never without a task, its loop always busy, holding 64 tasks that each wait for
    the others' turns: fewer at once finish as many per second, sooner, and the rest stay with
    the broker for another replica."""
    clocks = Clocks()
    limit = limiter(clocks)
    ended = await simulate(limit, clocks, await_ms=0, cpu_ms=6, ms=6000)
    assert limit.limit == FLOOR
    last = sum(1 for t in ended if t >= 5000)
    assert last >= 0.95 * 1000 / 6  # as many tasks a second as the loop can run: it is the limit


async def test_a_saturated_loop_keeps_enough_tasks_to_bridge_the_wait_for_the_next() -> None:
    """Computing tasks queue for the loop, so fewer at once finish sooner; but each next task
    arrives 40 ms after a place is freed, and with fewer than ~8 at once the loop is left
    without any task for part of that wait. The limit comes down, not as far as that, and the
    worker finishes as many tasks a second as its loop can run (at the floor, 4 at once, it
    would run a task's 6 ms in every ~15)."""
    clocks = Clocks()
    limit = limiter(clocks)
    ended = await simulate(limit, clocks, await_ms=0, cpu_ms=6, ms=8000, deliver_ms=40)
    assert 9 <= limit.limit < 64
    last = sum(1 for t in ended if t >= 6000)
    assert last >= 0.95 * 2 * 1000 / 6


async def test_a_saturated_loop_s_probes_stop_where_it_begins_to_go_without_tasks() -> None:
    """Computing tasks, 3 ms each on the loop, fewer of them always finishing sooner; below 16 at
    once the loop is left without a task a little more at each step (0.6 points per task less),
    each step within what a probe forgives (2.5 points), together far past it. Measured on the
    workflow echo at 32 clients: probes from 18 each kept went on down to 4-6, starved 8-12 % of
    the time, where 13 was starved 1-7 % and 16 at once went 1.08x as fast. The probes stop
    before the loop is left without a task 5 % of the time."""
    clocks = Clocks()
    limit = limiter(clocks)
    seen = []
    for _ in range(300):
        slots = await start(limit, min(32, limit.limit))
        clocks.advance(0.003 * len(slots), busy=1.0)
        for slot in slots:
            slot.release()
        share = max(0.0, (16 - len(slots)) * 0.006)
        clocks.advance(0.003 * len(slots) * share / (1 - share), busy=0.05)
        seen.append(limit.limit)
    assert {18, 13, 9} <= set(seen)  # probed, and kept while the loop stayed fed
    # 6 would leave it without a task 6 % of the time: a probe of it now and then, each undone
    assert 9 <= seen[-1] < 64
    assert sum(1 for n in seen[-100:] if n < 9) <= 20


async def test_a_loop_saturated_by_many_waiting_tasks_keeps_nearly_all_of_them() -> None:
    """64 tasks awaiting 50 ms and computing 1 ms each keep a slow worker's loop busy too, and it
    is never without one either: a probe finds that fewer at once do not finish sooner, and the
    limit comes back; it settles where the loop is nearly full."""
    clocks = Clocks()
    limit = limiter(clocks)
    ended = await simulate(limit, clocks, await_ms=50, cpu_ms=1, ms=6000)
    fixed_clocks = Clocks()
    fixed = limiter(fixed_clocks, floor=64)  # never lowered: what 64 at once do
    ended_fixed = await simulate(fixed, fixed_clocks, await_ms=50, cpu_ms=1, ms=6000)
    assert limit.limit >= 48
    ours, theirs = (sum(1 for t in e if t >= 2000) for e in (ended, ended_fixed))
    assert ours >= theirs * 0.9


async def test_a_lower_limit_that_ends_fewer_tasks_a_second_goes_back() -> None:
    """Tasks that mostly wait keep a slow loop busy and never leave it without a task: 24 at once
    finish sooner than 32 (32.4 ms against 36.4) but end fewer a second (741 against 879), so
    the probe goes back."""
    clocks = Clocks()
    limit = limiter(clocks)
    seen = []
    for _ in range(100):
        slots = await start(limit, min(32, limit.limit))
        clocks.advance((20.4 + 0.5 * len(slots)) / 1000, busy=1.0)
        for slot in slots:
            slot.release()
        seen.append(limit.limit)
    assert 24 in seen  # probed
    assert seen[-1] == 64
    assert seen.count(64) >= 0.8 * len(seen)


async def test_busy_tasks_that_never_fill_the_slots_leave_it_alone() -> None:
    clocks = Clocks()
    limit = limiter(clocks)
    for _ in range(10):
        slots = await start(limit, 8)
        clocks.advance(WINDOW, busy=0.2)
        for slot in slots:
            slot.release()
    assert limit.limit == 64  # waiting, but never all slots taken: more would not help


async def test_acquire_waits_for_a_free_slot_and_a_slot_is_released_once() -> None:
    clocks = Clocks()
    limit = limiter(clocks, maximum=2)
    first, second = await start(limit, 2)
    third = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    assert not third.done()
    first.release()
    first.release()  # a second release gives nothing back
    slot = await asyncio.wait_for(third, 5)
    assert limit.in_use == 2
    fourth = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    assert not fourth.done()
    fourth.cancel()
    slot.release()
    second.release()
    assert limit.in_use == 0


async def test_a_place_waiting_for_its_delivery_is_not_a_running_task() -> None:
    clocks = Clocks()
    limit = limiter(clocks)
    waiting = await limit.acquire()
    assert (limit.in_use, limit.running) == (1, 0)
    waiting.begin()
    assert limit.running == 1
    waiting.release()
    assert (limit.in_use, limit.running) == (0, 0)


def test_a_maximum_below_the_floor_is_never_lowered() -> None:
    assert AdaptiveLimit(1).floor == 1
    assert AdaptiveLimit(2).floor == 2


def test_the_busy_clock_counts_work_on_the_thread() -> None:
    clock = ThreadBusyClock()
    before, started = clock(), time.monotonic()
    until = time.thread_time() + 0.02
    while time.thread_time() < until:
        pass
    busy, wall = clock() - before, time.monotonic() - started
    # On a CPU for 0.02 s, and on one or waiting for one the whole time: a loaded machine (CI)
    # makes the wait, and so the busy time, longer than the CPU time.
    assert 0.02 - 0.005 <= busy <= wall + 0.005, (busy, wall)
    clock.close()
    assert clock() >= 0  # falls back to the thread's CPU time


async def test_one_task_at_a_time_tries_no_lower_limit_and_holds_back_no_probe() -> None:
    """One task at a time waits for the server between tasks (a sequential client), which reads
    as waves; a lower limit could not change that. Tried anyway, it went back and held every
    probe back for two seconds, into the load that came next: eight clients after one ran two
    seconds at 64 at once (the anchor's 8-client figure, measured in those seconds)."""
    clocks = Clocks()
    limit = limiter(clocks)
    seen = []
    for _ in range(12):  # one client: a task computes 30 ms, then the worker waits as long
        await wave(limit, clocks, 1, lambda at_once: 0.5)
        seen.append(limit.limit)
    assert seen == [64] * 12
    started = clocks.wall
    while clocks.wall - started < 0.5:  # then eight clients, in waves
        await wave(limit, clocks, 8)
    assert limit.limit < 8
