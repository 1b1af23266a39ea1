"""A task whose start message the queue refuses waits in the control plane and goes out once the
queue takes it; its session does not stay blocked. The control plane talks to the broker over a
socket here, so its start messages are journaled and a full journal disk refuses them (the
in-process link holds them in memory instead: tests/e2e/faults/test_stuck_sessions.py)."""

from __future__ import annotations

from pathlib import Path

from llamactl.server.errors import PublishRejected
from llamactl.server.mq.zeromq.broker import ZeroMQBroker
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.faults import small_disk, use_up

from .conftest import Deliveries, Harness


async def test_a_task_whose_publish_is_refused_goes_out_once_the_journal_can_take_it(tmp_path: Path) -> None:
    """Before: the task was stored as handed out but never published, and its session blocked."""
    with small_disk(tmp_path / "journal", "8m") as disk:
        broker = ZeroMQBroker(journal_path=tmp_path / "journal" / "mq.sqlite", heartbeat_interval=0.2)
        await broker.start()
        store = MemoryStateStore()
        await store.start()
        harness = Harness(broker, store)
        try:
            plane = await harness.control_plane()
            worker = await harness.queue()
            session = await plane.create_session()
            disk.fill()
            await use_up(
                lambda n, v: worker.publish("work.cp.filler", v, msg_id=f"filler-{n}"), PublishRejected
            )
            first = await plane.create_task(TaskDefinition(session_id=session.session_id))
            second = await plane.create_task(TaskDefinition(session_id=session.session_id))
            print("injected: the journal's disk is full while two tasks of one session are created")
            assert (await plane.get_task(first.task_id)).status is TaskStatus.QUEUED
            deliveries = Deliveries(worker)
            disk.free()
            for created in (first, second):
                delivery, task = await deliveries.take(timeout=30)
                assert task.task_id == created.task_id
                await harness.finish(worker, task, created.task_id)
                await delivery.ack()
                done = await plane.wait_for_task(created.task_id, timeout=10)
                assert done.status is TaskStatus.COMPLETED and done.result == created.task_id
            await deliveries.aclose()
        finally:
            await harness.close()
            await store.close()
            await broker.close()
