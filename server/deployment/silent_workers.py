"""Local workers whose process runs but says nothing any more, killed so that they start again.

A worker reports to the control plane from its event loop, and a watchdog thread inside it ends
the worker when user code blocks that loop too long (``services/watchdog.py``: the lease plus
5 s). Neither can act when the whole process is held: stopped (SIGSTOP, a Ctrl-Z that reached
it, a debugger), frozen in a C call that keeps the GIL (a regular expression that backtracks for
ever), stuck in the kernel. Its service then had one worker fewer for good (none, with
``replicas: 1``) and the server said only that it had no worker ready. Here, a worker declared
gone by the liveness watch, silent for :func:`silent_limit` seconds since its own last report,
whose process still runs, is killed (SIGKILL: nothing in it answers SIGTERM) and restarted by
the supervisor as after a crash.

A host of workers without a control plane (`llamactl worker`) hears no reports: there,
:class:`StoppedWorkers` kills a worker whose process has been stopped for as long (read from
``/proc``; the GIL-frozen case is its own watchdog's, as everywhere).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable

from llamactl.server.control_plane import ServiceRegistry
from llamactl.server.supervisor import Supervisor
from llamactl.server.types import ReplicaState

__all__ = ["CHECK_EVERY", "SilentWorkers", "StoppedWorkers", "silent_limit"]

log = logging.getLogger(__name__)

CHECK_EVERY = 5.0
"""Seconds between two looks."""
_BEYOND_WATCHDOG = 30.0
"""Seconds past the point where the worker's own watchdog would have ended it."""


def silent_limit(lease: float) -> float:
    """Seconds of silence after which a worker is killed: well past its watchdog's own limit
    (the lease plus 5 s, plus 3 s for an interrupt to take), so that a worker able to end itself
    always does so first."""
    return lease + _BEYOND_WATCHDOG


class _Killer(abc.ABC):
    """What both watches share: the loop, the limit, the kill and what it says."""

    def __init__(self, deployment: str, supervisor: Supervisor, limit: float) -> None:
        self._deployment = deployment
        self._supervisor = supervisor
        self.limit = limit
        self.killed = 0

    async def run(self) -> None:
        """Look every :data:`CHECK_EVERY` seconds until cancelled."""
        while True:
            await asyncio.sleep(CHECK_EVERY)
            self.check()

    @abc.abstractmethod
    def check(self, now: float | None = None) -> None:
        """Kill the workers past the limit (``now``: the time, for tests)."""

    def _kill(self, key: str, pid: int, why: str) -> bool:
        if not self._supervisor.kill(key):
            return False
        self.killed += 1
        log.warning(
            "deployment %s: worker %s (pid %d) %s: killed; it starts again", self._deployment, key, pid, why
        )
        return True


class SilentWorkers(_Killer):
    """``await SilentWorkers(...).run()`` until cancelled: kills the silent local workers."""

    def __init__(
        self,
        deployment: str,
        *,
        registry: ServiceRegistry,
        supervisor: Supervisor,
        service_of: Callable[[str], str | None],
        limit: float,
    ) -> None:
        super().__init__(deployment, supervisor, limit)
        self._registry = registry
        self._service_of = service_of
        self._heard: dict[str, tuple[int, float]] = {}
        """key -> (pid, its last report) as the registry last had it, kept after the registry
        forgets a gone replica."""

    def check(self, now: float | None = None) -> None:
        """Kill each local worker silent past the limit whose process still runs."""
        now = time.time() if now is None else now
        views = self._supervisor.replicas()
        for key in [k for k in self._heard if k not in views]:
            del self._heard[key]
        for key, view in views.items():
            service_id = self._service_of(key)
            if view.pid is None or view.state != "running" or service_id is None:
                continue
            replica = next(
                (r for r in self._registry.status(service_id).replicas if r.replica_id == key), None
            )
            if replica is not None and replica.pid == view.pid and replica.last_heartbeat is not None:
                self._heard[key] = (view.pid, replica.last_heartbeat)
                if replica.state is not ReplicaState.CRASHED:
                    continue  # alive, or the liveness watch holds back (the queue is down)
            elif replica is not None or self._heard.get(key, (None, 0.0))[0] != view.pid:
                continue  # this process has not reported yet: still starting
            # declared gone (or forgotten since) while this very process still runs
            pid, last = self._heard[key]
            why = (
                f"has said nothing for {now - last:.0f} s though its process runs "
                "(stopped, or frozen in code that holds the GIL)"
            )
            if now - last >= self.limit and self._kill(key, pid, why):
                del self._heard[key]


class StoppedWorkers(_Killer):
    """``await StoppedWorkers(...).run()`` until cancelled: kills the workers of this host whose
    process has been stopped for ``limit`` seconds. For a host with no control plane to hear
    them; a look that comes late (this process was itself held) starts every count again."""

    def __init__(self, deployment: str, *, supervisor: Supervisor, limit: float) -> None:
        super().__init__(deployment, supervisor, limit)
        self._running: dict[str, tuple[int, float]] = {}
        """key -> (pid, when it was last seen not stopped, or first seen)."""
        self._last_look: float | None = None

    def check(self, now: float | None = None) -> None:
        """Kill each worker stopped past the limit."""
        now = time.time() if now is None else now
        late = self._last_look is not None and now - self._last_look > 3 * CHECK_EVERY
        self._last_look = now
        views = self._supervisor.replicas()
        for key in [k for k in self._running if k not in views]:
            del self._running[key]
        for key, view in views.items():
            seen = self._running.get(key)
            if view.pid is None or view.state != "running":
                self._running.pop(key, None)
            elif late or seen is None or seen[0] != view.pid or not self._supervisor.stopped(key):
                self._running[key] = (view.pid, now)
            elif now - seen[1] >= self.limit:
                why = f"has been stopped for {now - seen[1]:.0f} s (a SIGSTOP, or a debugger holds it)"
                if self._kill(key, view.pid, why):
                    del self._running[key]
