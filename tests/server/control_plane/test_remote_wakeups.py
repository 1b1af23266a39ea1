"""What wakes a task's waiters when another server changes the task (a shared store)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.remote_wakeups import RemoteWakeups
from llamactl.server.control_plane.signals import TaskSignals
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import TaskStatus


class Feed:
    """A change feed on a store, and a follower of it waking ``signals``."""

    def __init__(self, store: MemoryStateStore) -> None:
        self.store = store
        self.changes = ChangeFeed(store, "d", "d/changes")
        self.signals = TaskSignals()
        self.wakeups = RemoteWakeups(store, self.changes, "d/events/", self.signals)

    async def status(self, task_id: str, status: str) -> None:
        await self.store.commit([self.changes.entry("task.status", {"task_id": task_id, "status": status})])


async def _followed(feed: Feed) -> None:
    """Return once the follower reads the feed (it starts from the feed's end: what is appended
    before it started is not its to see)."""
    async with asyncio.timeout(5):
        with feed.signals.listen("probe") as changed:
            while not changed.is_set():
                await feed.status("probe", TaskStatus.COMPLETED.value)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):
                        await changed.wait()


@pytest.fixture
async def feed() -> AsyncIterator[Feed]:
    store = MemoryStateStore()
    await store.start()
    feed = Feed(store)
    following = asyncio.create_task(feed.wakeups.follow_changes())
    await _followed(feed)
    yield feed
    following.cancel()
    await asyncio.gather(following, return_exceptions=True)
    await store.close()


@pytest.mark.parametrize("status", [s.value for s in TaskStatus if s.is_final] + ["a status not known yet"])
async def test_a_task_that_ended_wakes_its_waiters(feed: Feed, status: str) -> None:
    with feed.signals.listen("t1") as changed:
        await feed.status("t1", status)
        async with asyncio.timeout(5):
            await changed.wait()


async def test_a_task_that_did_not_end_wakes_no_one(feed: Feed) -> None:
    """A waiter woken for a running task would read it for nothing (a round trip to the store)."""
    with feed.signals.listen("t1") as running, feed.signals.listen("t2") as ended:
        for status in TaskStatus:
            if not status.is_final:
                await feed.status("t1", status.value)
        await feed.status("t2", TaskStatus.COMPLETED.value)  # read after t1's: the feed is in order
        async with asyncio.timeout(5):
            await ended.wait()
        assert not running.is_set(), "woken by a status that is not an end"
