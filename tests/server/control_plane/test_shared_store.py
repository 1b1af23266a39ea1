"""Several control planes on one shared state store (PostgreSQL, each plane with a store object of
its own, as separate servers have) and one message queue: every task is answered through either
plane, a session's tasks run one at a time in creation order, its Context is never lost, and each
task is handed out once.

The worker's side is played by the test: a counter workflow that reads ``n`` from the session's
Context, answers ``n + 1`` and saves it back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from llamactl.server.control_plane import ControlPlane
from llamactl.server.mq.zeromq.broker import ZeroMQBroker
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind
from llamactl.server.state.base import StateStore
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually
from tests.postgres import PostgresSchema

from .conftest import Deliveries, Harness


class SharedHarness(Harness):
    """A Harness whose control planes each open their own store on one PostgreSQL schema."""

    def __init__(self, broker: ZeroMQBroker, pg: PostgresSchema) -> None:
        self.pg = pg
        self.stores: list[StateStore] = []
        super().__init__(broker, pg.store())

    async def plane(self) -> ControlPlane:
        store = self.pg.store()
        await store.start()
        self.stores.append(store)
        self.store = store
        return await self.control_plane()


@pytest_asyncio.fixture
async def shared(tmp_path: Path) -> AsyncIterator[SharedHarness]:
    broker = ZeroMQBroker(journal_path=tmp_path / "mq.sqlite", heartbeat_interval=0.2)
    await broker.start()
    pg = PostgresSchema()
    h = SharedHarness(broker, pg)
    try:
        yield h
    finally:
        await h.close()
        for store in h.stores:
            await store.close()
        await broker.close()
        await pg.drop()


class CounterWorker:
    """Runs every task of service ``a``: result = the session Context's ``n`` + 1, saved back."""

    def __init__(self, harness: Harness, deliveries: Deliveries) -> None:
        self.harness = harness
        self.deliveries = deliveries
        self.runs: Counter[str] = Counter()
        self.running: set[str] = set()
        self.overlaps = 0
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        queue = await self.harness.queue()
        self._pump = asyncio.create_task(self._run(queue))

    async def _run(self, queue: object) -> None:
        while True:
            delivery, task = await self.deliveries.take(timeout=3600)
            self.runs[task.task_id] += 1
            if any(t.startswith(task.session_id) for t in self.running):
                self.overlaps += 1
            self.running.add(f"{task.session_id}/{task.task_id}")
            n = int((task.context or {}).get("n", 0)) + 1
            await asyncio.sleep(0.01)  # a little work, so that tasks overlap if they are let to
            self.running.discard(f"{task.session_id}/{task.task_id}")
            await self.harness.finish(queue, task, n, context={"n": n})  # type: ignore[arg-type]
            await delivery.ack()

    async def aclose(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump


async def test_two_control_planes_answer_every_task_in_session_order_with_the_context_kept(
    shared: SharedHarness,
) -> None:
    a, b = await shared.plane(), await shared.plane()
    worker_queue = await shared.queue()
    deliveries = Deliveries(worker_queue, prefetch=16)
    worker = CounterWorker(shared, deliveries)
    await worker.start()
    try:
        session = await a.create_session()
        planes = [a, b]

        async def run(i: int) -> tuple[str, object]:
            definition = TaskDefinition(session_id=session.session_id, input=json.dumps({"i": i}))
            done = await planes[i % 2].run_task(definition, timeout=30)
            return done.task_id, done.result

        async with asyncio.timeout(60):
            answered = await asyncio.gather(*(run(i) for i in range(10)))
        assert len(answered) == 10
        records = [await b.get_task(task_id) for task_id, _ in answered]
        assert all(r.status is TaskStatus.COMPLETED for r in records)
        # Created at once through both planes: their order is the order they were stored in;
        # each saw the Context the one before it left, so the counter went 1..10, none lost.
        assert sorted(r.result for r in records) == list(range(1, 11))  # type: ignore[type-var]
        assert worker.overlaps == 0  # one task of the session at a time
        assert set(worker.runs.values()) == {1}  # each handed out once
        # Created one after another through alternating planes, waited for through the other.
        created = [
            await planes[i % 2].create_task(TaskDefinition(session_id=session.session_id)) for i in range(6)
        ]
        async with asyncio.timeout(30):
            done = [await planes[(i + 1) % 2].wait_for_task(t.task_id) for i, t in enumerate(created)]
        assert [d.result for d in done] == list(range(11, 17))  # in creation order
        assert set(worker.runs.values()) == {1} and worker.overlaps == 0
    finally:
        await worker.aclose()
        await deliveries.aclose()


async def test_event_streams_and_waits_follow_a_task_through_either_plane(shared: SharedHarness) -> None:
    a, b = await shared.plane(), await shared.plane()
    worker = await shared.queue()
    deliveries = Deliveries(worker)
    try:
        created = await a.create_task(TaskDefinition(input=json.dumps({"n": 3})))
        delivery, task = await deliveries.take()

        async def read(plane: ControlPlane) -> list[int]:
            # poll=600: without a wake-up from the store the reader would sit out the test's timeout.
            return [e.value["n"] async for e in plane.task_events(task.task_id, poll=600)]

        readers = [asyncio.create_task(read(plane)) for plane in (a, b)]
        waiter = asyncio.create_task(b.wait_for_task(created.task_id))
        for n in range(3):
            await shared.progress(worker, task.task_id, n)
        await shared.finish(worker, task, "done")
        await delivery.ack()
        async with asyncio.timeout(20):
            assert await asyncio.gather(*readers) == [[0, 1, 2], [0, 1, 2]]
            assert (await waiter).result == "done"
    finally:
        await deliveries.aclose()


async def test_every_plane_knows_every_replica_whichever_plane_heard_it(shared: SharedHarness) -> None:
    a, b = await shared.plane(), await shared.plane()
    worker = await shared.queue()

    def report(kind: WorkerMessageKind, replica: str, n: int) -> WorkerMessage:
        return WorkerMessage(
            kind=kind, replica_id=replica, service_id="a", host="other-host", pid=n, at=time.time()
        )

    async def states(replica: str) -> list[str | None]:
        out: list[str | None] = []
        for plane in (a, b):
            assert plane.inbox.mirror is not None
            await plane.inbox.mirror.sync()
            found = [r for r in plane.registry.status("a").replicas if r.replica_id == replica]
            out.append(found[0].state.value if found else None)
        return out

    for n, replica in enumerate(["a#h1-1", "a#h1-2", "a#h2-1"]):
        await shared.report(worker, report(WorkerMessageKind.REPLICA_UP, replica, n), f"up-{replica}")

    async def all_ready() -> bool:  # the reports are applied by whichever plane takes them
        seen = [await states(r) for r in ("a#h1-1", "a#h1-2", "a#h2-1")]
        return seen == [["ready", "ready"]] * 3

    await eventually(all_ready, 10)
    assert {p.registry.ready_replicas("a") for p in (a, b)} == {3}
    await shared.report(worker, report(WorkerMessageKind.REPLICA_STOPPING, "a#h1-2", 9), "stop-a#h1-2")

    async def draining() -> bool:
        return await states("a#h1-2") == ["draining", "draining"]

    await eventually(draining, 10)
    # A record of a replica silent for long is neither shown nor kept.
    assert a.inbox.mirror is not None
    stale = WorkerMessage(
        kind=WorkerMessageKind.REPLICA_HEARTBEAT, replica_id="a#gone", service_id="a", at=time.time() - 3600
    )
    await a.inbox.mirror.record(stale)
    assert await states("a#gone") == [None, None]
    assert await shared.stores[0].get(a.inbox.mirror.ns, "a#gone") is None


async def test_what_a_dead_server_left_half_done_is_picked_up_by_another(shared: SharedHarness) -> None:
    """Server A dies (simulated: it stops doing anything more) right after storing a task's end
    but before passing its session's turn on, and after handing a task out but before
    publishing it. Server B's turn check finishes both."""
    a, b = await shared.plane(), await shared.plane()
    worker = await shared.queue()
    deliveries = Deliveries(worker)
    try:
        session = await a.create_session()
        first = await a.create_task(TaskDefinition(session_id=session.session_id))
        second = await a.create_task(TaskDefinition(session_id=session.session_id))
        delivery, task = await deliveries.take()
        assert task.task_id == first.task_id

        async def nothing(*args: object, **kwargs: object) -> None:
            return None

        for plane in (a, b):  # whoever applies the report "dies" before moving the session on
            plane.dispatcher.finished = nothing  # type: ignore[method-assign]
        await shared.finish(worker, task, 1)
        await delivery.ack()
        await b.wait_for_task(first.task_id, timeout=10)
        with pytest.raises(TimeoutError):
            await deliveries.take(timeout=0.5)  # the second task is stuck behind a finished one
        assert await b.dispatcher.check_turns(older_than=0) == 1
        delivery, task = await deliveries.take()
        assert task.task_id == second.task_id
        await delivery.ack()

        a.dispatcher._publisher.publish = nothing  # type: ignore[method-assign]
        lost = await a.create_task(TaskDefinition())  # stored as handed out, never published
        with pytest.raises(TimeoutError):
            await deliveries.take(timeout=0.5)
        assert await b.dispatcher.check_turns(older_than=0) >= 1
        delivery, task = await deliveries.take()
        assert task.task_id == lost.task_id
        await delivery.ack()
    finally:
        await deliveries.aclose()


async def test_a_run_task_a_dead_server_stored_but_never_published_is_sent_by_another(
    shared: SharedHarness,
) -> None:
    """A task in a session of its own has no session record to hold its turn: another server's
    turn check finds it among the queued tasks and publishes it."""
    a, b = await shared.plane(), await shared.plane()
    worker = await shared.queue()
    deliveries = Deliveries(worker)
    try:

        async def nothing(*args: object, **kwargs: object) -> None:
            return None

        a.dispatcher._publisher.publish = nothing  # type: ignore[method-assign]
        lost = await a.create_task(TaskDefinition(), keep_context=False)
        with pytest.raises(TimeoutError):
            await deliveries.take(timeout=0.5)
        assert await b.dispatcher.check_turns(older_than=0) == 1
        delivery, task = await deliveries.take()
        assert task.task_id == lost.task_id
        await delivery.ack()
    finally:
        await deliveries.aclose()
