"""Results handed by a call to a consumer in the broker's own process (see :mod:`.direct`).

The control plane consumes the workers' results in the broker's own process and loop. Going
through the dispatcher cost each result a lease, a ``DELIVER``, an ``ACK`` request and its
answer, all framed, carried over the :class:`~.local.LocalLink` a loop turn at a time and parsed
again, for a message that never leaves the process. So while such a consumer has room (fewer
results held than its prefetch), the broker hands a result to it directly: the consumer gets a
delivery whose ack settles it where it is. What it cannot take, and what it gives back (a nack,
its iterator closed before handing the result out, its client closed while holding it), goes
to the dispatcher and is delivered the usual way. Nothing changes on a crash: such a result is
held in memory either way, and the task's start message brings the task back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from llamactl.server.mq.base import Message

__all__ = ["GiveBack", "LocalResults", "LocalSink"]

GiveBack = Callable[[float, bool], None]
"""Return a result to the dispatcher: ``(delay, charge)``, as a released lease (a nack charges)."""


class LocalSink(Protocol):
    """A consumer that can take a result by a call."""

    def offer(self, message: Message, give_back: GiveBack) -> bool:
        """Take ``message`` (True) or leave it to the dispatcher (False: closed, or full)."""
        ...


class LocalResults:
    """The in-process consumers of each topic, offered each result in turn."""

    def __init__(self) -> None:
        self._sinks: dict[str, list[LocalSink]] = {}

    def register(self, topic: str, sink: LocalSink) -> None:
        self._sinks.setdefault(topic, []).append(sink)

    def unregister(self, topic: str, sink: LocalSink) -> None:
        sinks = self._sinks.get(topic)
        if sinks is not None and sink in sinks:
            sinks.remove(sink)
            if not sinks:
                del self._sinks[topic]

    def offer(self, message: Message, give_back: GiveBack) -> bool:
        """Hand ``message`` to the first consumer of its topic with room; False if none took it."""
        sinks = self._sinks.get(message.topic)
        if sinks:
            for sink in sinks:
                if sink.offer(message, give_back):
                    return True
        return False
