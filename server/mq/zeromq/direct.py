"""Results handed to an in-process consumer without being journaled (the broker's ``direct_topics``).

A worker's result (``ACKPUB``) to the control plane's topic would cost a journal write and a
commit before the control plane could even see it; the control plane, in the broker's own
process, then stores it in its state store anyway. So for these topics the broker settles the
delivered message in memory, answers the worker and delivers the result at once, unjournaled.
The journal keeps the settled message pending until the result is done (acked, discarded or
dead-lettered: see :meth:`Dispatcher.journal_done`), so a crash in between brings the message
back to run again: at least once, and the result is never lost. A result that settles nothing
in the journal (its message was held in memory) goes by a call to a consumer in this process
when one has room (:mod:`.local_results`), and through the dispatcher otherwise.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection
from typing import Any

from llamactl.server.mq.base import Message

from . import wire
from .confirms import SettlingPublish
from .dispatch import Dispatcher, Entry, Submit
from .local_results import LocalResults

__all__ = ["DIRECT_SEQ_BASE", "DirectResults"]

DIRECT_SEQ_BASE = 1 << 62
"""Seqs of results handed over unjournaled start here, far above any journaled seq."""


class DirectResults:
    """Which topics take results directly, and the hand-over itself."""

    def __init__(
        self,
        topics: Collection[str],
        dispatcher: Dispatcher,
        submit: Submit,
        send: Callable[[bytes, list[bytes]], bool],
        *,
        confirm: Callable[[bytes, list[bytes]], bool] | None = None,
        local: LocalResults | None = None,
        taken_back: Callable[[], None] = lambda: None,
    ) -> None:
        self._topics = frozenset(topics)
        self._confirm = confirm or send
        """How a result's ``PUBACK`` goes (the broker holds it for the worker's next message)."""
        self._dispatcher = dispatcher
        self._submit = submit
        self._send = send
        self._seq = itertools.count(DIRECT_SEQ_BASE)
        self._local = local
        self._taken_back = taken_back
        """Called after a result came back from a consumer in this process (dispatch it now)."""
        self.handed_locally = 0
        """Results a consumer in this process took by a call (not through the dispatcher)."""
        self.late_results = 0
        """Results dropped because another result had settled their message first."""

    def takes(self, topic: str) -> bool:
        """True if a result to ``topic`` is handed over directly."""
        return topic in self._topics

    def hand_over(self, op: tuple[Any, ...]) -> None:
        """Settle the message a result settles (in memory; the journal writes it done once the
        result is done) and deliver the result. ``op``: the journal's ``pass`` op, whose token is
        the worker's :class:`SettlingPublish`."""
        _, token, topic, msg_id, key, headers, payload = op
        assert isinstance(token, SettlingPublish)
        d = self._dispatcher
        settled = d.settle(token.lease, token.topic, token.seq)
        if settled is None:
            # Another result settled the message first: that one is the task's (the control
            # plane keeps the first result), so this one is dropped rather than delivered.
            self.late_results += 1
            self._send(token.ident, [wire.STALE, token.req])
            return
        # A message held in memory (see .memory_work) has nothing in the journal to write done.
        settles = (token.topic, token.seq) if settled.journaled else None
        known = d.topics.find(topic, msg_id)
        if known is not None:  # the same result, for a second message of the same work
            if known.settles is None:
                known.settles = settles
            elif settles is not None:
                self._submit(("done", *settles), now=True)
            self._confirm(token.ident, [wire.PUBACK, token.req, wire.u64(known.seq)])
            return
        seq = next(self._seq)
        self._confirm(token.ident, [wire.PUBACK, token.req, wire.u64(seq)])
        # Per-key order: a result whose task's events still wait in the dispatcher goes after them.
        if settles is None and self._local is not None and not (key and d.topics.holds_key(topic, key)):
            message = Message(topic, msg_id, payload, key, seq, wire.decode_headers(headers))

            def give_back(delay: float, charge: bool) -> None:
                entry = Entry(topic, seq, msg_id, key, headers, payload, attempts=1, journaled=False)
                d.take_back(entry, delay=delay, charge=charge)
                self._taken_back()

            if self._local.offer(message, give_back):
                self.handed_locally += 1
                return
        d.add(Entry(topic, seq, msg_id, key, headers, payload, journaled=False, settles=settles))
