"""Bounded over time: finished tasks, their logs, one-task sessions and change-feed entries are
pruned; queues are bounded; nothing per task stays in memory once the task has ended."""

from __future__ import annotations

import json
import time

import pytest

from llamactl.server.control_plane import ControlPlane, ControlPlaneSettings, RetentionPolicy
from llamactl.server.errors import Overloaded
from llamactl.server.types import TaskDefinition, TaskStatus

from .conftest import Deliveries, Harness


async def run_through(
    harness: Harness, plane: ControlPlaneSettings | ControlPlane, n: int, session: str | None = None
) -> tuple[ControlPlane, list[str]]:
    """``n`` tasks through a control plane (a new one with these settings, or the one given)."""
    if not isinstance(plane, ControlPlane):
        plane = await harness.control_plane(plane)
    worker = await harness.queue()
    deliveries = Deliveries(worker, prefetch=64)
    ids = []
    for i in range(n):
        created = await plane.create_task(TaskDefinition(input=json.dumps({"i": i}), session_id=session))
        delivery, message = await deliveries.take()
        await harness.finish(worker, message, i, context={"seen": i})
        await delivery.ack()
        await plane.wait_for_task(created.task_id, timeout=10)
        ids.append(created.task_id)
    await deliveries.aclose()
    return plane, ids


async def test_the_oldest_finished_tasks_go_with_their_logs_and_one_task_sessions(harness: Harness) -> None:
    policy = RetentionPolicy(max_finished=5, changes_kept=8, every=3600)
    plane, ids = await run_through(harness, ControlPlaneSettings(retention=policy), 12)
    kept_session = await plane.create_session()
    assert len((await plane.list_tasks())[0]) == 12
    pruned = await plane.retention.prune()
    tasks, _ = await plane.list_tasks()
    print(f"pruned {pruned} of 12 finished tasks; kept {[t.task_id[:8] for t in tasks]}")
    assert pruned == 7 and [t.task_id for t in tasks] == ids[7:]
    sessions, _ = await plane.list_sessions()
    assert len(sessions) == 6  # the five kept tasks' own sessions, and the explicit one
    assert kept_session.session_id in {s.session_id for s in sessions}
    store = harness.store
    assert await store.log_length(plane.records.events_stream(ids[0])) == 0
    assert await store.get(plane.records.contexts_ns, (await plane.get_task(ids[7])).session_id) is not None
    assert len(await plane.changes.read(0, limit=1000)) == 8
    counts = await plane.task_counts()
    assert counts == {"a": {"completed": 5}}


async def test_finished_tasks_older_than_the_retention_age_go(harness: Harness) -> None:
    policy = RetentionPolicy(finished_age=3600, every=3600)
    plane, _ = await run_through(harness, ControlPlaneSettings(retention=policy), 3)
    assert await plane.retention.prune() == 0
    assert await plane.retention.prune(now=time.time() + 7200) == 3
    assert (await plane.list_tasks())[0] == []


async def test_a_session_named_by_later_tasks_is_not_pruned_with_its_first(harness: Harness) -> None:
    policy = RetentionPolicy(max_finished=1, every=3600)
    plane, _ = await run_through(harness, ControlPlaneSettings(retention=policy), 1)
    (first,), _ = await plane.list_tasks()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    again = await plane.create_task(TaskDefinition(session_id=first.session_id))
    delivery, message = await deliveries.take()
    await harness.finish(worker, message, "again")
    await delivery.ack()
    await plane.wait_for_task(again.task_id, timeout=10)
    await plane.retention.prune()
    assert (await plane.get_session(first.session_id)).task_ids == [again.task_id]
    await deliveries.aclose()


async def test_a_full_service_queue_refuses_new_tasks_with_a_retry_hint(harness: Harness) -> None:
    plane = await harness.control_plane(ControlPlaneSettings(max_queued={"a": 3}))
    for _ in range(3):
        await plane.create_task(TaskDefinition())  # nobody consumes: they stay queued
    with pytest.raises(Overloaded, match="has 3 tasks waiting") as refused:
        await plane.create_task(TaskDefinition())
    assert refused.value.retry_after >= 1
    await plane.create_task(TaskDefinition(service_id="b"))  # another service is not affected


async def test_nothing_per_task_or_session_stays_in_memory_once_tasks_end(harness: Harness) -> None:
    plane, _ = await run_through(harness, ControlPlaneSettings(), 30)
    await run_through(harness, plane, 10, (await plane.create_session()).session_id)
    assert plane.dispatcher.sessions_in_memory == 0
    assert plane.signals._listeners == {}
    broker = harness.broker
    assert broker._dispatcher is not None and broker._dispatcher.leases == {}
    assert all(t.entries == {} for t in broker._dispatcher._topics.values())
    assert (
        await plane.get_task((await plane.list_tasks(limit=1))[0][0].task_id)
    ).status is TaskStatus.COMPLETED
