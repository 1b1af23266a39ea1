"""Deleting a session races the rest of the control plane: its tasks cancelled by the delete
never reach a worker, and no task can be accepted into it while it goes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence

from llamactl.server.errors import SessionNotFound
from llamactl.server.state.base import CommitResult, Delete, Write
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import wait_until

from .conftest import DEPLOYMENT, Deliveries, Harness


async def test_tasks_cancelled_by_a_session_delete_are_not_handed_out_when_its_task_ends_meanwhile(
    harness: Harness,
) -> None:
    """The running task's result comes in while the session is deleted: its end is stored, and
    passing the turn on waits for the delete, which holds the session. The tasks the delete
    cancels must not go to a worker on the way (a cancelled task never runs)."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    session = await plane.create_session()
    first = await plane.create_task(TaskDefinition(session_id=session.session_id))
    behind = [await plane.create_task(TaskDefinition(session_id=session.session_id)) for _ in range(2)]
    delivery, task = await deliveries.take()
    assert task.task_id == first.task_id

    # The session is busy while both come: the delete asks for it first, then the result lands.
    async with plane.dispatcher._locks.hold(session.session_id):
        deleting = asyncio.create_task(plane.delete_session(session.session_id))
        await wait_until(lambda: plane.dispatcher._locks._locks[session.session_id].users == 2, 10)
        await harness.finish(worker, task, "done")
        await delivery.ack()
        assert (await plane.wait_for_task(first.task_id, timeout=10)).status is TaskStatus.COMPLETED
        await wait_until(lambda: plane.dispatcher._locks._locks[session.session_id].users == 3, 10)
    await deleting
    await wait_until(lambda: not plane.dispatcher.sessions_in_memory, 10)

    for created in behind:
        assert (await plane.get_task(created.task_id)).status is TaskStatus.CANCELLED
    handed = None
    with contextlib.suppress(TimeoutError):
        _, handed = await deliveries.take(timeout=1.0)
    assert handed is None, f"task {handed.task_id}, cancelled with its session, was handed to a worker"
    await deliveries.aclose()


class _HeldDeletes(MemoryStateStore):
    """A memory store whose commits deleting a session wait for :attr:`go` (a slow commit)."""

    def __init__(self, sessions_ns: str) -> None:
        super().__init__()
        self._sessions_ns = sessions_ns
        self.held = asyncio.Event()
        self.go = asyncio.Event()

    async def commit(self, writes: Sequence[Write]) -> CommitResult:
        if any(isinstance(w, Delete) and w.ns == self._sessions_ns for w in writes):
            self.held.set()
            await self.go.wait()
        return await super().commit(writes)


async def test_a_task_created_while_its_session_is_deleted_is_refused_or_ends(harness: Harness) -> None:
    """A task accepted into a session being deleted must not stay queued for ever behind a
    session record that is gone: it is refused (the session is not found) or it ends."""
    store = _HeldDeletes(f"{DEPLOYMENT}/sessions")
    await store.start()
    harness.store = store
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    session = await plane.create_session()
    await plane.create_task(TaskDefinition(session_id=session.session_id))
    await deliveries.take()  # it runs: a new task of the session waits behind it

    deleting = asyncio.create_task(plane.delete_session(session.session_id))
    await asyncio.wait_for(store.held.wait(), 10)
    creating = asyncio.create_task(plane.create_task(TaskDefinition(session_id=session.session_id)))
    locks = plane.dispatcher._locks._locks

    def created_or_waits() -> bool:
        entry = locks.get(session.session_id)
        return creating.done() or (entry is not None and entry.users >= 2)

    await wait_until(created_or_waits, 10)
    store.go.set()
    await deleting
    try:
        created = await creating
    except SessionNotFound:
        pass
    else:
        done = await plane.wait_for_task(created.task_id, timeout=5)
        assert done.status.is_final
    await deliveries.aclose()
    await store.close()
