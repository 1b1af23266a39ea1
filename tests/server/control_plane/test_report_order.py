"""A task's reports are stored in the order its worker sent them, whatever order the queue hands
them out in (the control plane does not rely on the queue's per-key order)."""

from __future__ import annotations

import asyncio
import json

from llamactl.server.control_plane import ControlPlane
from llamactl.server.mq import topics
from llamactl.server.mq.base import MessageQueue
from llamactl.server.protocol import WorkerMessage, WorkerMessageKind, event_msg_id, final_msg_id
from llamactl.server.types import EventEnvelope, TaskDefinition, TaskStatus

from .conftest import DEPLOYMENT, Deliveries, Harness, completed, progress


async def _send_unordered(queue: MessageQueue, msg: WorkerMessage, msg_id: str) -> None:
    """Publish with a key of its own: the broker gives such messages no order among themselves."""
    await queue.publish(
        topics.control_topic(DEPLOYMENT), msg.model_dump_json().encode(), msg_id=msg_id, key=msg_id
    )


async def test_events_and_result_delivered_backwards_are_stored_in_the_order_sent(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input=json.dumps({})))
    delivery, task = await deliveries.take()
    stop = {"value": {"result": "done"}, "type": "StopEvent", "qualified_name": "w.StopEvent"}
    final = completed(task.task_id, "done", event_index=3, events=[stop])
    await _send_unordered(worker, final, final_msg_id(task.task_id))
    for n in (2, 1, 0):
        await _send_unordered(worker, progress(task.task_id, n), event_msg_id(task.task_id, 1, n))
    await delivery.ack()
    done = await plane.wait_for_task(created.task_id, timeout=10)
    assert done.status is TaskStatus.COMPLETED and done.result == "done"
    events = [e async for e in plane.task_events(task.task_id)]
    assert [e.type for e in events] == ["Progress", "Progress", "Progress", "StopEvent"]
    assert [e.value for e in events[:3]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert plane.inbox.counters.late_events == 0
    assert plane.inbox.order.waited >= 3  # the result and events 2 and 1 each came too early
    await deliveries.aclose()


async def test_events_sent_several_to_a_report_are_stored_in_order_once_each(harness: Harness) -> None:
    """A run that streams faster than the queue confirms sends the events that came meanwhile in
    one report: they are stored after the events before them, each once, whatever the order of
    the reports or how often one is delivered."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input=json.dumps({})))
    delivery, task = await deliveries.take()

    def envelope(n: int) -> dict[str, object]:
        return {"value": {"n": n}, "type": "Progress", "qualified_name": "m.Progress"}

    def batch(first: int, count: int) -> WorkerMessage:
        events = [envelope(n) for n in range(first, first + count)]
        return _report(task.task_id, WorkerMessageKind.TASK_EVENT, 1, events=events, event_index=first)

    final = completed(task.task_id, "done", event_index=6)
    await _send_unordered(worker, final, final_msg_id(task.task_id))
    await _send_unordered(worker, batch(3, 3), event_msg_id(task.task_id, 1, 3))
    await _send_unordered(worker, batch(1, 2), event_msg_id(task.task_id, 1, 1))
    await _send_unordered(worker, progress(task.task_id, 0), event_msg_id(task.task_id, 1, 0))
    await delivery.ack()
    done = await plane.wait_for_task(created.task_id, timeout=10)
    assert done.status is TaskStatus.COMPLETED
    # delivered again (its ack was lost, say): every event of it is known, none stored twice
    await harness.report(worker, batch(1, 2), event_msg_id(task.task_id, 1, 1) + ":again")
    await _send_unordered(worker, progress(task.task_id, 6), event_msg_id(task.task_id, 1, 6))
    deadline = asyncio.get_running_loop().time() + 10
    while plane.inbox.counters.late_events < 3:  # the batch (2 events) and the event after the end
        assert asyncio.get_running_loop().time() < deadline, "the late reports were never dropped"
        await asyncio.sleep(0.01)
    events = [e async for e in plane.task_events(task.task_id)]
    assert [e.value for e in events] == [{"n": n} for n in range(6)]
    assert [e.seq for e in events] == list(range(6))
    await deliveries.aclose()


async def test_a_report_of_several_events_ending_with_a_question_leaves_the_task_waiting(
    harness: Harness,
) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    await plane.create_task(TaskDefinition(input=json.dumps({})))
    delivery, task = await deliveries.take()
    question = {
        "value": {"prefix": "name?"},
        "type": "InputRequiredEvent",
        "qualified_name": "w.InputRequiredEvent",
    }
    first = {"value": {"n": 0}, "type": "Progress", "qualified_name": "m.Progress"}
    report = _report(task.task_id, WorkerMessageKind.TASK_EVENT, 1, events=[first, question], event_index=0)
    await harness.report(worker, report, event_msg_id(task.task_id, 1, 0))
    deadline = asyncio.get_running_loop().time() + 10
    while not (await plane.records.get_task(task.task_id)).waiting_for_answer:
        assert asyncio.get_running_loop().time() < deadline, "the task never waited for its answer"
        await asyncio.sleep(0.01)
    stored = await plane.records.get_task(task.task_id)
    assert stored.status is TaskStatus.RUNNING
    logged = await harness.store.read(plane.records.events_stream(task.task_id))
    assert [json.loads(e.value)["type"] for e in logged] == ["Progress", "InputRequiredEvent"]
    await delivery.ack()
    await deliveries.aclose()


async def test_a_report_whose_predecessor_never_comes_is_stored_after_a_while(harness: Harness) -> None:
    plane = await harness.control_plane()
    plane.inbox.order._give_up_after = 0.3
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input=json.dumps({})))
    delivery, task = await deliveries.take()
    await _send_unordered(worker, progress(task.task_id, 1), event_msg_id(task.task_id, 1, 1))  # 0 is lost
    final = completed(task.task_id, "done", event_index=2)
    await _send_unordered(worker, final, final_msg_id(task.task_id))
    await delivery.ack()
    assert (await plane.wait_for_task(created.task_id, timeout=10)).result == "done"
    assert [e.value for e in [e async for e in plane.task_events(task.task_id)]] == [{"n": 1}]
    assert plane.inbox.order.gave_up == 1
    await deliveries.aclose()


async def test_a_late_event_of_a_finished_task_does_not_wait_for_its_missing_predecessor(
    harness: Harness,
) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input=json.dumps({})))
    delivery, task = await deliveries.take()
    await harness.finish(worker, task, "done")
    await delivery.ack()
    await plane.wait_for_task(created.task_id, timeout=10)
    # Event 5 of the finished attempt comes late, and events 0-4 never will: it is dropped at once.
    started = asyncio.get_running_loop().time()
    await _send_unordered(worker, progress(task.task_id, 5), event_msg_id(task.task_id, 1, 5))
    deadline = started + 10
    while plane.inbox.counters.late_events == 0:
        assert asyncio.get_running_loop().time() < deadline, "the late event was never dropped"
        await asyncio.sleep(0.01)
    assert asyncio.get_running_loop().time() - started < 5  # not the 60 s given to a missing one
    assert plane.inbox.order.gave_up == 0
    await deliveries.aclose()


def _report(task_id: str, kind: WorkerMessageKind, attempt: int, **fields: object) -> WorkerMessage:
    return WorkerMessage(
        kind=kind, replica_id="a#1", service_id="a", task_id=task_id, attempt=attempt, **fields
    )


async def test_events_of_an_attempt_that_a_newer_one_replaced_are_dropped(harness: Harness) -> None:
    """Found with a worker stopped (SIGSTOP) for longer than the broker waits for its heartbeats:
    its task went out again, and on SIGCONT both attempts ran and streamed into one log, the
    countdown reading 20, 11, 19, 10, ... after the second attempt's marker."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input=json.dumps({})))
    delivery, task = await deliveries.take()
    tid = task.task_id
    K = WorkerMessageKind
    await harness.report(worker, _report(tid, K.TASK_STARTED, 1), f"{tid}:1:started")
    await harness.report(worker, progress(tid, 0), event_msg_id(tid, 1, 0))
    await harness.report(worker, _report(tid, K.TASK_STARTED, 2), f"{tid}:2:started")
    await harness.report(worker, progress(tid, 1), event_msg_id(tid, 1, 1))  # attempt 1 runs on
    second = {"value": {"n": 0, "attempt": 2}, "type": "Progress", "qualified_name": "m.Progress"}
    await harness.report(
        worker, _report(tid, K.TASK_EVENT, 2, event=second, event_index=0), event_msg_id(tid, 2, 0)
    )
    stop = {"value": {"result": "one"}, "type": "StopEvent", "qualified_name": "w.StopEvent"}
    final = _report(tid, K.TASK_COMPLETED, 1, result="one", event_index=2, events=[stop])
    await harness.report(worker, final, final_msg_id(tid))  # attempt 1 finishes first: its result wins
    await delivery.ack()
    done = await plane.wait_for_task(created.task_id, timeout=10)
    assert done.status is TaskStatus.COMPLETED and done.result == "one"
    events = [e async for e in plane.task_events(tid)]
    assert [(e.type, e.attempt) for e in events] == [("Progress", 1), ("TaskAttempt", 2), ("Progress", 2)]
    assert plane.inbox.counters.superseded_events == 2  # attempt 1's event 1 and its StopEvent
    await deliveries.aclose()


async def _wait_for_events(plane: ControlPlane, task_id: str, count: int) -> list[EventEnvelope]:
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        events = [e async for e in plane.task_events(task_id, follow=False)]
        if len(events) >= count:
            return events
        assert asyncio.get_running_loop().time() < deadline, f"only {len(events)} events were stored"
        await asyncio.sleep(0.01)


async def test_an_event_stored_before_its_started_report_marks_the_task_running(harness: Harness) -> None:
    """Seen on Redis + PostgreSQL: a task's first event was stored just before its started
    report, and in between `tasks where` said the task had "not reached a worker yet" of a task
    that had just asked its question. An event of an attempt shows that the attempt started."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input=json.dumps({})))
    delivery, task = await deliveries.take()
    tid = task.task_id
    await _send_unordered(worker, progress(tid, 0), event_msg_id(tid, 1, 0))
    await _wait_for_events(plane, tid, 1)
    record = await plane.get_task(created.task_id)
    assert record.status is TaskStatus.RUNNING and record.replica_id == "a#1"
    await harness.report(worker, _report(tid, WorkerMessageKind.TASK_STARTED, 1), f"{tid}:1:started")
    await harness.finish(worker, task, "done")
    await delivery.ack()
    assert (await plane.wait_for_task(created.task_id, timeout=10)).result == "done"
    assert [e.type for e in [e async for e in plane.task_events(tid)]] == ["Progress"]
    await deliveries.aclose()


async def test_a_retry_whose_event_comes_before_its_started_report_logs_its_marker_first(
    harness: Harness,
) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition(input=json.dumps({})))
    delivery, task = await deliveries.take()
    tid = task.task_id
    K = WorkerMessageKind
    await harness.report(worker, _report(tid, K.TASK_STARTED, 1), f"{tid}:1:started")
    await harness.report(worker, progress(tid, 0), event_msg_id(tid, 1, 0))
    await _wait_for_events(plane, tid, 1)
    second = {"value": {"n": 0, "attempt": 2}, "type": "Progress", "qualified_name": "m.Progress"}
    event = _report(tid, K.TASK_EVENT, 2, event=second, event_index=0)
    await _send_unordered(worker, event, event_msg_id(tid, 2, 0))
    events = await _wait_for_events(plane, tid, 3)
    assert [(e.type, e.attempt) for e in events] == [("Progress", 1), ("TaskAttempt", 2), ("Progress", 2)]
    record = await plane.get_task(created.task_id)
    assert record.status is TaskStatus.RUNNING and record.attempts == 2
    await _send_unordered(worker, _report(tid, K.TASK_STARTED, 2), f"{tid}:2:started")
    final = _report(tid, K.TASK_COMPLETED, 2, result="two", event_index=1)
    await harness.report(worker, final, final_msg_id(tid))
    await delivery.ack()
    assert (await plane.wait_for_task(created.task_id, timeout=10)).result == "two"
    events = [e async for e in plane.task_events(tid)]
    assert [(e.type, e.attempt) for e in events] == [("Progress", 1), ("TaskAttempt", 2), ("Progress", 2)]
    await deliveries.aclose()
