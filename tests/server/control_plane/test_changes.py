"""The change feed: emitted changes reach the log in order, and none is lost while the store fails."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.errors import StateStoreError
from llamactl.server.state.base import Put
from llamactl.server.state.memory import MemoryStateStore


class _FlakyStore(MemoryStateStore):
    """Counts append_many calls; the first ``failures`` of them fail like a full disk."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__()
        self.writes: list[int] = []
        self.failures = failures

    async def append_many(self, stream: str, values: Sequence[bytes]) -> list[int]:
        if self.failures:
            self.failures -= 1
            raise StateStoreError("SQLite state store: the transaction failed: database or disk is full")
        self.writes.append(len(values))
        return await super().append_many(stream, values)


async def test_changes_emitted_in_one_loop_turn_are_written_together_in_order() -> None:
    store = _FlakyStore()
    await store.start()
    feed = ChangeFeed(store, "d", "changes")
    feed.start()
    try:
        for n in range(3):
            feed.emit("replica.up", {"n": n})
        await feed.flushed()
        assert store.writes == [3]
        assert [c.data["n"] for c in await feed.read()] == [0, 1, 2]
    finally:
        await feed.close()


async def test_changes_emitted_while_the_store_fails_are_written_once_it_works() -> None:
    store = _FlakyStore(failures=3)
    await store.start()
    feed = ChangeFeed(store, "d", "changes")
    feed.start()
    try:
        feed.emit("replica.up", {"n": 0})
        feed.emit("replica.down", {"n": 1})
        await asyncio.wait_for(feed.flushed(), 10)
        assert [(c.kind, c.data["n"], c.seq) for c in await feed.read()] == [
            ("replica.up", 0, 0),
            ("replica.down", 1, 1),
        ]
    finally:
        await feed.close()


async def test_an_entry_is_committed_with_the_state_change_it_reports() -> None:
    store = _FlakyStore()
    await store.start()
    feed = ChangeFeed(store, "d", "changes")
    result = await store.commit([Put("ns", "k", b"v"), feed.entry("session.created", {"session_id": "s"})])
    assert result.ok
    (change,) = await feed.read()
    assert (change.kind, change.data, change.seq) == ("session.created", {"session_id": "s"}, 0)


async def test_closing_writes_what_was_emitted() -> None:
    store = _FlakyStore()
    await store.start()
    feed = ChangeFeed(store, "d", "changes")
    feed.start()
    feed.emit("session.created", {"session_id": "s"})
    await feed.close()
    assert [c.kind for c in await feed.read()] == ["session.created"]


async def _written_feed(entries: int) -> ChangeFeed:
    """A feed with ``entries`` changes written (seqs 0 to entries - 1), its writer closed."""
    store = _FlakyStore()
    await store.start()
    feed = ChangeFeed(store, "d", "changes")
    feed.start()
    for n in range(entries):
        feed.emit("replica.up", {"n": n})
    await feed.close()
    return feed


async def test_trim_keeps_the_newest_entries() -> None:
    feed = await _written_feed(10)
    assert await feed.trim(keep=4) == 6
    assert [c.seq for c in await feed.read()] == [6, 7, 8, 9]


async def test_a_bounded_trim_drops_the_oldest_entries_a_bounded_number_at_a_time() -> None:
    """One delete of tens of thousands of entries held the loop ~90 ms: a retention pass now
    trims at most a bound, oldest first, and the next passes go on from there."""
    feed = await _written_feed(10)
    assert await feed.trim(keep=2, at_most=3) == 3
    assert [c.seq for c in await feed.read()] == [3, 4, 5, 6, 7, 8, 9]
    assert [await feed.trim(keep=2, at_most=3) for _ in range(3)] == [3, 2, 0]
    assert [c.seq for c in await feed.read()] == [8, 9]


async def test_a_follower_behind_gets_the_backlog_in_batches_then_new_changes() -> None:
    store = _FlakyStore()
    await store.start()
    feed = ChangeFeed(store, "d", "changes")
    feed.start()
    try:
        for n in range(1200):
            feed.emit("task.created", {"n": n})
        await feed.flushed()
        follower = feed.follow(from_seq=100, poll=5)
        sizes = [len(await anext(follower)) for _ in range(3)]
        assert sizes == [500, 500, 100]  # the store's read size, not one change per step
        feed.emit("task.completed", {"n": 1200})
        (late,) = await asyncio.wait_for(anext(follower), 5)
        assert (late.kind, late.seq) == ("task.completed", 1200)
        await follower.aclose()
    finally:
        await feed.close()
