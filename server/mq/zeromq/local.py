"""A transport for a client that lives in the broker's own process and event loop.

The control plane runs next to the embedded broker; talking to it over a TCP socket would cost
two ZeroMQ sends, two receives and their Python framing per message for nothing. A
:class:`LocalLink` carries the very same frames by direct calls instead, batched once per loop
iteration, so the client keeps every behaviour of the protocol (leases, acks, heartbeats,
redelivery) and only the copying goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

__all__ = ["FrameHandler", "LocalLink", "Transport"]

Frames = list[bytes]
FrameHandler = Callable[[list[Frames]], None]


class Transport(Protocol):
    """What a client or the broker needs of its link: send frames, and close."""

    def send(self, frames: Frames) -> bool: ...

    def close(self) -> None: ...


class LocalLink:
    """One direction of an in-process link: ``send`` queues frames, the loop hands them over."""

    def __init__(self, deliver: FrameHandler) -> None:
        self._deliver = deliver
        self._loop = asyncio.get_running_loop()
        self._pending: list[Frames] = []
        self._scheduled = False
        self._closed = False

    def send(self, frames: Frames) -> bool:
        if self._closed:
            return False
        self._pending.append(frames)
        if not self._scheduled:
            self._scheduled = True
            # Never deliver re-entrantly: the receiver may be in the middle of handling a batch.
            self._loop.call_soon(self._flush)
        return True

    def _flush(self) -> None:
        self._scheduled = False
        if self._closed or not self._pending:
            return
        batch, self._pending = self._pending, []
        self._deliver(batch)

    def close(self) -> None:
        self._closed = True
        self._pending.clear()
