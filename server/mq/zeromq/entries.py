"""What the broker's dispatcher keeps of work messages, subscriptions and topics (see
:mod:`.dispatch` for the rules)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["Entry", "Sub", "Topic"]


@dataclass(slots=True, eq=False)
class Entry:
    topic: str
    seq: int
    msg_id: str
    key: str
    headers: bytes
    payload: bytes
    attempts: int = 0
    """Deliveries so far (the attempt number of the last one)."""
    failures: int = 0
    """Deliveries that ended without ack and were counted against the message."""
    suspect: bool = False
    """Released unsettled, with others, by a consumer that died: runs again alone."""
    lease_id: str | None = None
    owner: bytes | None = None
    sub: Sub | None = None
    lease_until: float = 0.0
    not_before: float = 0.0
    journaled: bool = True
    """False for a result handed over without being journaled (see ``ZeroMQBroker``'s
    ``direct_topics``): its leases and releases are not written anywhere."""
    settles: tuple[str, int] | None = None
    """The journaled work message (topic, seq) this result settles once it is done itself."""


@dataclass(slots=True, eq=False)
class Sub:
    peer: bytes
    sub_id: int
    topic: str
    lease: float
    credit: int
    active: bool = True
    queued: bool = False
    outstanding: int = 0
    """Current leases of this subscription."""
    exclusive: str | None = None
    """The lease of the suspect it runs alone; no other delivery until that lease is settled."""
    reserved: bool = False
    """Kept idle for a waiting suspect: takes no new delivery."""
    paused: bool = False
    """Its consumer's loop is blocked (vouched for by its side line): no new delivery meanwhile."""

    def takes_any(self) -> bool:
        return self.active and self.credit > 0 and self.exclusive is None and not self.paused

    def takes_normal(self) -> bool:
        return self.takes_any() and not self.reserved


@dataclass(slots=True, eq=False)
class Topic:
    entries: dict[int, Entry] = field(default_factory=dict)
    by_id: dict[str, Entry] = field(default_factory=dict)
    keys: dict[str, deque[Entry]] = field(default_factory=dict)
    runnable: list[tuple[int, Entry]] = field(default_factory=list)
    suspects: list[tuple[int, Entry]] = field(default_factory=list)
    delayed: list[tuple[float, int, Entry]] = field(default_factory=list)
    turn: deque[Sub] = field(default_factory=deque)
    subs: set[Sub] = field(default_factory=set)
