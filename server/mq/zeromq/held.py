"""Confirms held back to ride with the next message to their peer: one ZeroMQ message, one wake-up.

A worker's result is confirmed (``PUBACK``) as the broker takes it, and the worker's next task
follows a moment later: two messages, each waking the broker's I/O thread, the worker's I/O
thread and the worker's loop. Measured with the function echo, sending no confirm at all took
five context switches and 8-15 % of the CPU off each task. So a confirm to a peer over a socket
waits up to :data:`HOLD` seconds for the next message to that peer and goes in the same ZeroMQ
message (``Pump.send_batch``); with nothing else for that peer, it goes alone when the hold ends.
The confirm still comes, so a publish still returns only once the broker has taken its message;
what waits for it is the worker's own bookkeeping (the credit for its next task came back with
its result, not with the confirm).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["HOLD", "HeldConfirms"]

Frames = list[bytes]

HOLD = 0.005
"""Seconds a confirm waits for company: longer than the gap between a sequential client's tasks
(about a millisecond), short beside a publish's timeout (seconds)."""
LIMIT = 64
"""Confirms held for one peer at most; the next one sends them all."""


class HeldConfirms:
    """Per peer, the confirms waiting for the next message to it, and their timers."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        send: Callable[[bytes, Frames], bool],
        send_batch: Callable[[bytes, list[Frames]], bool],
        *,
        hold: float = HOLD,
        limit: int = LIMIT,
    ) -> None:
        self._loop = loop
        self._send = send
        self._send_batch = send_batch
        self._hold = hold
        self._limit = limit
        self._held: dict[bytes, list[Frames]] = {}
        self._timers: dict[bytes, asyncio.TimerHandle] = {}

    def hold(self, ident: bytes, frames: Frames) -> bool:
        """Send ``frames`` to ``ident`` with its next message, or alone within the hold."""
        held = self._held.get(ident)
        if held is None:
            self._held[ident] = [frames]
            self._timers[ident] = self._loop.call_later(self._hold, self.release, ident)
        else:
            held.append(frames)
            if len(held) >= self._limit:
                self.release(ident)
        return True

    def send(self, ident: bytes, frames: Frames) -> bool:
        """Send ``frames`` to ``ident`` now, and what waits for it in the same ZeroMQ message,
        after it (the peer starts on the new message before it settles what the confirms end).
        False if the send failed (the peer's pipe is full, or it is gone): the confirms wait again."""
        held = self.take(ident)
        if held is None:
            return self._send(ident, frames)
        if self._send_batch(ident, [frames, *held]):
            return True
        for confirm in held:
            self.hold(ident, confirm)
        return False

    def take(self, ident: bytes) -> list[Frames] | None:
        """What waits for ``ident`` (None: nothing), no longer held."""
        held = self._held.pop(ident, None)
        if held is not None:
            self._timers.pop(ident).cancel()
        return held

    def release(self, ident: bytes) -> None:
        """Send what waits for ``ident`` now (a lost send is a lost confirm: the peer asks again)."""
        held = self.take(ident)
        if held:
            self._send_batch(ident, held)

    def release_all(self) -> None:
        for ident in list(self._held):
            self.release(ident)

    def forget(self, ident: bytes) -> None:
        """``ident`` is gone: drop what waits for it."""
        self.take(ident)

    def __len__(self) -> int:
        return sum(len(held) for held in self._held.values())
