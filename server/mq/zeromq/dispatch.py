"""Work-topic delivery state of the broker: credits, leases, per-key order, redelivery, isolation.

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
  or when its owner is declared dead or says ``BYE``. Such an end *counts against* the message
  (``failures``), and after ``max_attempts`` failures it goes to the dead-letter topic instead
  of back to ready (dead-letter topics themselves keep redelivering). A delivery given back
  unused (``CANCEL`` of a buffered one, ``RETURN``, or a send that failed) counts nothing.
* A poison message fails alone: when a consumer dies holding several leases, none of them is
  counted; each becomes a *suspect* and runs again alone, on a subscription holding nothing
  else, which takes no other delivery until it is settled. Only a death while holding a single
  lease counts against that message. While a suspect waits, one subscription is *reserved* for it
  (it takes nothing new until it is idle); the others keep serving.
* A result settles the message, whoever holds it: ``settle`` (the ack of ``ACKPUB``) removes the
  message even when the lease it names has expired and the message went to another consumer,
  so a slow worker's finished task is not run again. ``discard`` removes a message on request
  (a cancelled task), by default only while nobody holds it.
* A result handed over unjournaled (``journaled=False``) is delivered like any message, but
  nothing of it is written; the message it ``settles`` is written done once the result is done
  (acked, discarded or dead-lettered): until then a restarted broker runs that message again.
  Work held in memory (:mod:`.memory_work`) is ``journaled=False`` too, and settles nothing.
"""

from __future__ import annotations

import heapq
import itertools
import os
import time
from collections.abc import Callable
from typing import Protocol

from llamactl.server.mq.topics import is_dead_letter_topic

from . import wire
from .entries import Entry, Sub, Topic
from .subscriptions import Subscriptions
from .work_topics import WorkTopics

__all__ = ["Dispatcher", "Entry", "Sub"]


Send = Callable[[bytes, list[bytes]], bool]


class Submit(Protocol):
    """The journal's ``submit``: queue an op; ``now`` commits a write-behind op without delay."""

    def __call__(self, op: tuple[object, ...], *, now: bool = False) -> None: ...


OnDead = Callable[[Entry, str], None]


class Dispatcher:
    """Leases, settling and dispatching for all work topics of one broker; the messages are kept
    in ``topics`` (:class:`.WorkTopics`), the subscriptions in ``subscriptions``
    (:class:`.Subscriptions`)."""

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
        self.topics = WorkTopics(clock)
        self.subscriptions = Subscriptions(self.topics)
        self.leases: dict[str, Entry] = {}
        self._expiry: list[tuple[float, str]] = []
        self._lease_prefix = os.urandom(4).hex() + "-"
        self._lease_counter = itertools.count(1)

    # -- messages -----------------------------------------------------------------------------

    def add(self, entry: Entry) -> None:
        """A committed work message (or one recovered from the journal)."""
        t = self.topics.track(entry)
        if entry.lease_id is not None:
            self.leases[entry.lease_id] = entry
            heapq.heappush(self._expiry, (entry.lease_until, entry.lease_id))
        else:
            self.topics.offer(t, entry)

    def take_back(self, entry: Entry, *, delay: float, charge: bool) -> None:
        """A message delivered outside the dispatcher (:mod:`.local_results`) comes back unsettled,
        as from a released lease: ``charge`` counts it as a failure (a nack), ``delay`` holds it."""
        self.topics.track(entry)
        self._requeue(entry, delay, "nacked", charge=charge)

    def cancel(self, peer: bytes, sub_id: int, returned: list[str]) -> None:
        """The consumer cancelled a subscription and gave back the deliveries it had not handed out."""
        self.subscriptions.remove(peer, sub_id)
        for lease_id in returned:
            self.give_back(lease_id)

    def drop_peer(self, peer: bytes, reason: str, *, crashed: bool = True) -> None:
        """The peer is gone (``crashed``: declared dead; else it said BYE): forget its
        subscriptions, release its leases.

        A dead peer that held one lease is charged with it; one that held several charges none of
        them: they are suspects and run again one at a time (see the module docstring). A peer
        that closed on purpose charges nothing.
        """
        self.subscriptions.drop_peer(peer)
        held = [e for e in self.leases.values() if e.owner == peer]
        for entry in held:
            alone = len(held) == 1
            self._release(entry, 0.0, reason, charge=crashed and alone, suspect=crashed and not alone)

    # -- settling -----------------------------------------------------------------------------

    def ack(self, lease_id: str, peer: bytes, sub_id: int) -> bool:
        self.subscriptions.credit_back(peer, sub_id, lease_id)
        e = self.leases.get(lease_id)
        if e is None:
            return False
        self._end_lease(e)
        self.topics.finish(e)
        self.journal_done(e)
        return True

    def journal_done(self, e: Entry) -> None:
        """Write ``e`` done in the journal: itself if it is journaled, and what it settles."""
        if e.journaled:
            self._submit(("done", e.topic, e.seq))
        if e.settles is not None:
            # At once: until this commits, a crash brings the settled message back to run again.
            self._submit(("done", *e.settles), now=True)

    def settle(self, lease_id: str, topic: str, seq: int) -> Entry | None:
        """The delivered message has its result: settle it even if the lease moved on.

        The message if it was pending (now settled); None if it was settled before. The caller
        has journaled the settlement with the result already (if the message was journaled).
        """
        e = self.leases.get(lease_id)
        if e is None:
            t = self.topics.get(topic)
            e = None if t is None else t.entries.get(seq)
            if e is None:
                return None
        if e.lease_id is not None:
            self._end_lease(e)
        self.topics.finish(e)
        return e

    def discard(self, topic: str, msg_id: str, *, leased: bool) -> bool:
        """Remove a pending message (only an unleased one unless ``leased``); True if removed."""
        e = self.topics.find(topic, msg_id)
        if e is None or (e.lease_id is not None and not leased):
            return False
        if e.lease_id is not None:
            self._end_lease(e)
        self.topics.finish(e)
        self.journal_done(e)
        return True

    def nack(self, lease_id: str, peer: bytes, sub_id: int, delay: float) -> bool:
        self.subscriptions.credit_back(peer, sub_id, lease_id)
        e = self.leases.get(lease_id)
        if e is None:
            return False
        self._release(e, delay, "nacked", charge=True)
        return True

    def extend(self, lease_id: str, seconds: float) -> bool:
        e = self.leases.get(lease_id)
        if e is None:
            return False
        e.lease_until = self._clock() + seconds
        heapq.heappush(self._expiry, (e.lease_until, lease_id))
        self._journal_lease(e)
        return True

    def excuse(self, now: float, held: float) -> None:
        """Our own loop was held ``held`` seconds (the server stopped by Ctrl-Z or SIGSTOP, a
        debugger's breakpoint): no holder could be heard extending its lease meanwhile. Each lease
        keeps what it had left when the hold began, and at least one full lease from ``now``, so
        that a holder is taken for dead only for its own silence."""
        for lease_id, e in self.leases.items():
            lease = e.sub.lease if e.sub is not None else 0.0
            until = max(e.lease_until + held, now + lease)
            if until > e.lease_until:
                e.lease_until = until
                heapq.heappush(self._expiry, (until, lease_id))
                self._journal_lease(e)

    def give_back(self, lease_id: str) -> None:
        """Release a delivery its consumer never handed out: no attempt is counted."""
        e = self.leases.get(lease_id)
        if e is not None:
            e.attempts -= 1
            self._release(e, 0.0, "returned", charge=False, suspect=e.suspect)

    def _end_lease(self, e: Entry) -> None:
        assert e.lease_id is not None
        del self.leases[e.lease_id]
        sub = e.sub
        if sub is not None:
            sub.outstanding -= 1
            if sub.reserved and sub.outstanding == 0:
                self.topics.dirty.add(sub.topic)  # idle now: its suspect can go
        e.lease_id = None
        e.owner = None
        e.sub = None

    def _release(self, e: Entry, delay: float, reason: str, *, charge: bool, suspect: bool = False) -> None:
        self._end_lease(e)
        self._requeue(e, delay, reason, charge=charge, suspect=suspect)

    def _requeue(self, e: Entry, delay: float, reason: str, *, charge: bool, suspect: bool = False) -> None:
        """Ready again (after ``delay``), or dead-lettered when ``charge`` uses up its attempts."""
        e.suspect = suspect
        if charge:
            e.failures += 1
            if e.failures >= self._max_attempts and not is_dead_letter_topic(e.topic):
                self.topics.finish(e)
                self._on_dead(e, reason)
                return
        now = self._clock()
        e.not_before = now + delay if delay > 0 else 0.0
        wall = time.time() - now + e.not_before if delay > 0 else 0.0
        if e.journaled:
            self._submit(("ready", e.topic, e.seq, e.attempts, e.failures, int(e.suspect), wall))
        self.topics.offer(self.topics.topic(e.topic), e)

    def _journal_lease(self, e: Entry) -> None:
        if not e.journaled:
            return
        wall = time.time() - self._clock() + e.lease_until
        self._submit(("lease", e.topic, e.seq, e.attempts, e.lease_id, e.owner, wall))

    # -- dispatching and timers -----------------------------------------------------------------

    def flush(self) -> None:
        """Hand out what can be handed out on the topics that changed since the last flush."""
        dirty, topics = self.topics.dirty, self.topics
        while dirty:
            name = dirty.pop()
            t = topics.get(name)
            if t is not None:
                self._dispatch(name, t)

    def _dispatch(self, name: str, t: Topic) -> None:
        now = self._clock()
        eligible = self.topics.eligible
        suspects = t.suspects
        had_suspects = bool(suspects)
        while suspects:
            _, e = suspects[0]
            if not eligible(t, e, now) or not e.suspect:
                heapq.heappop(suspects)
                continue
            alone = next((s for s in t.subs if s.takes_any() and s.outstanding == 0), None)
            if alone is None:
                self._reserve(t)
                break
            heapq.heappop(suspects)
            if not self._deliver(name, e, alone):
                heapq.heappush(suspects, (e.seq, e))
                break
            alone.exclusive, alone.reserved = e.lease_id, False
        if had_suspects and not suspects:
            # No suspect waits any more (others ran them, or they were settled meanwhile): a
            # subscription kept idle for one would otherwise never take work again.
            for s in t.subs:
                if s.reserved:
                    s.reserved = False
                    if s.takes_any() and not s.queued:  # left the turn while reserved
                        s.queued = True
                        t.turn.append(s)
        runnable, turn = t.runnable, t.turn
        while runnable and turn:
            sub = turn[0]
            if not sub.takes_normal():
                turn.popleft().queued = False
                continue
            _, e = heapq.heappop(runnable)
            if not eligible(t, e, now):
                continue
            if e.suspect:
                heapq.heappush(suspects, (e.seq, e))
                self.topics.dirty.add(name)
                continue
            if not self._deliver(name, e, sub):
                heapq.heappush(runnable, (e.seq, e))
                continue
            turn.rotate(-1)

    @staticmethod
    def _reserve(t: Topic) -> None:
        """Keep one subscription from taking new work until it is idle, for a waiting suspect."""
        live = [s for s in t.subs if s.active]
        if not live or any(s.reserved for s in live):
            return
        min(live, key=lambda s: s.outstanding).reserved = True

    def _deliver(self, name: str, e: Entry, sub: Sub) -> bool:
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
            self.subscriptions.stall(sub)
            return False
        now = self._clock()
        e.lease_id, e.owner, e.sub = lease_id, sub.peer, sub
        e.lease_until = now + sub.lease
        self.leases[lease_id] = e
        heapq.heappush(self._expiry, (e.lease_until, lease_id))
        self._journal_lease(e)
        sub.credit -= 1
        sub.outstanding += 1
        return True

    def tick(self) -> None:
        """Expire due leases and wake due delayed messages, then dispatch."""
        now = self._clock()
        expiry = self._expiry
        while expiry and expiry[0][0] <= now:
            _, lease_id = heapq.heappop(expiry)
            e = self.leases.get(lease_id)
            if e is not None and e.lease_until <= now:
                self._release(e, 0.0, "lease expired", charge=True)
        self.topics.wake_delayed(now)
        self.flush()

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do next (loop time), if ever."""
        nxt = self._expiry[0][0] if self._expiry else None
        wake = self.topics.next_wake()
        return wake if nxt is None or (wake is not None and wake < nxt) else nxt
