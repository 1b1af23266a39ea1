"""The follower of the change feed (a control plane's loop, restarted when it fails) goes on from
where it was after a failure of the shared store: a task another server finished while it was
restarting still wakes its waiters here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.loops import Loops
from llamactl.server.control_plane.remote_wakeups import RemoteWakeups
from llamactl.server.control_plane.signals import TaskSignals
from llamactl.server.errors import StateStoreError
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import TaskStatus


async def test_a_task_finished_elsewhere_while_the_follower_restarted_wakes_its_waiter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = MemoryStateStore()
    await store.start()
    changes = ChangeFeed(store, "d", "d/changes")
    signals = TaskSignals()
    wakeups = RemoteWakeups(store, changes, "d/events/", signals)
    reading = asyncio.Event()
    original: Callable[..., Awaitable[Any]] = store.read
    outage = {"armed": True}

    async def read(stream: str, *args: Any, **kwargs: Any) -> Any:
        if stream == changes.stream and outage["armed"]:
            outage["armed"] = False
            reading.set()
            # The store goes away mid-read; once it is back, another server stores t1's end
            # before this loop has started again.
            await store.commit([changes.entry("task.status", {"task_id": "t1", "status": "completed"})])
            raise StateStoreError("PostgreSQL state store at db: the call failed: connection lost")
        return await original(stream, *args, **kwargs)

    monkeypatch.setattr(store, "read", read)
    loops = Loops("control plane d")
    try:
        with signals.listen("t1") as finished:
            loops.start("remote-changes", wakeups.follow_changes)
            async with asyncio.timeout(5):
                await reading.wait()
            try:
                async with asyncio.timeout(5):  # the loop starts again after 0.1 s
                    await finished.wait()
            except TimeoutError:
                pytest.fail(f"t1 {TaskStatus.COMPLETED.value} elsewhere, its waiter here never woken")
            assert loops.health["remote-changes"].restarts == 1
    finally:
        await loops.close()
        await store.close()
