"""The MessageQueue contract every backend implements (ZeroMQ now; Redis, RabbitMQ later).

Guarantees a backend must give (the contract tests in ``tests/server/mq`` check each one):

* ``publish`` returns only once the message is accepted by the broker (journaled, when the
  queue is persistent). It returns the message's ``seq``: its gap-free 0-based position in the
  topic. Publishing a ``msg_id`` that the topic already holds is absorbed: nothing is stored
  or delivered again, and the original ``seq`` is returned.
* A message published to a work topic before any consumer exists waits for one.
* ``consume(topic)`` yields :class:`Delivery` s, each under a lease. A delivery that is not acked
  comes back (``attempt`` + 1) when its lease runs out, when it is nacked, or when its consumer
  stops heartbeating (a process killed with SIGKILL is noticed within a few seconds). After
  ``max_attempts`` such failed deliveries the message moves to
  :func:`llamactl.server.mq.topics.dead_letter_topic`. When a consumer dies holding several
  deliveries, none is counted: each runs again alone, so only a message that kills its consumer
  on its own is counted against (a poison message fails alone).
  At most ``prefetch`` deliveries are outstanding per ``consume`` iterator; messages with the same
  ``key`` come in publish order and never two at a time. Both backends give that, but nothing
  above the queue relies on it (a broker without it would do): a session's tasks take turns
  through the session record, and the control plane stores a task's reports in the order they
  were sent (``control_plane/report_order.py``). ``prefetch`` may be a :class:`Prefetch` that
  its owner changes while the iterator runs: raised, more are handed out at once; lowered,
  nothing new is handed out until fewer than the new value are outstanding (deliveries already
  held or on their way stay).
* ``subscribe(topic, from_seq=n)`` yields every message of a stream topic with ``seq >= n`` in
  seq order, without gaps or duplicates, then follows new ones live. Nothing is lost to ZeroMQ's
  slow joiner or high-water-mark drops.
"""

from __future__ import annotations

import abc
import math
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from llamactl.server.outage import Outage

__all__ = ["Delivery", "Message", "MessageQueue", "Prefetch", "Sidecar", "as_prefetch", "check_lease"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message as stored by the broker."""

    topic: str
    msg_id: str
    payload: bytes
    key: str = ""
    seq: int = -1
    headers: Mapping[str, str] = field(default_factory=dict)


class Prefetch:
    """How many deliveries a ``consume`` iterator may hold unsettled, changeable while it runs.

    A worker that adapts how many tasks it runs at once hands one to ``consume`` and calls
    :meth:`set`; the backend watches it (:meth:`watch`) and asks its broker for more, or takes
    fewer from then on.
    """

    __slots__ = ("_value", "_watchers")

    def __init__(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"prefetch must be >= 1, not {value}")
        self._value = value
        self._watchers: list[Callable[[int], None]] = []

    @property
    def value(self) -> int:
        """The current prefetch."""
        return self._value

    def set(self, value: int) -> None:
        """Change the prefetch; every watcher hears of it at once."""
        if value < 1:
            raise ValueError(f"prefetch must be >= 1, not {value}")
        if value != self._value:
            self._value = value
            for watcher in list(self._watchers):
                watcher(value)

    def watch(self, watcher: Callable[[int], None]) -> Callable[[], None]:
        """Call ``watcher(new_value)`` on each change; returns what stops it."""
        self._watchers.append(watcher)
        return lambda: self._watchers.remove(watcher) if watcher in self._watchers else None


def as_prefetch(prefetch: int | Prefetch) -> Prefetch:
    """``prefetch`` as a :class:`Prefetch` (a plain number becomes one that never changes)."""
    return prefetch if isinstance(prefetch, Prefetch) else Prefetch(prefetch)


def check_lease(seconds: float) -> float:
    """``seconds`` as a lease (of ``consume``, or a delivery's ``extend``); ValueError unless it
    is a finite number above 0 (a broker cannot expire a lease of NaN or infinite seconds)."""
    if not 0 < seconds < math.inf:  # NaN too
        raise ValueError(f"a lease must be a finite number of seconds above 0, not {seconds}")
    return seconds


class Delivery(abc.ABC):
    """A leased hand-out of a work-topic message to one consumer."""

    message: Message
    attempt: int
    """1 for the first delivery of the message, 2 for the first redelivery, ..."""
    lease_id: str

    @abc.abstractmethod
    async def ack(self) -> None:
        """Mark the message done. Raises LeaseLost if the lease expired and moved on."""

    @abc.abstractmethod
    async def ack_and_publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str,
        key: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Publish a message and settle this delivery in one step; return the message's seq.

        Both are committed together or not at all, so a consumer that dies right after
        publishing its result cannot see the delivery come back and the work run twice.
        A result settles the message even if this lease has expired meanwhile and the message
        went to another consumer: a slow consumer's finished work is not run again (the other
        consumer's ack then raises LeaseLost). Raises LeaseLost if the message had been settled
        before (the publish goes through all the same; its ``msg_id`` absorbs a second copy).
        The embedded broker may hand a result straight to a consumer in its own process instead
        (its ``direct_topics``): then the delivery is written settled once that result is acked,
        and a broker that dies in between has the work run again, never the result lost; a
        result whose delivery another result had settled is not published there.
        """

    @abc.abstractmethod
    async def nack(self, delay: float = 0.0) -> None:
        """Give the message back; it is redelivered after ``delay`` seconds (attempt + 1)."""

    @abc.abstractmethod
    async def extend(self, seconds: float | None = None) -> None:
        """Renew the lease for ``seconds`` (default: the consume call's lease) from now."""


class Sidecar(Protocol):
    """A second, blocking line to the broker, for a thread of the process while its event loop is
    blocked by user code (see :mod:`llamactl.server.services.watchdog`). Use it from one thread."""

    def keepalive(self) -> None:
        """Say that the client's process is alive although its loop is not answering: its leases
        stay with it (until they expire) and it is given nothing new until it answers again."""

    def publish(self, topic: str, payload: bytes, *, msg_id: str, key: str = "") -> bool:
        """Publish and wait (a second or two at most) for the confirm; True if confirmed."""

    def close(self) -> None:
        """Close the line (from the thread that used it)."""


class MessageQueue(abc.ABC):
    """A connection to a message queue (for the embedded ZeroMQ backend: a client of the broker)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect. Must be called (or use ``async with``) before anything else."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect; outstanding deliveries of this connection are released for redelivery."""

    @abc.abstractmethod
    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        msg_id: str | None = None,
        key: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> int:
        """Publish and wait for the broker's confirmation; return the message's seq.

        ``msg_id`` defaults to a fresh id (a UUIDv7). Raises PublishRejected when the broker refuses or
        does not confirm within the backend's publish timeout.
        """

    async def publish_restorable(
        self, topic: str, payload: bytes, *, msg_id: str, key: str = "", attempts: int = 0
    ) -> int:
        """Publish a work message that the caller keeps in a store of its own and publishes again
        (same ``msg_id``) after a restart; return its seq.

        ``attempts``: deliveries the caller knows the message had already (the next one is
        ``attempts + 1``). A broker that lives in the caller's process may hold such a message in
        memory only, since it and the caller restart together (the embedded broker does, for an
        in-process client). Every other backend publishes it like :meth:`publish`.
        """
        return await self.publish(topic, payload, msg_id=msg_id, key=key)

    @property
    def ordered_publishes(self) -> bool:
        """True when publishes started one after another (each awaited later) reach the broker
        in that order, so a caller may have several on their way at once and keep their order."""
        return False

    @property
    def restorable_in_memory(self) -> bool:
        """True when :meth:`publish_restorable` holds its messages only in this process's memory,
        so that they end with the process, as whatever the caller had not stored yet does."""
        return False

    @abc.abstractmethod
    def consume(
        self,
        topic: str,
        *,
        prefetch: int | Prefetch = 1,
        lease: float = 30.0,
    ) -> AsyncIterator[Delivery]:
        """Compete for the messages of a work topic. Closing the iterator (``aclose``, or leaving
        an ``async for``) stops taking new deliveries; unacked ones go back for redelivery."""

    @abc.abstractmethod
    def subscribe(self, topic: str, *, from_seq: int = 0) -> AsyncIterator[Message]:
        """Read a stream topic from ``from_seq`` on, in order, then follow it live."""

    @abc.abstractmethod
    async def discard(self, topic: str, msg_id: str, *, leased: bool = False) -> bool:
        """Remove a pending message of a work topic so that it is never delivered (again).

        Without ``leased`` only a message that no consumer holds right now is removed; with it,
        one under lease too (its holder's ack, nack and extend then raise LeaseLost). True if the
        message was removed; False if it is leased (without ``leased``), settled or unknown.
        """

    @property
    def outage(self) -> Outage | None:
        """The broker's outage while this client cannot reach it, else None (the client keeps
        trying meanwhile). A backend whose broker lives in the client's process says None."""
        return None

    @property
    def losses(self) -> int:
        """How many times so far this client found that the broker may have lost what it held:
        after each outage (see :attr:`outage`: a Redis may have restarted without its data), and
        each time the broker no longer knew this client (a ``FLUSHALL``). A caller that keeps its
        own copy of what it published sends it again (the ``msg_id`` absorbs what is still there).
        A backend whose broker lives in the client's process says 0."""
        return 0

    @property
    def risks(self) -> list[str]:
        """What the broker's own settings put at risk, found at ``start()`` (for the server to say
        once: a Redis that may evict the queue's keys). None known: empty."""
        return []

    def sidecar(self) -> Sidecar | None:
        """A :class:`Sidecar` for this client, or None when the backend needs none."""
        return None

    async def __aenter__(self) -> MessageQueue:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
