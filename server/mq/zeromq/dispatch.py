"""Work-topic delivery state of the broker: credits, leases, per-key order, redelivery.

Rules (the in-memory mirror of the journal's ``work`` table):

* A message is handed out only to a subscription (``CONSUME``) with credit > 0; each delivery
  takes one credit, and the client gives it back (``CREDIT`` or the ``sub`` of ``ACK``/``NACK``)
  once its user settled the delivery, so at most ``prefetch`` are outstanding per subscription.
  Subscriptions with credit take turns (round robin); the oldest eligible message goes first.
* A message with a non-empty ``key`` is eligible only while it is the oldest pending message of
  that key in its topic and nothing of the key is leased: per-key FIFO, one at a time. Messages
  with key ``""`` have no order among themselves.
* A delivery is a lease with a fresh ``lease_id`` (the fencing token): ``ACK``/``NACK``/``EXTEND``
  must name the current lease, otherwise they get ``STALE``. ``attempts`` counts deliveries.
* A lease ends by ack (the message is done), by nack (back to ready after ``delay``), by expiry,
  or when its owner is declared dead or says ``BYE``. A message that ends a lease without ack
  after ``max_attempts`` deliveries goes to the dead-letter topic instead of back to ready
  (dead-letter topics themselves keep redelivering). A delivery given back unused (``CANCEL``
  of a buffered one, ``RETURN``, or a send that failed) does not count as an attempt.
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from llamactl.server.mq.topics import is_dead_letter_topic

from . import wire

__all__ = ["Dispatcher", "Entry", "Sub"]


@dataclass(slots=True, eq=False)
class Entry:
    topic: str
    seq: int
    msg_id: str
    key: str
    headers: bytes
    payload: bytes
    attempts: int = 0
    lease_id: str | None = None
    owner: bytes | None = None
    sub: Sub | None = None
    lease_until: float = 0.0
    not_before: float = 0.0


@dataclass(slots=True, eq=False)
class Sub:
    peer: bytes
    sub_id: int
    topic: str
    lease: float
    credit: int
    active: bool = True
    queued: bool = False


@dataclass(slots=True, eq=False)
class _Topic:
    entries: dict[int, Entry] = field(default_factory=dict)
    keys: dict[str, deque[Entry]] = field(default_factory=dict)
    runnable: list[tuple[int, Entry]] = field(default_factory=list)
    delayed: list[tuple[float, int, Entry]] = field(default_factory=list)
    turn: deque[Sub] = field(default_factory=deque)


Send = Callable[[bytes, list[bytes]], bool]
Submit = Callable[[tuple[object, ...]], None]
OnDead = Callable[[Entry, str], None]


class Dispatcher:
    """Credits, leases and per-key order for all work topics of one broker."""

    def __init__(
        self,
        *,
        send: Send,
        submit: Submit,
        on_dead: OnDead,
        max_attempts: int,
        clock: Callable[[], float],
    ) -> None:
        self._send = send
        self._submit = submit
        self._on_dead = on_dead
        self._max_attempts = max_attempts
        self._clock = clock
        self._topics: dict[str, _Topic] = {}
        self._subs: dict[tuple[bytes, int], Sub] = {}
        self._stalled: dict[bytes, list[Sub]] = {}
        self.leases: dict[str, Entry] = {}
        self._expiry: list[tuple[float, str]] = []
        self._dirty: set[str] = set()
        self._lease_prefix = os.urandom(4).hex() + "-"
        self._lease_counter = itertools.count(1)

    # -- messages -----------------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        """A committed work message (or one recovered from the journal)."""
        t = self._topic(entry.topic)
        t.entries[entry.seq] = entry
        if entry.key:
            t.keys.setdefault(entry.key, deque()).append(entry)
        if entry.lease_id is not None:
            self.leases[entry.lease_id] = entry
            heapq.heappush(self._expiry, (entry.lease_until, entry.lease_id))
        else:
            self._offer(t, entry)

    def _topic(self, name: str) -> _Topic:
        t = self._topics.get(name)
        if t is None:
            t = self._topics[name] = _Topic()
        return t

    def _offer(self, t: _Topic, e: Entry) -> None:
        if e.key and t.keys[e.key][0] is not e:
            return
        if e.not_before > self._clock():
            heapq.heappush(t.delayed, (e.not_before, e.seq, e))
        else:
            heapq.heappush(t.runnable, (e.seq, e))
            self._dirty.add(e.topic)

    # -- subscriptions ------------------------------------------------------------------------

    def consume(self, peer: bytes, sub_id: int, topic: str, lease: float, credit: int) -> None:
        old = self._subs.pop((peer, sub_id), None)
        if old is not None:
            old.active = False
        sub = Sub(peer, sub_id, topic, lease, credit)
        self._subs[(peer, sub_id)] = sub
        self._topic(topic)
        self._queue_turn(sub)

    def credit(self, peer: bytes, sub_id: int, n: int) -> None:
        sub = self._subs.get((peer, sub_id))
        if sub is not None:
            sub.credit += n
            self._queue_turn(sub)

    def _queue_turn(self, sub: Sub) -> None:
        if sub.active and sub.credit > 0 and not sub.queued:
            sub.queued = True
            self._topics[sub.topic].turn.append(sub)
            self._dirty.add(sub.topic)

    def cancel(self, peer: bytes, sub_id: int, returned: list[str]) -> None:
        sub = self._subs.pop((peer, sub_id), None)
        if sub is not None:
            sub.active = False
        for lease_id in returned:
            self.give_back(lease_id)

    def touch(self, peer: bytes) -> None:
        """The peer was heard from: subscriptions stalled by a failed send take turns again."""
        for sub in self._stalled.pop(peer, ()):
            self._queue_turn(sub)

    def drop_peer(self, peer: bytes, reason: str) -> None:
        """The peer is gone (dead or BYE): forget its subscriptions, release its leases."""
        for key in [k for k in self._subs if k[0] == peer]:
            self._subs.pop(key).active = False
        self._stalled.pop(peer, None)
        for entry in [e for e in self.leases.values() if e.owner == peer]:
            self._release(entry, 0.0, reason)

    # -- settling -----------------------------------------------------------------------------

    def ack(self, lease_id: str, peer: bytes, sub_id: int) -> bool:
        if sub_id:
            self.credit(peer, sub_id, 1)
        e = self.leases.pop(lease_id, None)
        if e is None:
            return False
        self._finish(e)
        self._submit(("done", e.topic, e.seq))
        return True

    def nack(self, lease_id: str, peer: bytes, sub_id: int, delay: float) -> bool:
        if sub_id:
            self.credit(peer, sub_id, 1)
        e = self.leases.get(lease_id)
        if e is None:
            return False
        self._release(e, delay, "nacked")
        return True

    def extend(self, lease_id: str, seconds: float) -> bool:
        e = self.leases.get(lease_id)
        if e is None:
            return False
        e.lease_until = self._clock() + seconds
        heapq.heappush(self._expiry, (e.lease_until, lease_id))
        self._journal_lease(e)
        return True

    def give_back(self, lease_id: str) -> None:
        """Release a delivery its consumer never handed out: no attempt is counted."""
        e = self.leases.get(lease_id)
        if e is not None:
            e.attempts -= 1
            self._release(e, 0.0, "returned")

    def _finish(self, e: Entry) -> None:
        t = self._topics[e.topic]
        del t.entries[e.seq]
        if e.key:
            q = t.keys[e.key]
            q.popleft()
            if q:
                self._offer(t, q[0])
            else:
                del t.keys[e.key]

    def _release(self, e: Entry, delay: float, reason: str) -> None:
        assert e.lease_id is not None
        del self.leases[e.lease_id]
        e.lease_id = None
        e.owner = None
        e.sub = None
        if reason != "returned" and e.attempts >= self._max_attempts and not is_dead_letter_topic(e.topic):
            self._finish(e)
            self._on_dead(e, reason)
            return
        now = self._clock()
        e.not_before = now + delay if delay > 0 else 0.0
        wall = time.time() - now + e.not_before if delay > 0 else 0.0
        self._submit(("ready", e.topic, e.seq, e.attempts, wall))
        self._offer(self._topics[e.topic], e)

    def _journal_lease(self, e: Entry) -> None:
        wall = time.time() - self._clock() + e.lease_until
        self._submit(("lease", e.topic, e.seq, e.attempts, e.lease_id, e.owner, wall))

    # -- dispatching and timers -----------------------------------------------------------------

    def flush(self) -> None:
        """Hand out what can be handed out on the topics that changed since the last flush."""
        while self._dirty:
            name = self._dirty.pop()
            self._dispatch(name, self._topics[name])

    def _dispatch(self, name: str, t: _Topic) -> None:
        runnable, turn = t.runnable, t.turn
        now = self._clock()
        while runnable and turn:
            sub = turn[0]
            if not sub.active or sub.credit <= 0:
                turn.popleft().queued = False
                continue
            _, e = heapq.heappop(runnable)
            if e.lease_id is not None or t.entries.get(e.seq) is not e or e.not_before > now:
                continue
            if e.key and t.keys[e.key][0] is not e:
                continue
            e.attempts += 1
            lease_id = self._lease_prefix + str(next(self._lease_counter))
            frames = [
                wire.DELIVER,
                wire.u32(sub.sub_id),
                lease_id.encode(),
                wire.u32(e.attempts),
                name.encode(),
                wire.u64(e.seq),
                e.msg_id.encode(),
                e.key.encode(),
                e.headers,
                e.payload,
            ]
            if not self._send(sub.peer, frames):
                e.attempts -= 1
                heapq.heappush(runnable, (e.seq, e))
                turn.popleft().queued = False
                self._stalled.setdefault(sub.peer, []).append(sub)
                continue
            e.lease_id, e.owner, e.sub = lease_id, sub.peer, sub
            e.lease_until = now + sub.lease
            self.leases[lease_id] = e
            heapq.heappush(self._expiry, (e.lease_until, lease_id))
            self._journal_lease(e)
            sub.credit -= 1
            turn.rotate(-1)

    def tick(self) -> None:
        """Expire due leases and wake due delayed messages, then dispatch."""
        now = self._clock()
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, lease_id = heapq.heappop(expiry)
            e = self.leases.get(lease_id)
            if e is not None and e.lease_until <= now:
                self._release(e, 0.0, "lease expired")
        for t in self._topics.values():
            delayed = t.delayed
            while delayed and delayed[0][0] <= now:
                _, seq, e = heapq.heappop(delayed)
                if e.lease_id is None and t.entries.get(seq) is e:
                    heapq.heappush(t.runnable, (seq, e))
                    self._dirty.add(e.topic)
        self.flush()

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do next (loop time), if ever."""
        nxt = self._expiry[0][0] if self._expiry else None
        for t in self._topics.values():
            if t.delayed and (nxt is None or t.delayed[0][0] < nxt):
                nxt = t.delayed[0][0]
        return nxt
