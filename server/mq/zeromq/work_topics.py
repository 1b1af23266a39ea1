"""The dispatcher's messages by work topic: what is pending, in which order, and what changed.

A message is *pending* from the moment it is committed (or recovered, or taken back) until it is
settled (:meth:`WorkTopics.finish`). While pending it sits in its topic's ``entries`` (by sequence
number) and ``by_id``, and, with a non-empty key, in that key's FIFO. It is *offered* (put in a
ready heap, or in the delayed heap until its ``not_before``) only while it heads its key's FIFO;
settling the head offers the next of the key. A topic whose ready set or subscriptions changed is
*dirty*: the dispatcher looks at dirty topics only. See :mod:`.dispatch` for the rules.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

from .entries import Entry, Topic

__all__ = ["WorkTopics"]


class WorkTopics:
    """Pending messages, per-key FIFOs, ready and delayed heaps of every work topic of a broker,
    and the set of topics with something new to dispatch. ``clock`` is the loop's clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._topics: dict[str, Topic] = {}
        self.dirty: set[str] = set()
        """Topics whose ready messages or subscriptions changed since the dispatcher last looked."""

    def get(self, name: str) -> Topic | None:
        """The topic's state, if it has pending messages or subscriptions."""
        return self._topics.get(name)

    def topic(self, name: str) -> Topic:
        """The topic's state, made if new."""
        t = self._topics.get(name)
        if t is None:
            t = self._topics[name] = Topic()
        return t

    def track(self, entry: Entry) -> Topic:
        """Count ``entry`` pending in its topic (and its key's FIFO); it is not offered yet."""
        t = self.topic(entry.topic)
        t.entries[entry.seq] = entry
        t.by_id[entry.msg_id] = entry
        if entry.key:
            t.keys.setdefault(entry.key, deque()).append(entry)
        return t

    def find(self, topic: str, msg_id: str) -> Entry | None:
        """The pending message of ``topic`` with this id, if any."""
        return t.by_id.get(msg_id) if (t := self._topics.get(topic)) is not None else None

    def holds_key(self, topic: str, key: str) -> bool:
        """True if a message of ``topic`` with this key is pending (what comes next waits for it)."""
        t = self._topics.get(topic)
        return t is not None and key in t.keys

    def offer(self, t: Topic, e: Entry) -> None:
        """Make ``e`` ready (or delayed until its ``not_before``) if it heads its key's FIFO."""
        if e.key and t.keys[e.key][0] is not e:
            return
        if e.not_before > self._clock():
            heapq.heappush(t.delayed, (e.not_before, e.seq, e))
        else:
            heapq.heappush(t.suspects if e.suspect else t.runnable, (e.seq, e))
            self.dirty.add(e.topic)

    def finish(self, e: Entry) -> None:
        """``e`` is settled: no longer pending; the next message of its key is offered."""
        t = self._topics[e.topic]
        del t.entries[e.seq]
        t.by_id.pop(e.msg_id, None)
        if e.key:
            q = t.keys[e.key]
            q.popleft()
            if q:
                self.offer(t, q[0])
            else:
                del t.keys[e.key]
        self.forget_if_idle(e.topic, t)

    def forget_if_idle(self, name: str, t: Topic) -> None:
        """Drop the topic's state once it holds neither messages nor subscriptions."""
        if not t.entries and not t.subs:
            del self._topics[name]

    @staticmethod
    def eligible(t: Topic, e: Entry, now: float) -> bool:
        """True if ``e``, popped from a ready heap, may be delivered now (heaps keep stale items)."""
        return (
            e.lease_id is None
            and t.entries.get(e.seq) is e
            and e.not_before <= now
            and (not e.key or t.keys[e.key][0] is e)
        )

    def wake_delayed(self, now: float) -> None:
        """Move the delayed messages that are due to their ready heaps."""
        for t in self._topics.values():
            delayed = t.delayed
            while delayed and delayed[0][0] <= now:
                _, seq, e = heapq.heappop(delayed)
                if e.lease_id is None and t.entries.get(seq) is e:
                    heapq.heappush(t.suspects if e.suspect else t.runnable, (seq, e))
                    self.dirty.add(e.topic)

    def next_wake(self) -> float | None:
        """When the earliest delayed message is due (loop time), if any waits."""
        nxt: float | None = None
        for t in self._topics.values():
            if t.delayed and (nxt is None or t.delayed[0][0] < nxt):
                nxt = t.delayed[0][0]
        return nxt
