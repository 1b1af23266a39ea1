"""Recently used records, bounded by how many and by how many bytes they take when stored.

A count alone does not bound memory: a service whose results are 16 MB each filled a
4096-entry task cache with up to 64 GB. Each entry is given its stored size (the JSON the
store holds: what it costs in memory, within a small factor); the oldest go first when either
bound is passed, and an entry larger than a quarter of the byte budget is not kept at all (it
is read from the store when wanted again).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["RecordCache"]

V = TypeVar("V")


class RecordCache(Generic[V]):
    """An LRU map of at most ``max_items`` entries and ``max_bytes`` of their stored size."""

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self.bytes = 0
        """The stored size of the entries kept now."""

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def get(self, key: str) -> V | None:
        """The entry, or None (not kept, or never put)."""
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def put(self, key: str, value: V, size: int) -> None:
        """Keep ``value`` as the newest entry; ``size``: its stored size in bytes."""
        self.pop(key)
        if size > self.max_bytes // 4:
            return
        self._entries[key] = (value, size)
        self.bytes += size
        while len(self._entries) > self.max_items or self.bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped

    def pop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry[1]
