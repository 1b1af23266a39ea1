"""Results handed to an in-process consumer without being journaled (the broker's ``direct_topics``).

A worker's result (``ACKPUB``) to the control plane's topic would cost a journal write and a
commit before the control plane could even see it; the control plane, in the broker's own
process, then stores it in its state store anyway. So for these topics the broker settles the
delivered message in memory, answers the worker and delivers the result at once, unjournaled.
The journal keeps the settled message pending until the result is done (acked, discarded or
dead-lettered: see :meth:`Dispatcher.journal_done`), so a crash in between brings the message
back to run again: at least once, and the result is never lost.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection
from typing import Any

from . import wire
from .confirms import SettlingPublish
from .dispatch import Dispatcher, Entry, Submit

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
    ) -> None:
        self._topics = frozenset(topics)
        self._confirm = confirm or send
        """How a result's ``PUBACK`` goes (the broker holds it for the worker's next message)."""
        self._dispatcher = dispatcher
        self._submit = submit
        self._send = send
        self._seq = itertools.count(DIRECT_SEQ_BASE)
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
        known = d.find(topic, msg_id)
        if known is not None:  # the same result, for a second message of the same work
            if known.settles is None:
                known.settles = settles
            elif settles is not None:
                self._submit(("done", *settles), now=True)
            self._confirm(token.ident, [wire.PUBACK, token.req, wire.u64(known.seq)])
            return
        seq = next(self._seq)
        self._confirm(token.ident, [wire.PUBACK, token.req, wire.u64(seq)])
        d.add(Entry(topic, seq, msg_id, key, headers, payload, journaled=False, settles=settles))
