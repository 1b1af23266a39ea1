"""A run suspended at its question (its worker stopped while it waited for a person's answer) is
handed out again from there: a resume message with its Context, its question and how far it read
its inputs, counted as the next attempt. Reports are forged on a real ZeroMQ broker, as a worker
sends them."""

from __future__ import annotations

from typing import Any

import pytest

from llamactl.server.control_plane.control_plane import ControlPlane
from llamactl.server.mq.base import MessageQueue
from llamactl.server.protocol import (
    TaskResume,
    WorkerMessage,
    WorkerMessageKind,
    event_msg_id,
    final_msg_id,
    start_msg_id,
    suspended_msg_id,
)
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually

from .conftest import Deliveries, Harness, completed, event_report, record_calls

QUESTION = {
    "value": {"prefix": "What is the answer?"},
    "type": "InputRequiredEvent",
    "qualified_name": "workflows.events.InputRequiredEvent",
}
CONTEXT = {"state": {"asked": True}, "is_running": True}


def _report(task_id: str, kind: WorkerMessageKind, attempt: int, **fields: Any) -> WorkerMessage:
    return WorkerMessage(
        kind=kind, replica_id="a#1", service_id="a", task_id=task_id, attempt=attempt, **fields
    )


def _suspended(task_id: str, attempt: int = 1, index: int = 1) -> WorkerMessage:
    return _report(
        task_id,
        WorkerMessageKind.TASK_SUSPENDED,
        attempt,
        context=CONTEXT,
        event=QUESTION,
        inputs_from=3,
        event_index=index,
    )


async def _asked(harness: Harness, worker: MessageQueue, task_id: str) -> None:
    """Attempt 1 starts and asks its question (event 0)."""
    await harness.report(worker, _report(task_id, WorkerMessageKind.TASK_STARTED, 1), f"{task_id}:1:started")
    await harness.report(worker, event_report(task_id, 0, QUESTION), event_msg_id(task_id, 1, 0))


async def _resume_from(plane: ControlPlane, task_id: str, attempt: int) -> bool:
    return (await plane.records.peek_task(task_id)).resume_from == attempt


async def test_a_suspended_task_goes_out_again_from_its_question(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    await plane.create_task(TaskDefinition())
    delivery, task = await deliveries.take()
    task_id = task.task_id
    assert task.resume is None
    publishes = record_calls(monkeypatch, plane.queue, "publish_restorable")
    await _asked(harness, worker, task_id)
    await harness.report(worker, _suspended(task_id), suspended_msg_id(task_id, 1))
    await delivery.ack()  # a worker acks it with the report, in one step

    again, resumed = await deliveries.take()
    assert again.message.msg_id == start_msg_id(task_id, 1)
    assert resumed.resume == TaskResume(attempt=1, context=CONTEXT, question=QUESTION, inputs_from=3)
    assert again.attempt == 1  # the worker counts it as attempt 1 + 1
    record = await plane.records.peek_task(task_id)
    assert (record.status, record.resume_from, record.waiting_for_answer) == (TaskStatus.RUNNING, 1, True)

    # The report delivered again (its ack lost): applied once, nothing handed out twice.
    await harness.report(worker, _suspended(task_id), "again")
    started = _report(task_id, WorkerMessageKind.TASK_STARTED, 2, resumed=True)
    await harness.report(worker, started, f"{task_id}:2:started")
    await harness.report(worker, completed(task_id, "done", attempt=2), final_msg_id(task_id))
    done = await plane.wait_for_task(task_id, timeout=10)
    assert (done.status, done.result, done.attempts) == (TaskStatus.COMPLETED, "done", 2)
    assert len(publishes) == 1
    assert await plane.records.get_resume(task_id) is None  # gone with the run that ended
    markers = [e for e in await _events(plane, task_id) if e.type == "TaskAttempt"]
    assert [m.attempt for m in markers] == [2]
    assert "going on from the question attempt 1 asked" in markers[0].value["reason"]
    assert markers[0].value["resumed_from"] == 1
    await deliveries.aclose()


async def test_a_suspension_of_an_attempt_a_newer_one_replaced_changes_nothing(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    await plane.create_task(TaskDefinition())
    _, task = await deliveries.take()
    task_id = task.task_id
    # Attempt 1's worker was taken for dead, and attempt 2 started: attempt 1's late suspension
    # must not hand the task out a third time.
    await harness.report(worker, _report(task_id, WorkerMessageKind.TASK_STARTED, 2), f"{task_id}:2:started")
    await harness.report(worker, _suspended(task_id, attempt=1, index=0), suspended_msg_id(task_id, 1))
    await harness.report(worker, completed(task_id, "done", attempt=2), final_msg_id(task_id))
    done = await plane.wait_for_task(task_id, timeout=10)
    assert (done.status, done.attempts) == (TaskStatus.COMPLETED, 2)
    assert (await plane.records.peek_task(task_id)).resume_from == 0
    assert await plane.records.get_resume(task_id) is None
    await deliveries.aclose()


async def test_a_suspended_task_cancelled_before_a_worker_takes_it_never_runs_again(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker, prefetch=1)
    await plane.create_task(TaskDefinition())
    delivery, task = await deliveries.take()
    task_id = task.task_id
    await deliveries.aclose()  # nobody takes the resume message
    await _asked(harness, worker, task_id)
    await harness.report(worker, _suspended(task_id), suspended_msg_id(task_id, 1))
    await delivery.ack()
    await eventually(lambda: _resume_from(plane, task_id, 1), 10)
    cancelled = await plane.cancel_task(task_id)
    assert cancelled.status is TaskStatus.CANCELLED  # taken back from the queue: at once


async def _events(plane: ControlPlane, task_id: str) -> list[Any]:
    return [e async for e in plane.task_events(task_id)]
