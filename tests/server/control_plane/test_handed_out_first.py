"""A `tasks/run` whose id the server made goes to its worker first and is stored while the worker
starts on it (the embedded broker holds its start message in memory, so a crash loses both). Its
caller hears of it only once it is stored; a report that comes back sooner waits for the record;
a record that cannot be stored takes the task back. A task whose id the caller chose is stored
first, as every other task is: its id may be taken."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.control_plane import ControlPlane
from llamactl.server.errors import LeaseLost, StateStoreError
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


async def test_a_run_goes_to_its_worker_before_its_record_is_stored_and_its_result_waits_for_it(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits
) -> None:
    """Fails without the wait in ``ControlPlaneRecords._load``: the result is dropped as a report
    of an unknown task and the run never ends."""
    running, plane, worker = server
    deliveries = Deliveries(worker)
    run = start_run(plane)
    delivery, message = await deliveries.take()
    assert held.order == ["publish", "commit"]
    assert await running.store.get(f"{DEPLOYMENT}/tasks", message.task_id) is None  # not stored yet
    await delivery.ack_and_publish(
        topics.control_topic(DEPLOYMENT),
        report(WorkerMessageKind.TASK_COMPLETED, message.task_id, 1, result="done"),
        msg_id=final_msg_id(message.task_id),
        key=message.task_id,
    )

    async def result_taken() -> bool:
        return running.broker.handed_locally == 1

    await eventually(result_taken, 10)
    assert not run.done() and plane.records.tasks_being_stored == 1
    held.release.set()
    done = await run
    assert done.task_id == message.task_id and done.status is TaskStatus.COMPLETED and done.result == "done"
    assert plane.records.tasks_being_stored == 0
    await deliveries.aclose()


async def test_a_run_s_record_is_built_only_once_its_message_is_on_its_way(
    server: tuple[Server, ControlPlane, MessageQueue], held: HeldCommits, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The turn of the loop that hands the task out does not also build its record (27 us of a
    ~0.9 ms sequential round trip, measured in place): the worker starts that much sooner."""
    _, plane, worker = server
    build = plane.records.task_write

    def recorded_build(*args: Any) -> Cas:
        held.order.append("build")
        return build(*args)

    monkeypatch.setattr(plane.records, "task_write", recorded_build)
    held.release.set()
    deliveries = Deliveries(worker)
    run = start_run(plane)
    delivery, message = await deliveries.take()
    await delivery.ack_and_publish(
        topics.control_topic(DEPLOYMENT),
        report(WorkerMessageKind.TASK_COMPLETED, message.task_id, 1, result="done"),
        msg_id=final_msg_id(message.task_id),
        key=message.task_id,
    )
    assert (await run).result == "done"
    assert held.order[:3] == ["publish", "build", "commit"]
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
