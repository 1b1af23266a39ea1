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
  window or more: waves, or too few tasks to bridge the server's turn between a result and the
  next delivery. The limit goes down to three quarters of the most that ran, not below
  :data:`FLOOR` (and not at all when that is no fewer than ran: it would change nothing), and
  stays down only if the time with nothing running falls to :data:`PROBE_GAIN` of what it was
  at the limit before; else that limit comes back and no probe is tried for
  :data:`PROBE_HOLD` seconds. Fewer at once end the waves; too few starve the
  worker more, not less (the workflow echo at 32 clients went down to 4 at once, starved 9-20 %
  of each window against 6-8 % at 13, and ran 0.87x as fast as with 12). So after a step down
  that did not pay, or at the floor, the next probe tries half as many more instead (while every
  slot is taken), judged the same way: a load that grows finds its way back up. (A loop kept
  busy by many waiting tasks, 64 awaiting 50 ms each, is never without a task: that is the
  third case.)
* busy less than :data:`IDLE` of the time while every slot was taken: the tasks wait on
  something else, and more could run meanwhile; the limit doubles, up to ``maximum``;
* busy at least :data:`BUSY` of the time and never without a task: either the tasks queue for
  the loop (computing tasks a replica holds more of than it can run: with ``replicas: 2`` of a
  ~5 ms CPU step one replica kept ~28 while the other, down to its floor, got 4 of each wave:
  195 tasks/s against ~300 balanced), or they wait for something else on a loop they keep busy
  (64 awaiting 50 ms each on a slow worker). No window's figures tell these apart, so it probes:
  the limit goes down to three quarters of the most that ran, and once the tasks running then
  have ended (:data:`PROBE_TASKS` times their mean time here) it stays down only if that time
  fell to :data:`PROBE_GAIN` of what it was, nearly as many tasks ended a second
  (:data:`AS_MANY`) and the loop was left without a task barely more often than before and less
  than :data:`FED` of the time (fewer computing tasks always finish sooner; too few starve the
  worker while it waits for its next delivery: the workflow echo at 32 clients went on down from
  18, never starved, to 6, starved 9-16 %, and, each step forgiven a little more starving, from
  13 to 4-6 again; fewer waiting tasks end fewer a second); else the limit before comes back and
  no probe is tried for :data:`PROBE_HOLD` seconds;
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
from dataclasses import dataclass

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
"""A lower limit stays if the tasks' mean time in the worker (a saturated loop's probe), or the
share of the time with no task running (a starved one's), fell at least to this share."""
STARVED_WEIGHT = 0.3
"""The weight of a window in the running means of a limit's windows (time with no task running,
tasks ended per second)."""
AS_MANY = 0.85
"""A saturated loop's lower limit stays only if at least this share of the tasks a second end."""
STARVED_WINDOWS = 2
"""Windows a probe needs, before it (at the limit it leaves) and during it, to judge the time
with no task running by: one window cuts a wave or two in arbitrary places. The first window at
a limit is not counted (its tasks started under the limit before)."""
PROBE_HOLD = 2.0
"""Seconds without a probe after one that did not pay."""
FED = 0.05
"""A saturated loop's lower limit stays only if the share of the time with no task running stays
below this (and rose by less than a quarter of :data:`STARVED`): each probe forgave that rise
from where the one before had left it, so steps of 2-3 points each took the workflow echo at
32 clients from 13 at once, starved 1-7 %, to 4-6, starved 8-12 %, and 0.94x as fast."""


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
        self._probe: _Probe | None = None
        self._no_probe_until = 0.0
        self._starved: float | None = None
        """The running mean of the share of each window with no task running, at this limit."""
        self._starved_windows = 0
        """The windows in that mean."""
        self._ended = 0
        self._elapsed = 0.0
        """Tasks ended, and seconds, in the windows at this limit (a rate per window would swing
        with every wave)."""
        self._try_more = False
        """The last starved loop's probe that went back had tried fewer: the next tries more."""

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
                # Decisions are taken as tasks end: tasks that hold every slot and end only after
                # minutes (each waiting for a person's answer) would hold a limit lowered while
                # earlier ones computed for all that time, so one is taken each window meanwhile.
                await asyncio.wait((waiter,), timeout=self.window)
            finally:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            if not waiter.done():
                waiter.cancel()
                self._tick()
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

    def _tick(self) -> None:
        """A window passed with no task ending while one waits for a slot: decide all the same."""
        now = self._clock()
        if self._running and self._window_start is not None and now - self._window_start >= self.window:
            self._running_time += now - self._running_since
            self._running_since = now
            self._decide(now)
            self._wake()

    def _decide(self, now: float) -> None:
        assert self._window_start is not None
        busy_now = self._busy_clock()
        share = (busy_now - self._busy_start) / self._running_time if self._running_time > 0 else 0.0
        starved = 1.0 - self._running_time / (now - self._window_start) if now > self._window_start else 0.0
        mean = self._finished_time / self._finished if self._finished else None
        starved_before, windows_before = self._starved, self._starved_windows
        ended_before, elapsed_before = self._ended, self._elapsed
        if windows_before:  # the first window at a limit is not counted
            self._starved = starved if starved_before is None else _weigh(starved_before, starved)
            self._ended += self._finished
            self._elapsed += now - self._window_start
        self._starved_windows += 1
        limit, reverted = self._judge(now, mean, starved, now - self._window_start)  # sets the means
        lower = max(self.floor, min(limit, self._peak) * 3 // 4)
        if reverted:
            pass  # the probe's limit came back: this window decides nothing else
        elif share >= BUSY and starved >= STARVED:
            # Waves, or too few at once to bridge the server's turn: try fewer (or, after fewer
            # did not pay, or at the floor, more while every slot is taken), and keep the new
            # limit only if the loop is left without a task less often (see _judge).
            if self._may_probe(now) and windows_before > STARVED_WINDOWS:
                assert starved_before is not None
                more = min(self.maximum, limit * 3 // 2)
                up = more > limit and self._full and (self._try_more or lower >= limit)
                target = more if up else lower
                # A lower limit not below the most that ran changes nothing: no probe, and no
                # hold after it (one task at a time held every probe back into the next load).
                if target != limit and (up or lower < self._peak):
                    self._probe = _Probe(limit, now + self._probe_time(mean), starved=starved_before)
                    limit = target
        elif share < IDLE and self._full:
            limit, self._probe = min(self.maximum, limit * 2), None
            self._starved, self._starved_windows = None, 0  # the new limit's, from its windows
            self._ended, self._elapsed = 0, 0.0
        elif (
            share >= BUSY
            and mean is not None
            and lower < min(limit, self._peak)
            and self._may_probe(now)
            and windows_before > STARVED_WINDOWS
        ):
            # Saturated and never starved: the tasks wait for the loop, or for something else
            # (64 awaiting 50 ms each keep a slow loop busy too). Try fewer, and keep fewer only
            # if the tasks' time here falls with it and the loop is not left without a task
            # more often (see _judge).
            assert starved_before is not None
            self._probe = _Probe(
                limit,
                now + self._probe_time(mean),
                mean=mean,
                starved_at=starved_before,
                ended_at=ended_before,
                elapsed_at=elapsed_before,
            )
            limit = lower
        self.prefetch.set(limit)
        self._window_start, self._busy_start = now, busy_now
        self._running_time = 0.0
        self._peak = self._running
        self._full = self._running >= limit
        self._finished, self._finished_time = 0, 0.0

    def _may_probe(self, now: float) -> bool:
        return self._probe is None and now >= self._no_probe_until

    def _probe_time(self, mean: float | None) -> float:
        return max(self.window, PROBE_TASKS * mean) if mean is not None else self.window

    def _judge(self, now: float, mean: float | None, starved: float, length: float) -> tuple[int, bool]:
        """The limit after a probe's verdict once due, and whether it went back. A saturated
        loop's lower limit stays if the tasks' time here fell with it (they had queued for the
        loop) and the loop was not left without a task; a starved loop's, if it was left without
        a task less often over the probe's windows. Else the one before comes back (with the
        running mean of its windows), and no probe is tried for :data:`PROBE_HOLD` seconds."""
        probe = self._probe
        if probe is None:
            return self.limit, False
        if probe.windows:  # the first window at the lower limit is not counted
            probe.starved_sum += starved
            probe.ended += self._finished
            probe.elapsed += length
        probe.windows += 1
        if now < probe.due:
            return self.limit, False
        if probe.windows <= STARVED_WINDOWS or (probe.mean is not None and mean is None):
            return self.limit, False  # windows enough, and a task that ended, to judge by
        self._probe = None
        self._starved_windows = probe.windows
        during = probe.starved_sum / (probe.windows - 1)
        if probe.starved is not None:
            kept = during <= probe.starved * PROBE_GAIN
        else:
            # Fewer at once always finish sooner when they compute; they pay only while as many
            # end each second (tasks that wait end fewer: 36 of 64 awaiting 50 ms each) and the
            # worker stays fed (a limit that starves it costs more than the waiting it saves).
            fed = during < min(FED, probe.starved_at + STARVED / 4)
            as_many = probe.ended * probe.elapsed_at >= probe.ended_at * probe.elapsed * AS_MANY
            sooner = mean is not None and probe.mean is not None and mean <= probe.mean * PROBE_GAIN
            kept = fed and as_many and sooner
        if kept:
            self._starved, self._ended, self._elapsed = during, probe.ended, probe.elapsed
            return self.limit, False
        self._no_probe_until = now + PROBE_HOLD
        self._starved = probe.starved if probe.starved is not None else probe.starved_at
        self._ended, self._elapsed = probe.ended_at, probe.elapsed_at
        if probe.starved is not None:
            self._try_more = self.limit < probe.before  # the other way next time
        return probe.before, True

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


@dataclass(slots=True)
class _Probe:
    """A lower limit on trial: the limit before, when it is judged, and what judges it: the
    tasks' mean time before (a saturated loop) or the share of the time with no task running
    before (a starved one), with the windows seen since."""

    before: int
    due: float
    mean: float | None = None
    starved: float | None = None
    starved_at: float = 0.0
    """The share with no task running before a saturated loop's probe (which it may not raise)."""
    ended_at: int = 0
    elapsed_at: float = 0.0
    """Tasks ended, and seconds, at the limit before (a probe of a saturated loop may not end
    fewer a second)."""
    ended: int = 0
    elapsed: float = 0.0
    starved_sum: float = 0.0
    windows: int = 0


def _weigh(mean: float, value: float) -> float:
    return mean + STARVED_WEIGHT * (value - mean)
