"""The dispatcher's subscriptions: who consumes which work topic, with how much credit, whose turn.

A ``CONSUME`` makes a subscription with the client's prefetch as credit; each delivery takes one,
and the client gives it back once its user settled the delivery. A subscription that can take
work waits in its topic's ``turn`` (round robin). One whose delivery could not be sent is
*stalled* until its peer is heard from again; one whose peer's loop is blocked is *paused*. See
:mod:`.dispatch` for the rules.
"""

from __future__ import annotations

from .entries import Sub
from .work_topics import WorkTopics

__all__ = ["Subscriptions"]


class Subscriptions:
    """Every subscription of a broker's clients to its work topics, by (peer, subscription id)."""

    def __init__(self, topics: WorkTopics) -> None:
        self._topics = topics
        self._subs: dict[tuple[bytes, int], Sub] = {}
        self._stalled: dict[bytes, list[Sub]] = {}

    def consume(self, peer: bytes, sub_id: int, topic: str, lease: float, credit: int) -> None:
        """Subscribe (again, replacing the old one of that id): ``credit`` deliveries of ``lease`` s."""
        old = self._subs.pop((peer, sub_id), None)
        if old is not None:
            self._deactivate(old)
        sub = Sub(peer, sub_id, topic, lease, credit)
        self._subs[(peer, sub_id)] = sub
        self._topics.topic(topic).subs.add(sub)
        self.queue_turn(sub)

    def credit(self, peer: bytes, sub_id: int, n: int) -> None:
        """The consumer has room for ``n`` more deliveries."""
        sub = self._subs.get((peer, sub_id))
        if sub is not None:
            sub.credit += n
            self.queue_turn(sub)

    def credit_back(self, peer: bytes, sub_id: int, lease_id: str) -> None:
        """Give back the credit of a delivery its consumer settled (``sub_id`` 0: none to give)."""
        sub = self._subs.get((peer, sub_id)) if sub_id else None
        if sub is not None:
            if sub.exclusive == lease_id:
                sub.exclusive = None  # its suspect is settled (here or elsewhere): it takes work again
            self.credit(peer, sub_id, 1)

    def queue_turn(self, sub: Sub) -> None:
        """Put ``sub`` in its topic's turn if it can take work and is not there yet."""
        if sub.takes_any():
            if not sub.queued:
                sub.queued = True
                self._topics.topic(sub.topic).turn.append(sub)
            self._topics.dirty.add(sub.topic)

    def remove(self, peer: bytes, sub_id: int) -> None:
        """The consumer cancelled the subscription (its buffered deliveries come back apart)."""
        sub = self._subs.pop((peer, sub_id), None)
        if sub is not None:
            self._deactivate(sub)

    def stall(self, sub: Sub) -> None:
        """A delivery to ``sub`` could not be sent: it leaves the turn until its peer is heard from."""
        t = self._topics.get(sub.topic)
        if t is not None and t.turn and t.turn[0] is sub:
            t.turn.popleft().queued = False
        self._stalled.setdefault(sub.peer, []).append(sub)

    def touch(self, peer: bytes) -> None:
        """The peer was heard from: subscriptions stalled by a failed send take turns again."""
        for sub in self._stalled.pop(peer, ()):
            self.queue_turn(sub)

    def pause(self, peer: bytes, paused: bool) -> None:
        """Stop (or resume) giving new deliveries to the peer's subscriptions; its leases stay."""
        for (owner, _), sub in self._subs.items():
            if owner == peer and sub.paused != paused:
                sub.paused = paused
                if not paused:
                    self.queue_turn(sub)

    def drop_peer(self, peer: bytes) -> None:
        """The peer is gone: forget its subscriptions (its leases are the dispatcher's to release)."""
        for key in [k for k in self._subs if k[0] == peer]:
            self._deactivate(self._subs.pop(key))
        self._stalled.pop(peer, None)

    def _deactivate(self, sub: Sub) -> None:
        sub.active = False
        t = self._topics.get(sub.topic)
        if t is not None:
            t.subs.discard(sub)
            if sub.reserved:
                self._topics.dirty.add(sub.topic)  # another subscription takes over the reservation
            self._topics.forget_if_idle(sub.topic, t)
