"""The StateStore contract every backend implements (memory and SQLite now; Redis, PostgreSQL later).

Two things in one store:

* a versioned key/value map in namespaces: ``get``, ``put``, ``cas`` (compare-and-set),
  ``delete``, ``list``. Versions start at 1 and grow by one with each write of a key.
* append-only logs ("streams"): ``append`` returns the entry's 0-based offset, ``read`` returns
  entries from an offset and can wait for new ones. ``append`` with an ``idem_key`` the stream
  already holds stores nothing and returns the original offset.

Values are bytes; callers choose the encoding (the control plane stores JSON).

Queries without scans: a key written with an :class:`Index` can be found by any of its fields
(``query``), ordered by the index's ``sort`` string, a page at a time; ``count`` tells how many keys
hold each value of a field, without reading them. Writes that must happen together go to
``commit`` in one call: all of them, or none when a condition fails (a CAS or a conditional delete).
Logs can be trimmed from the front (``trim_log``); offsets never restart.

The contract tests in ``tests/server/state`` run against every backend.
"""

from __future__ import annotations

import abc
import asyncio
import builtins
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from llamactl.server.outage import Outage

__all__ = [
    "Append",
    "Cas",
    "CommitResult",
    "Delete",
    "DeleteLog",
    "Index",
    "LogEntry",
    "Put",
    "StateStore",
    "Versioned",
    "Write",
]


@dataclass(frozen=True, slots=True)
class Versioned:
    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    offset: int
    value: bytes


@dataclass(frozen=True, slots=True)
class Index:
    """How a record can be found: ``fields`` (name -> value) to query by, ``sort`` to order by.

    Writing a key with an Index sets the given fields (fields not named keep their value) and the
    sort string; deleting the key drops them. ``sort`` must be unique within a namespace (end it
    with the key) so that it can serve as a page cursor. ``sort=None`` keeps the record's sort (an
    update that moves only some fields then rewrites only their index entries); a record written
    for the first time needs one.
    """

    sort: str | None
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``ns/key`` unconditionally."""

    ns: str
    key: str
    value: bytes
    index: Index | None = None


@dataclass(frozen=True, slots=True)
class Cas:
    """Write ``ns/key`` only at ``expected_version`` (None: only if absent)."""

    ns: str
    key: str
    value: bytes
    expected_version: int | None
    index: Index | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``ns/key`` (only at ``expected_version`` when given; a missing key is no failure
    unless a version was expected)."""

    ns: str
    key: str
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class Append:
    """Append to a log (``idem_key``: an entry the log holds already is not stored again).

    ``at_commit``: the caller needs no offset, so a backend may number the entry as the commit
    ends (its result is then -1), in the order commits end. A shared store does, so that commits
    appending to one busy log (the change feed) do not wait for each other for their whole
    length. Not with ``idem_key``: a known key's offset is the answer it gives.
    """

    stream: str
    value: bytes
    idem_key: str | None = None
    at_commit: bool = False

    def __post_init__(self) -> None:
        if self.at_commit and self.idem_key is not None:
            raise ValueError("an Append numbered at commit cannot have an idempotency key")


@dataclass(frozen=True, slots=True)
class DeleteLog:
    """Remove a log and its idempotency keys (an unknown stream is no failure)."""

    stream: str


Write = Put | Cas | Delete | Append | DeleteLog


@dataclass(frozen=True, slots=True)
class CommitResult:
    """What :meth:`StateStore.commit` did.

    ``ok`` is False when a condition failed: then nothing was written and ``failed`` is the index of
    the first write whose condition did not hold. Otherwise ``results`` has one item per write: the
    new version (Put, Cas), 1 or 0 for whether something was deleted (Delete), the offset (Append;
    -1 for one ``at_commit`` that the backend numbers as the commit ends), the number of entries
    removed (DeleteLog).
    """

    ok: bool
    results: tuple[int, ...] = ()
    failed: int | None = None


class StateStore(abc.ABC):
    shared: bool = False
    """True for a store that other processes (other servers) write too, such as PostgreSQL: what a
    process read may be stale a moment later, so readers must not trust a cache of it, and a log
    append by another process reaches :meth:`add_append_listener` listeners."""

    @property
    def outage(self) -> Outage | None:
        """The store's server's outage while this store cannot reach it, else None (calls fail
        meanwhile; the store keeps trying). A store inside the process says None."""
        return None

    def add_append_listener(self, listener: Callable[[str], None]) -> Callable[[], None]:
        """Call ``listener(stream)`` after another process appended to a log of this store.

        Only ``shared`` stores call listeners (an in-process store has no other writer: its own
        callers know what they appended). Returns a function that removes the listener.
        """
        return _nothing

    @abc.abstractmethod
    async def start(self) -> None:
        """Open the store (create tables, files). Call once before use, or use ``async with``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Flush and close. Waiting readers are woken and get what there is."""

    # --- key/value -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def get(self, ns: str, key: str) -> Versioned | None:
        """The value and version of ``ns/key``, or None."""

    async def get_many(self, ns: str, keys: Sequence[str]) -> dict[str, Versioned]:
        """The value and version of each of ``keys`` that ``ns`` holds (one read where the backend
        can: pruning reads the sessions of a few hundred tasks at once)."""
        found = await asyncio.gather(*(self.get(ns, key) for key in keys))
        return {key: value for key, value in zip(keys, found, strict=True) if value is not None}

    @abc.abstractmethod
    async def put(self, ns: str, key: str, value: bytes, *, index: Index | None = None) -> int:
        """Write unconditionally; return the new version."""

    @abc.abstractmethod
    async def cas(
        self, ns: str, key: str, value: bytes, expected_version: int | None, *, index: Index | None = None
    ) -> int | None:
        """Write only if the current version is ``expected_version`` (None: only if absent).

        Return the new version, or None when the condition did not hold (nothing written).
        """

    @abc.abstractmethod
    async def delete(self, ns: str, key: str, expected_version: int | None = None) -> bool:
        """Delete (only at ``expected_version`` when given). True if something was deleted."""

    @abc.abstractmethod
    async def list(
        self, ns: str, prefix: str = "", after: str | None = None, limit: int = 100
    ) -> builtins.list[tuple[str, Versioned]]:
        """Keys of ``ns`` starting with ``prefix``, in key order, strictly after ``after``."""

    @abc.abstractmethod
    async def query(
        self,
        ns: str,
        field: str,
        value: str | None = None,
        *,
        after: str | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> builtins.list[tuple[str, Versioned, str]]:
        """Keys of ``ns`` whose index ``field`` is ``value`` (None: any value), as ``(key, value,
        sort)`` in sort order (``descending``: newest first), strictly after the sort string
        ``after`` in that order. Pass the last item's sort as ``after`` to get the next page."""

    @abc.abstractmethod
    async def count(self, ns: str, field: str) -> dict[str, int]:
        """How many keys of ``ns`` hold each value of index ``field`` (values held by none left out)."""

    # --- several writes at once ----------------------------------------------------------------

    @abc.abstractmethod
    async def commit(self, writes: Sequence[Write]) -> CommitResult:
        """Apply ``writes`` in order, all or nothing; see :class:`CommitResult`.

        A failing condition (a Cas whose version does not match, a Delete at an expected version
        that does not hold) writes nothing and is reported, not raised. Readers never see a part
        of a commit.
        """

    # --- logs ----------------------------------------------------------------------------------

    @abc.abstractmethod
    async def append(self, stream: str, value: bytes, *, idem_key: str | None = None) -> int:
        """Append to a log; return the entry's offset (0-based, gap-free per stream)."""

    async def append_many(self, stream: str, values: Sequence[bytes]) -> builtins.list[int]:
        """Append several entries in order (no idempotency keys); return their offsets.

        Backends override it to write them in one round trip; this default appends one by one.
        """
        return [await self.append(stream, value) for value in values]

    @abc.abstractmethod
    async def read(
        self, stream: str, from_offset: int = 0, limit: int = 100, wait: float = 0.0
    ) -> builtins.list[LogEntry]:
        """Entries with ``offset >= from_offset``, oldest first, at most ``limit``.

        With ``wait > 0`` and nothing to return yet, wait up to ``wait`` seconds for the first
        new entry (no polling: appends wake waiters), then return what is there.
        """

    @abc.abstractmethod
    async def log_length(self, stream: str) -> int:
        """The offset the next entry gets: the number of entries ever appended (0 for an unknown
        stream), whatever ``trim_log`` dropped since."""

    @abc.abstractmethod
    async def find_idem(self, stream: str, idem_key: str) -> int | None:
        """The offset of the entry appended with ``idem_key`` (None if there is none): whether
        something was appended already, without appending (the control plane keeps a task's
        reports in order with it)."""

    @abc.abstractmethod
    async def delete_log(self, stream: str) -> None:
        """Remove a log and its idempotency keys."""

    @abc.abstractmethod
    async def trim_log(self, stream: str, before: int) -> int:
        """Drop the entries with offset < ``before`` (the last entry always stays, so offsets go
        on from where they were); return how many were dropped. Reads from a dropped offset start
        at the first entry kept."""

    async def __aenter__(self) -> StateStore:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _nothing() -> None:
    return None
