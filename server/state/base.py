"""The StateStore contract every backend implements (memory and SQLite now; Redis, PostgreSQL later).

Two things in one store:

* a versioned key/value map in namespaces: ``get``, ``put``, ``cas`` (compare-and-set),
  ``delete``, ``list``. Versions start at 1 and grow by one with each write of a key.
* append-only logs ("streams"): ``append`` returns the entry's 0-based offset, ``read`` returns
  entries from an offset and can wait for new ones. ``append`` with an ``idem_key`` the stream
  already holds stores nothing and returns the original offset.

Values are bytes; callers choose the encoding (the control plane stores JSON).
The contract tests in ``tests/server/state`` run against every backend.
"""

from __future__ import annotations

import abc
import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

__all__ = ["LogEntry", "StateStore", "Versioned"]


@dataclass(frozen=True, slots=True)
class Versioned:
    value: bytes
    version: int


@dataclass(frozen=True, slots=True)
class LogEntry:
    offset: int
    value: bytes


class StateStore(abc.ABC):
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

    @abc.abstractmethod
    async def put(self, ns: str, key: str, value: bytes) -> int:
        """Write unconditionally; return the new version."""

    @abc.abstractmethod
    async def cas(self, ns: str, key: str, value: bytes, expected_version: int | None) -> int | None:
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
        """Number of entries in a log (0 for an unknown stream)."""

    @abc.abstractmethod
    async def delete_log(self, stream: str) -> None:
        """Remove a log and its idempotency keys."""

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
