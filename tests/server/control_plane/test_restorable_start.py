"""A task's start message on the embedded broker is held in memory only: the task record is its
durable copy. A restarted server publishes it again from the record, with the attempts the record
has seen, so the new delivery is the next attempt and its reports are taken."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from llamactl.server.mq import topics
from llamactl.server.protocol import WorkerMessageKind, final_msg_id
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually

from .conftest import DEPLOYMENT, Deliveries, Server, report


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
