"""The control plane's watch on its replicas' liveness and on its message queue.

Every heartbeat interval: replicas silent for ``liveness`` intervals are declared gone, except
while the queue, which carries their heartbeats, is unreachable (and for one window after, while
they come through again: silence says nothing of a replica then; the same after this process
itself was held, or the machine slept). The queue's outage goes into
the change feed when it begins and when it ends (the dashboard shows it; the store, and so the
feed, may well be up meanwhile), and once the queue answers after an outage or says that it lost
what it held (:attr:`MessageQueue.losses`: a Redis restarted without its data, a ``FLUSHALL``),
every unfinished task is handed out again, as after a restart of the server; a copy the queue
still holds is absorbed by its msg_id.
"""

from __future__ import annotations

import asyncio
import logging
import time

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.dispatcher import Dispatcher
from llamactl.server.control_plane.registry import ServiceRegistry
from llamactl.server.control_plane.replica_mirror import ReplicaMirror
from llamactl.server.mq.base import MessageQueue
from llamactl.server.outage import Outage

__all__ = ["LivenessWatch"]

log = logging.getLogger(__name__)


class LivenessWatch:
    """``await watch.run()`` (a control plane loop) until cancelled."""

    def __init__(
        self,
        deployment: str,
        *,
        registry: ServiceRegistry,
        queue: MessageQueue,
        changes: ChangeFeed,
        dispatcher: Dispatcher,
        mirror: ReplicaMirror | None,
    ) -> None:
        self._deployment = deployment
        self._registry = registry
        self._queue = queue
        self._changes = changes
        self._dispatcher = dispatcher
        self._mirror = mirror
        self._reported: Outage | None = None
        """The queue's outage as last put in the change feed."""
        self._recovered = queue.losses
        """The queue's count of losses when unfinished tasks were last handed out again."""

    async def run(self) -> None:
        interval = self._registry.heartbeat_interval
        window = interval * self._registry.liveness
        quiet_until = 0.0
        while True:
            asleep = time.time()
            await asyncio.sleep(interval)
            if time.time() - asleep > 2 * interval:
                # This process was held (Ctrl-Z, SIGSTOP, a debugger) or the machine slept:
                # nobody could be heard meanwhile, so a replica's silence says nothing yet.
                quiet_until = max(quiet_until, time.time() + window)
            if self._mirror is not None:
                await self._mirror.sync()  # what other control planes heard
            now = time.time()
            outage = self._queue.outage
            self._report(outage, now)
            if outage is None and self._queue.losses != self._recovered:
                await self._recover()
            if outage is not None:
                quiet_until = now + window
            elif now >= quiet_until:
                self._registry.expire(now)

    async def _recover(self) -> None:
        losses = self._queue.losses
        sent = await self._dispatcher.recover()
        self._recovered = losses
        if sent:
            log.info(
                "deployment %s: the message queue may have lost what it held: "
                "handed out %d unfinished task(s) again",
                self._deployment,
                sent,
            )

    def _report(self, outage: Outage | None, now: float) -> None:
        reported = self._reported
        if (outage is None) == (reported is None):
            return
        self._reported = outage
        if outage is not None:
            data: dict[str, object] = {
                "where": outage.where,
                "since": outage.since,
                "error": outage.error,
                "state": outage.state,
            }
            self._changes.emit("queue.unreachable", data)
        elif reported is not None:
            lasted = round(now - reported.since, 1)
            self._changes.emit("queue.reachable", {"where": reported.where, "unreachable_for": lasted})
