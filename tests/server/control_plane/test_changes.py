"""The change feed: emitted changes reach the log in order, in batches."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.state.memory import MemoryStateStore


class _CountingStore(MemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[int] = []

    async def append_many(self, stream: str, values: Sequence[bytes]) -> list[int]:
        self.writes.append(len(values))
        return await super().append_many(stream, values)


async def test_changes_emitted_close_together_are_written_together_in_order() -> None:
    store = _CountingStore()
    await store.start()
    feed = ChangeFeed(store, "d", "changes", linger=0.05)
    feed.start()
    try:
        feed.emit("task.status", {"n": 0})
        for n in (1, 2):
            await asyncio.sleep(0.001)  # the emits come in separate loop turns
            feed.emit("task.status", {"n": n})
        await feed.flushed()
        assert store.writes == [3]
        assert [c.data["n"] for c in await feed.read()] == [0, 1, 2]
    finally:
        await feed.close()


async def test_closing_writes_what_was_emitted() -> None:
    store = _CountingStore()
    await store.start()
    feed = ChangeFeed(store, "d", "changes", linger=0.05)
    feed.start()
    feed.emit("session.created", {"session_id": "s"})
    await feed.close()
    assert [c.kind for c in await feed.read()] == ["session.created"]
