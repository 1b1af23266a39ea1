"""How many tasks a worker runs at once: all of ``max-concurrency`` while its tasks wait, fewer
while they compute.

A worker's tasks share one event loop. When they compute, the tasks started together advance a
step each in turn and finish together: their results reach the server in a wave, the server
works while the worker idles, then the worker while the server idles. Measured on the workflow
echo (a closed loop of 8 and 32 clients, ``max-concurrency: 64``): the worker busy 0.63 of a
core, tasks 26 ms in the worker and 9 ms waiting for the server; with four at a time they
finish one after another, both sides keep busy, and 1.43-1.55x the tasks go through. A task
that waits (a model call, a socket, a sleep) needs every slot it can get instead: 64 tasks
awaiting 50 ms each go through 64 at a time or not at all.

:class:`AdaptiveLimit` tells the two apart by how busy the loop's thread is while tasks run (on a
CPU or waiting for one, from ``/proc/thread-self/schedstat``; CPU time where that is missing),
and by how long nothing ran at all, over windows of :data:`WINDOW` seconds:

* busy at least :data:`BUSY` of the time tasks ran, and nothing running :data:`STARVED` of the
  window or more: waves. The limit goes down to three quarters of the most that ran, not below
  :data:`FLOOR`. (A loop kept busy by many waiting tasks, 64 awaiting 50 ms each, is never
  without a task: that is the third case.)
* busy less than :data:`IDLE` of the time while every slot was taken: the tasks wait on
  something else, and more could run meanwhile; the limit doubles, up to ``maximum``;
* busy at least :data:`BUSY` of the time and never without a task: either the tasks queue for
  the loop (computing tasks a replica holds more of than it can run: with ``replicas: 2`` of a
  ~5 ms CPU step one replica kept ~28 while the other, down to its floor, got 4 of each wave:
  195 tasks/s against ~300 balanced), or they wait for something else on a loop they keep busy
  (64 awaiting 50 ms each on a slow worker). No window's figures tell these apart, so it probes:
  the limit goes down to three quarters of the most that ran, and once the tasks running then
  have ended (:data:`PROBE_TASKS` times their mean time here) it stays down only if that time
  fell to :data:`PROBE_GAIN` of what it was; else the limit before comes back and no probe is
  tried for :data:`PROBE_HOLD` seconds;
* otherwise it stays.

The queue's prefetch follows the limit (:attr:`AdaptiveLimit.prefetch`), so tasks the worker
would not start yet stay with the broker: another replica can take them, and no lease runs out
in a worker's buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import deque
from collections.abc import Callable

from llamactl.server.mq.base import Prefetch

__all__ = ["BUSY", "FLOOR", "IDLE", "STARVED", "WINDOW", "AdaptiveLimit", "Slot", "ThreadBusyClock"]

FLOOR = 4
"""The fewest a worker runs at once when its tasks compute: two and one starved it between a
result and the next delivery (measured: 2 at once went 0.82x the speed of 4)."""
WINDOW = 0.05
"""Seconds of tasks running between two decisions."""
BUSY = 0.85
"""Share of the time tasks ran that the loop's thread was busy, at or above which they compute."""
IDLE = 0.6
"""Share below which they wait on something else."""
STARVED = 0.1
"""Share of a window with no task running, at or above which computing tasks came in waves."""
PROBE_TASKS = 2.0
"""A probe is judged after this many times the tasks' mean time in the worker (the tasks that ran
when it began end under the old limit)."""
PROBE_GAIN = 0.9
"""A lower limit stays if the tasks' mean time in the worker fell at least to this share."""
PROBE_HOLD = 2.0
"""Seconds without a probe after one that did not pay."""


class ThreadBusyClock:
    """Seconds the thread that first calls it has been on a CPU or waiting for one.

    Waiting for a CPU counts: a worker whose loop has work but shares the machine is busy, not
    idle. Falls back to the thread's CPU time where ``/proc/thread-self/schedstat`` is missing.
    """

    def __init__(self) -> None:
        self._fd: int | None = None
        self._opened = False

    def __call__(self) -> float:
        if not self._opened:
            self._opened = True
            with contextlib.suppress(OSError):
                self._fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        if self._fd is not None:
            try:
                on_cpu, waiting, _ = os.pread(self._fd, 128, 0).split()
                return (int(on_cpu) + int(waiting)) / 1e9
            except (OSError, ValueError):
                self.close()
        return time.thread_time()

    def close(self) -> None:
        """Close the file it reads (it reads the thread's CPU time after that)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


class Slot:
    """One task's place under the limit, taken before its delivery arrives: :meth:`begin` says
    the task runs, :meth:`release` gives the place back (once, however often called)."""

    __slots__ = ("_begun", "_limit", "_released", "_since")

    def __init__(self, limit: AdaptiveLimit) -> None:
        self._limit = limit
        self._begun = False
        self._released = False
        self._since = 0.0

    def begin(self) -> None:
        """The task runs from now (a place waiting for a delivery is not a running task)."""
        if not self._begun and not self._released:
            self._begun = True
            self._since = self._limit._begin()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limit._release(self._since if self._begun else None)


class AdaptiveLimit:
    """A semaphore whose size follows what the running tasks do (see the module's docstring)."""

    def __init__(
        self,
        maximum: int,
        *,
        floor: int = FLOOR,
        window: float = WINDOW,
        clock: Callable[[], float] = time.perf_counter,
        busy_clock: Callable[[], float] | None = None,
    ) -> None:
        self.maximum = max(1, maximum)
        self.floor = max(1, min(floor, self.maximum))
        self.window = window
        self._clock = clock
        self._busy_clock = busy_clock if busy_clock is not None else ThreadBusyClock()
        self.prefetch = Prefetch(self.maximum)
        """The queue's prefetch: the limit, for the ``consume`` iterator of this worker."""
        self._in_use = 0
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._window_start: float | None = None
        self._busy_start = 0.0
        self._running_since = 0.0
        self._running_time = 0.0
        self._peak = 0
        self._full = False
        self._finished = 0  # tasks that ended in this window
        self._finished_time = 0.0  # the sum of their times since they began
        self._probe: tuple[int, float, float] | None = None  # limit and mean time before, judged at
        self._no_probe_until = 0.0

    @property
    def limit(self) -> int:
        """How many may run at once right now."""
        return self.prefetch.value

    @property
    def in_use(self) -> int:
        """Slots taken right now (running tasks, and the one waiting for its delivery)."""
        return self._in_use

    @property
    def running(self) -> int:
        """Tasks running right now."""
        return self._running

    async def acquire(self) -> Slot:
        """Wait for a free slot and take it."""
        while self._in_use >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        self._in_use += 1
        return Slot(self)

    def _begin(self) -> float:
        now = self._clock()
        if self._window_start is None or (self._running == 0 and now - self._running_since > self.window):
            # The first task, or the first after the worker had none for longer than a window: no
            # load is not waves, so the idle time before it counts for nothing.
            self._window_start, self._busy_start = now, self._busy_clock()
            self._running_time, self._peak, self._full = 0.0, 0, False
        if self._running == 0:
            self._running_since = now
        self._running += 1
        self._peak = max(self._peak, self._running)
        self._full = self._full or self._running >= self.limit
        return now

    def _release(self, since: float | None) -> None:
        self._in_use -= 1
        if since is not None:
            now = self._clock()
            self._running -= 1
            self._finished += 1
            self._finished_time += now - since
            due = self._window_start is not None and now - self._window_start >= self.window
            if self._running == 0 or due:
                self._running_time += now - self._running_since
                self._running_since = now
            if due:
                self._decide(now)
        self._wake()

    def _decide(self, now: float) -> None:
        assert self._window_start is not None
        busy_now = self._busy_clock()
        share = (busy_now - self._busy_start) / self._running_time if self._running_time > 0 else 0.0
        starved = 1.0 - self._running_time / (now - self._window_start) if now > self._window_start else 0.0
        mean = self._finished_time / self._finished if self._finished else None
        limit, reverted = self._judge(now, mean, starved)
        lower = max(self.floor, min(limit, self._peak) * 3 // 4)
        if reverted:
            pass  # the probe's limit came back: this window decides nothing else
        elif share >= BUSY and starved >= STARVED:
            limit, self._probe = lower, None
        elif share < IDLE and self._full:
            limit, self._probe = min(self.maximum, limit * 2), None
        elif share >= BUSY and mean is not None and lower < limit and self._may_probe(now):
            # Saturated and never starved: the tasks wait for the loop, or for something else
            # (64 awaiting 50 ms each keep a slow loop busy too). Try fewer, and keep fewer only
            # if the tasks' time here falls with it (see _judge).
            self._probe = (limit, mean, now + max(self.window, PROBE_TASKS * mean))
            limit = lower
        self.prefetch.set(limit)
        self._window_start, self._busy_start = now, busy_now
        self._running_time = 0.0
        self._peak = self._running
        self._full = self._running >= limit
        self._finished, self._finished_time = 0, 0.0

    def _may_probe(self, now: float) -> bool:
        return self._probe is None and now >= self._no_probe_until

    def _judge(self, now: float, mean: float | None, starved: float) -> tuple[int, bool]:
        """The limit after a probe's verdict once due, and whether it went back: the lower one
        stays if the tasks' time here fell with it (they had queued for the loop) and the loop
        was not left without a task; else the one before comes back, and no probe is tried for
        :data:`PROBE_HOLD` seconds."""
        if self._probe is None or mean is None:
            return self.limit, False
        before, before_mean, due = self._probe
        if now < due:
            return self.limit, False
        self._probe = None
        if mean <= before_mean * PROBE_GAIN and starved < STARVED:
            return self.limit, False
        self._no_probe_until = now + PROBE_HOLD
        return before, True

    def _wake(self) -> None:
        free = self.limit - self._in_use
        for waiter in list(self._waiters):
            if free <= 0:
                break
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def close(self) -> None:
        """Let go of what the busy clock holds open."""
        if isinstance(self._busy_clock, ThreadBusyClock):
            self._busy_clock.close()
