"""A task's record says when its workflow waits for a person's answer (``waiting_for_answer``),
read from its events as the worker reads them: its last event asked a question (an
InputRequiredEvent) and no event sent in has reached it since. Reports are forged on a real
ZeroMQ broker, as a worker sends them."""

from __future__ import annotations

from llamactl.server.control_plane.control_plane import ControlPlane
from llamactl.server.protocol import (
    EVENT_DELIVERED,
    EVENT_REJECTED,
    event_msg_id,
)
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually

from .conftest import Deliveries, Harness, event_report

QUESTION = {
    "value": {"prefix": "What is the answer?"},
    "type": "InputRequiredEvent",
    "qualified_name": "workflows.events.InputRequiredEvent",
}


def _engine(kind: str) -> dict[str, object]:
    return {
        "value": {"input_id": "i1", "event": "HumanResponseEvent"},
        "type": kind,
        "qualified_name": f"llamactl.{kind}",
    }


async def _waits(plane: ControlPlane, task_id: str, expected: bool) -> bool:
    return (await plane.records.peek_task(task_id)).waiting_for_answer is expected


async def test_the_record_says_when_the_task_waits_for_an_answer(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition())
    delivery, task = await deliveries.take()
    task_id = task.task_id
    assert (await plane.get_task(task_id)).waiting_for_answer is False

    async def report(index: int, event: dict[str, object]) -> None:
        await harness.report(worker, event_report(task_id, index, event), event_msg_id(task_id, 1, index))

    await report(0, QUESTION)
    await eventually(lambda: _waits(plane, task_id, True), 10)
    await report(1, _engine(EVENT_REJECTED))  # an event sent in that did not fit: still waiting
    await report(2, _engine(EVENT_DELIVERED))  # the answer reached the run
    await eventually(lambda: _waits(plane, task_id, False), 10)
    # The question's report delivered again (its ack was lost; the broker took it as a new
    # message): stored once, and the answer still counts.
    await harness.report(worker, event_report(task_id, 0, QUESTION), "again")
    await report(3, _engine(EVENT_REJECTED))
    stream = plane.records.events_stream(task_id)

    async def stored(count: int) -> bool:
        return await harness.store.log_length(stream) == count

    await eventually(lambda: stored(4), 10)  # reports of a task are applied in order
    assert (await plane.get_task(task_id)).waiting_for_answer is False
    await report(4, QUESTION)
    await eventually(lambda: _waits(plane, task_id, True), 10)
    await report(5, {"value": {"n": 1}, "type": "Progress", "qualified_name": "m.Progress"})
    await eventually(lambda: _waits(plane, task_id, False), 10)  # as the worker sees it: moved on
    await report(6, QUESTION)
    await eventually(lambda: _waits(plane, task_id, True), 10)
    events = [e.type async for e in plane.task_events(task_id, follow=False)]
    assert events == [
        "InputRequiredEvent",
        EVENT_REJECTED,
        EVENT_DELIVERED,
        EVENT_REJECTED,
        "InputRequiredEvent",
        "Progress",
        "InputRequiredEvent",
    ]
    await harness.finish(worker, task, "done")
    await delivery.ack()
    done = await plane.wait_for_task(created.task_id, timeout=10)
    assert (done.status, done.waiting_for_answer) == (TaskStatus.COMPLETED, False)
    await deliveries.aclose()
