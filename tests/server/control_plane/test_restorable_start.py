"""A task's start message on the embedded broker is held in memory only: the task record is its
durable copy. A restarted server publishes it again from the record, with the attempts the record
has seen, so the new delivery is the next attempt and its reports are taken."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from llamactl.server.control_plane import ControlPlane, ServiceInfo, ServiceRegistry
from llamactl.server.mq import topics
from llamactl.server.mq.base import MessageQueue
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.zeromq.broker import ZeroMQBroker
from llamactl.server.orchestrator import Orchestrator
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind, final_msg_id
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually

from .conftest import DEPLOYMENT, Deliveries


class Server:
    """What ``llamactl serve`` runs in one process: a broker whose reports go direct, and a
    control plane linked to it in-process."""

    def __init__(self, journal: Path, store: MemoryStateStore) -> None:
        self.broker = ZeroMQBroker(
            journal_path=journal, direct_topics=[topics.control_topic(DEPLOYMENT)], heartbeat_interval=0.2
        )
        self.store = store
        self.plane: ControlPlane | None = None
        self.worker: MessageQueue | None = None

    async def start(self) -> tuple[ControlPlane, MessageQueue]:
        await self.broker.start()
        queue = self.broker.connect_local()
        await queue.start()
        self.plane = ControlPlane(
            DEPLOYMENT,
            store=self.store,
            queue=queue,
            orchestrator=Orchestrator(DEPLOYMENT, ["a"], "a"),
            registry=ServiceRegistry([ServiceInfo(service_id="a", name="A")]),
        )
        await self.plane.start()
        self.worker = connect_queue(self.broker.client_config)
        await self.worker.start()
        return self.plane, self.worker

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.close()
        if self.plane is not None:
            await self.plane.close()
            await self.plane.queue.close()
        await self.broker.close()


def report(kind: WorkerMessageKind, task_id: str, attempt: int, **fields: object) -> bytes:
    msg = WorkerMessage(
        kind=kind, replica_id="a#1", service_id="a", task_id=task_id, attempt=attempt, **fields
    )
    return msg.model_dump_json().encode()


async def test_a_restarted_server_sends_a_running_task_again_as_its_next_attempt(tmp_path: Path) -> None:
    journal = tmp_path / "mq.sqlite"
    store = MemoryStateStore()
    await store.start()
    first = Server(journal, store)
    plane, worker = await first.start()
    try:
        created = await plane.create_task(TaskDefinition(input="{}"))
        deliveries = Deliveries(worker)
        delivery, _ = await deliveries.take()
        assert delivery.attempt == 1
        await worker.publish(
            topics.control_topic(DEPLOYMENT),
            report(WorkerMessageKind.TASK_STARTED, created.task_id, 1),
            msg_id=f"{created.task_id}:1:started",
        )

        async def running() -> bool:
            return (await plane.get_task(created.task_id)).status is TaskStatus.RUNNING

        await eventually(running, 10)
        with sqlite3.connect(journal) as db:  # nothing of the start message was journaled
            assert list(db.execute("SELECT msg_id FROM msg WHERE msg_id LIKE '%:start'")) == []
        await deliveries.aclose()
    finally:
        await first.stop()  # the server goes away mid-task: its broker's memory with it

    second = Server(journal, store)
    plane, worker = await second.start()
    try:
        deliveries = Deliveries(worker)
        delivery, message = await deliveries.take()
        assert message.task_id == created.task_id
        assert delivery.attempt == 2  # the record had seen attempt 1
        await delivery.ack_and_publish(
            topics.control_topic(DEPLOYMENT),
            report(WorkerMessageKind.TASK_COMPLETED, created.task_id, 2, result="done"),
            msg_id=final_msg_id(created.task_id),
            key=created.task_id,
        )
        done = await plane.wait_for_task(created.task_id, timeout=10)
        assert done.status is TaskStatus.COMPLETED and done.result == "done" and done.attempts == 2
        assert second.broker.handed_locally == 1  # the control plane took the result by a call
        await deliveries.aclose()
    finally:
        await second.stop()
        await store.close()
