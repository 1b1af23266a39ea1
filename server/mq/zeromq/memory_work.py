"""Work messages that an in-process publisher restores itself: held in memory, never journaled.

The control plane, in the broker's own process, keeps every task it hands out in its state store
and publishes the task's start message again (same msg id) after a restart, so journaling that
message as well wrote the same fact twice: a commit on the way in, then a lease, a DELETE and an
UPDATE, per task. Such a message (``PUBMEM``, taken only from a client linked in this process,
see :meth:`ZeroMQQueue.publish_restorable`) goes to the dispatcher at once: nothing of it, its
leases, releases or settlement, is written anywhere, and a full journal disk does not hold it up.

It starts with the deliveries its publisher knows of (``attempts``), all but the last of them
counted as failures (the last may have ended in the restart itself, which is not the message's
fault), so ``max_attempts`` still holds across restarts. Its seq comes from a range above every
journaled seq and below the direct results' (:data:`.direct.DIRECT_SEQ_BASE`), started from the
wall clock, so a restarted broker never hands out a seq that a worker of the last run may still
name in a result; among the messages waiting on one topic, journaled ones therefore go first.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

from llamactl.server.mq.topics import is_work_topic, validate_topic

from . import wire
from .dispatch import Dispatcher, Entry

__all__ = ["RESTORABLE_SEQ_BASE", "MemoryWork"]

RESTORABLE_SEQ_BASE = 1 << 61
"""Seqs of work held in memory start here (plus the microseconds since the epoch at start)."""


class MemoryWork:
    """Takes ``PUBMEM`` publishes into the dispatcher, answering each at once."""

    def __init__(self, dispatcher: Dispatcher, send: Callable[[bytes, list[bytes]], bool]) -> None:
        self._dispatcher = dispatcher
        self._send = send
        self._seq = itertools.count(RESTORABLE_SEQ_BASE + time.time_ns() // 1000)

    def publish(self, ident: bytes, frames: list[bytes]) -> None:
        """Take ``PUBMEM req topic msg_id key payload attempts`` (after ident and command): add
        the message, or find the pending one of the same id, and confirm it."""
        _, _, req, topic_b, msg_id_b, key_b, payload, attempts_b = frames
        topic, msg_id = topic_b.decode(), msg_id_b.decode()
        try:
            validate_topic(topic)
        except ValueError as exc:
            self._send(ident, [wire.PUBNACK, req, str(exc).encode()])
            return
        if not is_work_topic(topic):
            self._send(ident, [wire.PUBNACK, req, f"PUBMEM takes a work topic, not {topic!r}".encode()])
            return
        known = self._dispatcher.topics.find(topic, msg_id)
        if known is not None:
            self._send(ident, [wire.PUBACK, req, wire.u64(known.seq)])
            return
        seq = next(self._seq)
        self._send(ident, [wire.PUBACK, req, wire.u64(seq)])
        attempts = wire.from_u32(attempts_b)
        failures = max(0, attempts - 1)
        entry = Entry(topic, seq, msg_id, key_b.decode(), b"", payload, attempts, failures, journaled=False)
        self._dispatcher.add(entry)
