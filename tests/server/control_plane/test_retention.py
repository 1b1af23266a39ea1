"""Bounded over time: finished tasks, their logs, one-task sessions and change-feed entries are
pruned; queues are bounded; nothing per task stays in memory once the task has ended."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from llamactl.server.control_plane import ControlPlane, ControlPlaneSettings, RetentionPolicy
from llamactl.server.errors import Overloaded
from llamactl.server.state import StateStore
from llamactl.server.types import TaskDefinition, TaskStatus

from .conftest import Deliveries, Harness, record_calls

T = TypeVar("T")


async def run_through(
    harness: Harness,
    plane: ControlPlaneSettings | ControlPlane,
    n: int,
    session: str | None = None,
    *,
    run: bool = False,
) -> tuple[ControlPlane, list[str]]:
    """``n`` tasks through a control plane (a new one with these settings, or the one given);
    ``run``: as ``tasks/run`` makes them (a session of their own, no Context kept)."""
    if not isinstance(plane, ControlPlane):
        plane = await harness.control_plane(plane)
    worker = await harness.queue()
    deliveries = Deliveries(worker, prefetch=64)
    ids = []
    for i in range(n):
        definition = TaskDefinition(input=json.dumps({"i": i}), session_id=session)
        created = await plane.create_task(definition, keep_context=not run)
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
    assert await store.get(plane.records.contexts.ns, (await plane.get_task(ids[7])).session_id) is not None
    assert len(await plane.changes.read(0, limit=1000)) == 8
    counts = await plane.task_counts()
    assert counts == {"a": {"completed": 5}}


async def test_run_tasks_go_without_a_session_looked_up_or_left_behind(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tasks of ``tasks/run`` have sessions of their own with no record: pruning them reads no
    session, and a Context a worker sent anyway was never stored, so nothing is left."""
    policy = RetentionPolicy(max_finished=2, every=3600)
    plane, ids = await run_through(harness, ControlPlaneSettings(retention=policy), 5, run=True)
    records = plane.records
    gets, queries = (record_calls(monkeypatch, harness.store, name) for name in ("get", "query"))
    assert await plane.retention.prune() == 3
    monkeypatch.undo()
    assert records.sessions_ns not in [ns for ns, *_ in gets + queries]
    assert [t.task_id for t in (await plane.list_tasks())[0]] == ids[3:]
    assert (await plane.list_sessions())[0] == []
    assert await harness.store.list(records.contexts.ns) == []


async def test_the_sessions_made_for_pruned_tasks_are_read_together(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session made for its task (``tasks/create`` without one) is pruned with it: the pass
    reads all such sessions at once, not each one and its tasks (a round trip each on PostgreSQL:
    ~370 us of the loop per pruned task)."""
    policy = RetentionPolicy(max_finished=3, every=3600)
    plane, ids = await run_through(harness, ControlPlaneSettings(retention=policy), 30)
    records = plane.records
    gets, many, queries = (record_calls(monkeypatch, harness.store, n) for n in ("get", "get_many", "query"))
    assert await plane.retention.prune() == 27
    monkeypatch.undo()
    assert [ns for ns, *_ in gets if ns == records.sessions_ns] == []
    assert [field for _, field, *_ in queries if field == "session"] == []
    assert [(ns, len(keys)) for ns, keys in many] == [(records.sessions_ns, 27)]
    assert len((await plane.list_sessions())[0]) == 3
    assert [t.task_id for t in (await plane.list_tasks())[0]] == ids[27:]


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
    assert broker._dispatcher is not None
    # The last report is acked just after its task is seen finished: give the ack its moment.
    deadline = asyncio.get_running_loop().time() + 10
    while broker._dispatcher.leases:
        assert asyncio.get_running_loop().time() < deadline, f"leases kept: {broker._dispatcher.leases}"
        await asyncio.sleep(0.01)
    assert all(t.entries == {} for t in broker._dispatcher.topics._topics.values())
    assert (
        await plane.get_task((await plane.list_tasks(limit=1))[0][0].task_id)
    ).status is TaskStatus.COMPLETED


class StoreRounds:
    """Makes every store call wait for the next round, as under load every call waits for the
    store's next batch; counts the rounds a piece of work needs (its calls that depend on each
    other), which is what bounds how fast it goes on a busy server."""

    def __init__(self, store: StateStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pending: list[asyncio.Future[None]] = []
        for name in ("get", "list", "query", "count", "commit", "read", "delete_log", "trim_log", "append"):
            monkeypatch.setattr(store, name, self._after_a_round(getattr(store, name)))

    def _after_a_round(self, call: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def delayed(*args: Any, **kwargs: Any) -> Any:
            turn = asyncio.get_running_loop().create_future()
            self.pending.append(turn)
            await turn
            return await call(*args, **kwargs)

        return delayed

    async def count(self, work: Awaitable[T]) -> tuple[T, int]:
        task = asyncio.ensure_future(work)
        rounds = 0
        while not task.done():
            for _ in range(20):  # let the work submit all it can before the round ends
                await asyncio.sleep(0)
            if self.pending:
                rounds += 1
                turns, self.pending = self.pending, []
                for turn in turns:
                    turn.set_result(None)
        return task.result(), rounds


async def test_a_prune_pass_takes_a_few_store_rounds_however_many_tasks_it_deletes(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each task deleted one after another (a read of its session, of the session's tasks, the
    # log, the record) made pruning slower than a busy server's intake: the store grew for good.
    policy = RetentionPolicy(max_finished=10, every=3600)
    plane, ids = await run_through(harness, ControlPlaneSettings(retention=policy), 120)
    shared = (await plane.create_session()).session_id
    _, in_session = await run_through(harness, plane, 5, shared)
    for task_id in ids:  # an event in each log (the harness reports results without events)
        await harness.store.append(plane.records.events_stream(task_id), b"{}")
    rounds = StoreRounds(harness.store, monkeypatch)
    pruned, taken = await rounds.count(plane.retention.prune())
    print(f"pruned {pruned} tasks in {taken} store rounds")
    assert pruned == 115 and taken <= 8
    monkeypatch.undo()
    assert [t.task_id for t in (await plane.list_tasks())[0]] == ids[115:] + in_session
    assert (await plane.get_session(shared)).task_ids == in_session
    assert [await harness.store.read(plane.records.events_stream(i)) for i in ids[:115]] == [[]] * 115
    assert await harness.store.read(plane.records.events_stream(ids[-1])) != []


async def test_a_retention_pass_that_is_behind_is_followed_by_a_pause_as_long_as_itself(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: passes behind ran back to back, holding the loop for a second and more per
    interval on a busy server (throughput halved, p99 x4-8, measured with 32 clients)."""
    policy = RetentionPolicy(batch=4, every=3600)
    plane, _ = await run_through(harness, ControlPlaneSettings(retention=policy), 1)
    loop = asyncio.get_running_loop()
    passes: list[tuple[float, float]] = []
    results = iter([4, 4, 1])
    third = asyncio.Event()

    async def prune(now: float | None = None) -> int:
        started = loop.time()
        await asyncio.sleep(0.05)  # a pass's work
        passes.append((started, loop.time()))
        pruned = next(results)
        if len(passes) == 3:
            third.set()
        return pruned

    monkeypatch.setattr(plane.retention, "prune", prune)
    running = asyncio.create_task(plane.retention.run())
    await asyncio.wait_for(third.wait(), 10)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    for (start, end), (after, _) in itertools.pairwise(passes):
        assert after - end >= (end - start) * 0.99  # behind: a pause as long as the pass
    assert plane.retention.pause_after(1, 0.05) == 3600  # caught up: the interval
    assert plane.retention.pause_after(4, 7200) == 3600  # never longer than the interval


async def test_a_change_feed_far_beyond_its_bound_is_trimmed_over_paced_passes(harness: Harness) -> None:
    policy = RetentionPolicy(batch=1, changes_kept=2, every=3600)
    plane, _ = await run_through(harness, ControlPlaneSettings(retention=policy), 4, run=True)
    before = len(await plane.changes.read(0, limit=1000))
    assert before > 2 + 4  # more due than one pass trims (4 per task it may delete, batch 1)
    await plane.retention.prune()
    assert plane.retention.pruned_changes == 4
    assert plane.retention.pause_after(0, 0.01) == 0.01  # behind on the feed: paced, not idle
    while plane.retention.pause_after(0, 0.01) != 3600:
        await plane.retention.prune()
    assert len(await plane.changes.read(0, limit=1000)) == 2
