"""What the broker's dispatcher keeps of work messages, subscriptions and topics (see
:mod:`.dispatch` for the rules)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import wire

if TYPE_CHECKING:
    from .journal import PendingRow

__all__ = ["Entry", "Sub", "Topic", "dead_letter_headers", "restored"]


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


def restored(row: PendingRow, now: float, wall: float) -> Entry:
    """A work message the journal held, as an Entry again: its delay and lease, kept as wall-clock
    times, become loop times (``now`` on the loop's clock is ``wall`` on the wall clock)."""
    e = Entry(row.topic, row.seq, row.msg_id, row.key, row.headers, row.payload, row.attempts)
    e.failures, e.suspect = row.failures, row.suspect
    if row.not_before:
        e.not_before = now + max(0.0, row.not_before - wall)
    if row.lease_id is not None and row.owner is not None and row.lease_until is not None:
        e.lease_id, e.owner = row.lease_id, row.owner
        e.lease_until = now + max(0.0, row.lease_until - wall)
    return e


def dead_letter_headers(e: Entry, reason: str) -> bytes:
    """``e``'s headers for its dead-letter copy: why it died and after how many attempts."""
    headers = wire.decode_headers(e.headers)
    headers["x-dead-reason"] = reason
    headers["x-attempts"] = str(e.attempts)
    headers["x-failures"] = str(e.failures)
    return wire.encode_headers(headers)
