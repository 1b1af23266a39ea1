"""A `tasks/run` whose id the server made goes to its worker first (the embedded broker holds its
start message in memory, so a crash loses both) and its record is stored with the run's first
report when that comes soon, else alone. Its caller hears of it only once it is stored; another
reader of it meanwhile has it stored alone at once and waits for the record; a record that
cannot be stored takes the task back. A task whose id the caller chose is stored first, as
every other task is: its id may be taken."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.control_plane import ControlPlane
from llamactl.server.errors import LeaseLost, ShuttingDown, StateStoreError
from llamactl.server.mq import topics
from llamactl.server.mq.base import MessageQueue
from llamactl.server.protocol import TaskInput, TaskInputKind, WorkerMessageKind, final_msg_id
from llamactl.server.state.base import Cas, CommitResult, Write
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import TaskDefinition, TaskRecord, TaskStatus
from tests.e2e.waiting import eventually

from .conftest import DEPLOYMENT, Deliveries, Server, report


class HeldCommits:
    """Holds each commit that stores a new task record until :attr:`release` is set, then makes
    it (or raises :attr:`fail`, as a full disk would); :attr:`order` says what came first."""

    def __init__(self, store: MemoryStateStore, queue: MessageQueue, monkeypatch: pytest.MonkeyPatch) -> None:
        self.order: list[str] = []
        self.release = asyncio.Event()
        self.fail: StateStoreError | None = None
        commit, publish = store.commit, queue.publish_restorable

        async def held_commit(writes: Sequence[Write]) -> CommitResult:
            if any(
                isinstance(w, Cas) and w.ns.endswith("/tasks") and w.expected_version is None for w in writes
            ):
                self.order.append("commit")
                await self.release.wait()
                if self.fail is not None:
                    raise self.fail
            return await commit(writes)

        async def recorded_publish(topic: str, payload: bytes, **kwargs: object) -> int:
            self.order.append("publish")
            return await publish(topic, payload, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(store, "commit", held_commit)
        monkeypatch.setattr(queue, "publish_restorable", recorded_publish)


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Server, ControlPlane, MessageQueue]]:
    store = MemoryStateStore()
    await store.start()
    running = Server(tmp_path / "mq.sqlite", store)
    plane, worker = await running.start()
    try:
        yield running, plane, worker
    finally:
        await running.stop()
        await store.close()


@pytest.fixture
def held(server: tuple[Server, ControlPlane, MessageQueue], monkeypatch: pytest.MonkeyPatch) -> HeldCommits:
    running, plane, _ = server
    return HeldCommits(running.store, plane.queue, monkeypatch)


def start_run(plane: ControlPlane, definition: TaskDefinition | None = None) -> asyncio.Task[TaskRecord]:
    """A ``tasks/run`` of service ``a`` (a task id the server makes), running in the background."""
    return asyncio.create_task(
        plane.run_task(definition or TaskDefinition(service_id="a", input="{}"), timeout=20)
    )


async def finish(worker_delivery: Any, task_id: str, result: object = "done") -> None:
    """The worker's result for ``task_id`` (attempt 1), acked with the delivery."""
    await worker_delivery.ack_and_publish(
        topics.control_topic(DEPLOYMENT),
        report(WorkerMessageKind.TASK_COMPLETED, task_id, 1, result=result),
        msg_id=final_msg_id(task_id),
        key=task_id,
    )


async def feed(plane: ControlPlane) -> list[tuple[str, str]]:
    """The change feed's task entries: (task id, status)."""
    return [
        (c.data["task_id"], c.data["status"])
        for c in await plane.changes.read(0, limit=1000)
        if c.kind == "task.status"
    ]


async def test_a_run_goes_to_its_worker_first_and_is_stored_with_its_result(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits
) -> None:
    """One commit creates the task as its result leaves it: the record and the change-feed entry
    of the task handed out were never written (one write of each less per task)."""
    running, plane, worker = server
    plane.records.unstored.min_waited_on = 1  # held though it is the only run
    deliveries = Deliveries(worker)
    run = start_run(plane)
    delivery, message = await deliveries.take()
    assert held.order == ["publish"]  # nothing stored yet
    assert await running.store.get(f"{DEPLOYMENT}/tasks", message.task_id) is None
    await finish(delivery, message.task_id)

    async def committing() -> bool:
        return held.order == ["publish", "commit"]

    await eventually(committing, 10)
    assert not run.done() and plane.records.tasks_being_stored == 1
    held.release.set()
    done = await run
    assert done.task_id == message.task_id and done.status is TaskStatus.COMPLETED and done.result == "done"
    assert held.order == ["publish", "commit"]
    assert await feed(plane) == [(message.task_id, "completed")]
    assert (plane.records.unstored.stored_with_report, len(plane.records.unstored)) == (1, 0)
    assert plane.records.tasks_being_stored == 0
    await deliveries.aclose()


async def test_a_run_alone_is_stored_while_its_worker_runs_it_once_its_message_is_on_its_way(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn of the loop that hands the task out does not also build its record (27 us of a
    ~0.9 ms sequential round trip, measured in place): the worker starts that much sooner. The
    only run under way is stored at once, not held for its report: its commit is then off the
    round trip's path."""
    _, plane, worker = server
    build = plane.records.task_write

    def recorded_build(*args: Any) -> Cas:
        held.order.append("build")
        return build(*args)

    monkeypatch.setattr(plane.records, "task_write", recorded_build)
    plane.records.unstored.within = 3600.0  # were it held, only its report could store it
    deliveries = Deliveries(worker)
    run = start_run(plane)
    delivery, message = await deliveries.take()

    async def committing() -> bool:
        return held.order == ["publish", "build", "commit"]

    await eventually(committing, 10)
    assert len(plane.records.unstored) == 0
    held.release.set()
    await finish(delivery, message.task_id)
    assert (await run).result == "done"
    assert await feed(plane) == [(message.task_id, "queued"), (message.task_id, "completed")]
    await deliveries.aclose()


async def test_a_held_run_whose_first_report_is_late_is_stored_alone_in_time(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits
) -> None:
    _, plane, worker = server
    plane.records.unstored.min_waited_on = 1
    held.release.set()
    deliveries = Deliveries(worker)
    run = start_run(plane)
    delivery, message = await deliveries.take()

    async def stored_alone() -> bool:
        return held.order == ["publish", "commit"] and not plane.records.unstored

    await eventually(stored_alone, 10)
    assert await feed(plane) == [(message.task_id, "queued")]
    await finish(delivery, message.task_id)
    assert (await run).result == "done"
    assert await feed(plane) == [(message.task_id, "queued"), (message.task_id, "completed")]
    assert plane.records.unstored.stored_with_report == 0
    await deliveries.aclose()


async def test_runs_are_held_for_their_first_report_while_others_are_waited_on(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits
) -> None:
    """The first run, the only one its caller waits on, is stored at once; the second and third,
    handed out while the first is waited on, wait for their results and are stored with them."""
    _, plane, worker = server
    plane.records.unstored.within = 3600.0
    deliveries = Deliveries(worker, prefetch=8)
    runs = [start_run(plane)]
    first, first_message = await deliveries.take()
    runs.append(start_run(plane))
    second, second_message = await deliveries.take()
    runs.append(start_run(plane))
    third, third_message = await deliveries.take()
    assert held.order == ["publish", "commit", "publish", "publish"]
    assert len(plane.records.unstored) == 2
    held.release.set()
    for delivery, message in [(first, first_message), (second, second_message), (third, third_message)]:
        await finish(delivery, message.task_id)
    assert [(await run).result for run in runs] == ["done"] * 3
    assert plane.records.unstored.stored_with_report == 2
    assert [status for _, status in await feed(plane)] == ["queued", "completed", "completed", "completed"]
    await deliveries.aclose()


async def test_a_run_read_before_its_first_report_is_stored_alone_at_once_and_the_reader_waits(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits
) -> None:
    """An event report reads the task first: it has the record stored now (not after
    ``STORE_WITHIN``) and waits for that commit; without the wait in
    ``ControlPlaneRecords._load`` it would be dropped as a report of an unknown task."""
    running, plane, worker = server
    plane.records.unstored.within = 3600.0  # only the reader can have it stored
    plane.records.unstored.min_waited_on = 1  # held though it is the only run
    deliveries = Deliveries(worker)
    run = start_run(plane)
    delivery, message = await deliveries.take()
    event = {"value": {"n": 1}, "type": "Progress", "qualified_name": "m.Progress"}
    await worker.publish(
        topics.control_topic(DEPLOYMENT),
        report(WorkerMessageKind.TASK_EVENT, message.task_id, 1, event=event, event_index=0),
        key=message.task_id,
    )

    async def committing() -> bool:
        return held.order == ["publish", "commit"]

    await eventually(committing, 10)
    assert not run.done() and plane.records.tasks_being_stored == 1
    held.release.set()
    stream = plane.records.events_stream(message.task_id)

    async def event_stored() -> bool:
        return len(await running.store.read(stream)) == 1

    await eventually(event_stored, 10)
    await finish(delivery, message.task_id)
    assert (await run).result == "done"
    assert [status for _, status in await feed(plane)] == ["queued", "running", "completed"]
    await deliveries.aclose()


async def test_a_run_whose_record_cannot_be_stored_is_taken_back_from_its_worker(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits
) -> None:
    running, plane, worker = server
    deliveries = Deliveries(worker)
    run = start_run(plane)
    delivery, message = await deliveries.take()
    held.fail = StateStoreError("the state store's disk is full: try again once there is room")
    held.release.set()
    with pytest.raises(StateStoreError, match="disk is full"):
        await run
    print("injected: the new task's commit failed after its worker had taken it")
    inputs = worker.subscribe(topics.task_input_topic(DEPLOYMENT, message.task_id))
    cancel = TaskInput.model_validate_json((await asyncio.wait_for(anext(inputs), 10)).payload)
    assert cancel.kind is TaskInputKind.CANCEL
    await inputs.aclose()  # type: ignore[attr-defined]
    with pytest.raises(LeaseLost):
        await delivery.ack()  # the message was taken back
    assert await running.store.get(f"{DEPLOYMENT}/tasks", message.task_id) is None
    assert plane.records.tasks_being_stored == 0
    await deliveries.aclose()


async def test_a_run_whose_record_cannot_be_stored_with_its_result_fails_and_is_not_kept(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits
) -> None:
    """The commit of the record with the result fails (a full disk): the record is tried alone,
    fails too, and the caller hears of it; nothing is left held or half stored."""
    running, plane, worker = server
    plane.records.unstored.min_waited_on = 1  # held though it is the only run
    deliveries = Deliveries(worker)
    run = start_run(plane)
    delivery, message = await deliveries.take()
    await finish(delivery, message.task_id)

    async def committing() -> bool:
        return held.order == ["publish", "commit"]

    await eventually(committing, 10)
    held.fail = StateStoreError("the state store's disk is full: try again once there is room")
    held.release.set()
    with pytest.raises(StateStoreError, match="disk is full"):
        await run
    assert held.order == ["publish", "commit", "commit"]
    assert await running.store.get(f"{DEPLOYMENT}/tasks", message.task_id) is None
    assert (len(plane.records.unstored), plane.records.tasks_being_stored) == (0, 0)
    await deliveries.aclose()


async def test_runs_held_for_their_first_report_are_stored_when_the_server_stops(
    server: tuple[Server, ControlPlane, MessageQueue],
) -> None:
    running, plane, worker = server
    plane.records.unstored.within = 3600.0
    plane.records.unstored.min_waited_on = 1  # held though it is the only run
    deliveries = Deliveries(worker)
    run = start_run(plane)
    _, message = await deliveries.take()
    await plane.close()
    with pytest.raises(ShuttingDown):  # stored, then answered as every waiter is when the server stops
        await asyncio.wait_for(run, 10)
    stored = await running.store.get(f"{DEPLOYMENT}/tasks", message.task_id)
    assert stored is not None and b'"dispatched":true' in stored.value
    assert len(plane.records.unstored) == 0
    await deliveries.aclose()


async def test_a_run_taken_back_before_any_worker_had_it_never_reaches_one(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits
) -> None:
    _, plane, worker = server
    lost = start_run(plane)

    async def handed_out() -> bool:
        return held.order == ["publish", "commit"]

    await eventually(handed_out, 10)
    held.fail = StateStoreError("the state store's disk is full")
    held.release.set()
    with pytest.raises(StateStoreError):
        await lost
    held.fail = None
    later = await plane.create_task(TaskDefinition(service_id="a", input='{"n": 2}'))
    deliveries = Deliveries(worker)
    delivery, message = await deliveries.take()
    assert message.task_id == later.task_id  # the first one's message was gone, not just late
    await delivery.ack()
    await deliveries.aclose()


async def test_a_run_that_names_its_own_task_id_is_stored_before_it_is_handed_out(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits
) -> None:
    _, plane, worker = server
    held.release.set()
    deliveries = Deliveries(worker)
    run = start_run(plane, TaskDefinition(task_id="chosen", service_id="a", input="{}"))
    delivery, message = await deliveries.take()
    assert message.task_id == "chosen" and held.order == ["commit", "publish"]
    await delivery.ack_and_publish(
        topics.control_topic(DEPLOYMENT),
        report(WorkerMessageKind.TASK_COMPLETED, "chosen", 1, result="done"),
        msg_id=final_msg_id("chosen"),
        key="chosen",
    )
    assert (await run).result == "done"
    await deliveries.aclose()


async def test_a_run_whose_message_cannot_be_built_fails_alone_instead_of_waiting_for_itself(
    server: tuple[Server, ControlPlane, MessageQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the failure was stored from inside the wait for the task's first commit, which
    waited for that failure to be stored: the run never ended."""
    _, plane, _ = server
    publisher = plane.dispatcher._publisher

    def unbuildable(*args: object) -> bytes:
        raise ValueError("the input cannot be encoded")

    monkeypatch.setattr(publisher, "message", unbuildable)
    run = plane.run_task(TaskDefinition(service_id="a", input="{}"), timeout=20)
    failed = await asyncio.wait_for(run, 10)
    assert failed.status is TaskStatus.FAILED
    assert failed.error == "the task cannot be handed to its service: the input cannot be encoded"
    assert plane.records.tasks_being_stored == 0
