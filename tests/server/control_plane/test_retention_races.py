"""Retention and a task joining a one-task session: the session the user goes on with stays."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from llamactl.server.control_plane import ControlPlaneSettings, RetentionPolicy
from llamactl.server.state.base import CommitResult, DeleteLog, Write
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import TaskDefinition, TaskStatus

from .conftest import Deliveries, Harness


class _HeldPrunes(MemoryStateStore):
    """A memory store whose commits deleting event logs (retention's) wait for :attr:`go`, as a
    slow commit would."""

    def __init__(self) -> None:
        super().__init__()
        self.held = asyncio.Event()
        self.go = asyncio.Event()

    async def commit(self, writes: Sequence[Write]) -> CommitResult:
        if any(isinstance(w, DeleteLog) for w in writes):
            self.held.set()
            await self.go.wait()
        return await super().commit(writes)


async def test_a_one_task_session_a_new_task_joins_while_it_is_pruned_stays(harness: Harness) -> None:
    """``tasks/create`` without a session makes one for its task, which retention deletes with
    it; a task stored in that session since retention looked at it makes it the user's: it stays
    (with its Context), and its finished task still goes."""
    store = _HeldPrunes()
    await store.start()
    harness.store = store
    policy = RetentionPolicy(max_finished=0, every=3600)
    plane = await harness.control_plane(ControlPlaneSettings(retention=policy))
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    first = await plane.create_task(TaskDefinition())
    delivery, message = await deliveries.take()
    await harness.finish(worker, message, 1, context={"seen": 1})
    await delivery.ack()
    assert (await plane.wait_for_task(first.task_id, timeout=10)).status is TaskStatus.COMPLETED

    pruning = asyncio.create_task(plane.retention.prune())
    await asyncio.wait_for(store.held.wait(), 10)
    second = await plane.create_task(TaskDefinition(session_id=first.session_id))
    store.go.set()
    assert await pruning == 1
    assert [t.task_id for t in (await plane.list_tasks())[0]] == [second.task_id]

    session = await plane.get_session(first.session_id)  # SessionNotFound: pruned under the task
    assert session.task_ids == [second.task_id]
    assert await plane.records.contexts.get(first.session_id) == {"seen": 1}
    delivery, message = await deliveries.take()
    assert message.task_id == second.task_id and message.context == {"seen": 1}
    await harness.finish(worker, message, 2, context={"seen": 2})
    await delivery.ack()
    assert (await plane.wait_for_task(second.task_id, timeout=10)).status is TaskStatus.COMPLETED
    assert await plane.records.contexts.get(first.session_id) == {"seen": 2}
    await deliveries.aclose()
    await store.close()
