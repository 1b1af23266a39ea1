"""Pieces both embedded backends share: argument checks and the per-stream wake-up of readers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from llamactl.server.errors import StateStoreClosed, StateStoreError

__all__ = [
    "StreamWaiters",
    "check_value",
    "closed_error",
    "not_started_error",
    "prefix_upper_bound",
    "read_waiting",
    "wait_event",
]

T = TypeVar("T")

_MAX_CHAR = 0x10FFFF
_SURROGATES = range(0xD800, 0xE000)


def check_value(value: object) -> bytes:
    """Return ``value`` as bytes; values are bytes by contract (callers pick the encoding)."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"state store values must be bytes, not {type(value).__name__}")


def prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string that starts with ``prefix`` (None: no bound).

    Lets a prefix scan be an index range ``prefix <= key < bound``. Code point order equals UTF-8
    byte order, so the bound is valid for Python sorting and SQLite's BINARY collation alike.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars.pop()) + 1
        if last in _SURROGATES:
            last = _SURROGATES.stop
        if last <= _MAX_CHAR:
            return "".join(chars) + chr(last)
    return None


def closed_error(backend: str) -> StateStoreClosed:
    return StateStoreClosed(f"the {backend} state store was used after close(): open a new one")


def not_started_error(backend: str) -> StateStoreError:
    return StateStoreError(
        f"the {backend} state store is not started: call `await store.start()` or use `async with`"
    )


class StreamWaiters:
    """One ``asyncio.Event`` per stream that readers wait on and appends set.

    A reader must ``acquire`` the event *before* it looks for entries (an append that lands
    after the look then still wakes it) and ``release`` it when done, so streams nobody waits
    on hold no memory. A set event is dropped: the next reader gets a fresh one.
    Lives in one event loop; every method must be called from that loop.
    """

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: dict[str, _Slot] = {}

    def acquire(self, stream: str) -> asyncio.Event:
        slot = self._slots.get(stream)
        if slot is None:
            slot = self._slots[stream] = _Slot(asyncio.Event())
        slot.users += 1
        return slot.event

    def release(self, stream: str, event: asyncio.Event) -> None:
        slot = self._slots.get(stream)
        if slot is not None and slot.event is event:
            slot.users -= 1
            if slot.users <= 0:
                del self._slots[stream]

    def notify(self, stream: str) -> None:
        slot = self._slots.pop(stream, None)
        if slot is not None:
            slot.event.set()

    def notify_all(self) -> None:
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            slot.event.set()

    def __len__(self) -> int:
        """Streams someone waits on (for tests: proves nothing leaks)."""
        return len(self._slots)


class _Slot:
    __slots__ = ("event", "users")

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event
        self.users = 0


async def wait_event(ev: asyncio.Event, deadline: float) -> bool:
    """Wait for ``ev`` until the loop time ``deadline``; True if it was set."""
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        return ev.is_set()
    try:
        async with asyncio.timeout(remaining):
            await ev.wait()
    except TimeoutError:
        return ev.is_set()
    return True


async def read_waiting(
    waiters: StreamWaiters,
    stream: str,
    read_now: Callable[[], Awaitable[list[T]]],
    wait: float,
    closed: Callable[[], bool],
) -> list[T]:
    """What ``read_now`` finds, as soon as it finds something, waiting up to ``wait`` seconds for an
    append to ``stream`` (woken through ``waiters``); when the wait ends unwoken, one last look
    (it catches appends that no wake-up reported). A closed store returns what there is: nothing.
    """
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        # Take the event before looking: an append committed after the look still wakes us.
        event = waiters.acquire(stream)
        try:
            entries = await read_now()
            if entries:
                return entries
            woke = await wait_event(event, deadline)
        finally:
            waiters.release(stream, event)
        if closed():
            return []
        if not woke:
            return await read_now()
