"""The broker's one timer: leases and redelivery delays that fall due, silent peers, and the
journal's pruning of settled messages, each looked at when its next deadline comes.

One loop timer is armed for the earliest deadline of the three; :meth:`Housekeeping.rearm` is
called after anything that may have brought a deadline closer (a new lease, a delay), and only
moves the timer earlier (a later deadline is picked up when the timer fires).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from .dispatch import Dispatcher
from .journal import Journal
from .peers import Peers
from .streams import Streams

__all__ = ["STREAM_RETENTION", "Housekeeping"]

STREAM_RETENTION = 7 * 24 * 3600.0
"""Seconds a stream message (an event sent into a task, a cancel) stays in the journal: a task that
runs again after a crash reads its inputs from the start."""

_PRUNE_BATCH = 1000


class Housekeeping:
    """Runs the broker's deadlines on ``loop``; ``drop_peer(ident, reason)`` forgets a silent peer.

    ``retention``: seconds a settled work message stays in the journal (see the broker).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        dispatcher: Dispatcher,
        peers: Peers,
        journal: Journal,
        streams: Streams,
        drop_peer: Callable[[bytes, str], None],
        heartbeat_interval: float,
        retention: float,
    ) -> None:
        self._loop = loop
        self._dispatcher = dispatcher
        self._peers = peers
        self._journal = journal
        self._streams = streams
        self._drop_peer = drop_peer
        self._hb = heartbeat_interval
        self._retention = retention
        self._prune_every = min(60.0, max(0.5, retention / 10))
        now = loop.time()
        self._next_peer_check = now + heartbeat_interval / 2
        self._next_prune = now + self._prune_every
        self._timer: asyncio.TimerHandle | None = None
        self._timer_when = 0.0
        self._stopped = False

    def rearm(self) -> None:
        """Make sure the timer fires by the earliest deadline due."""
        if self._stopped:
            return
        when = min(self._next_peer_check, self._next_prune)
        nxt = self._dispatcher.next_deadline()
        if nxt is not None and nxt < when:
            when = nxt
        if self._timer is not None:
            if when >= self._timer_when - 0.0005:
                return
            self._timer.cancel()
        self._timer_when = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def stop(self) -> None:
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._stopped:
            return
        now = self._loop.time()
        late = now - self._timer_when
        if late > self._hb:
            # Our own loop was held: nobody could be heard, so their silence proves nothing.
            self._peers.excuse(now, self._hb)
            self._dispatcher.excuse(now, late)
        if now >= self._next_peer_check:
            self._next_peer_check = now + self._hb / 2
            for ident in self._peers.silent(now):
                self._drop_peer(ident, "consumer lost")
        if now >= self._next_prune:
            self._prune(now)
        self._dispatcher.tick()
        self.rearm()

    def _prune(self, now: float) -> None:
        wall = time.time()
        pruned = self._journal.prune(wall - self._retention, wall - STREAM_RETENTION, _PRUNE_BATCH)
        if pruned:
            self._streams.forget_ends()
        # A full batch: more are due, go on soon (a batch at a time keeps the loop responsive).
        self._next_prune = now + (0.05 if pruned >= _PRUNE_BATCH else self._prune_every)
