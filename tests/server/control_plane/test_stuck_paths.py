"""No task or session stuck forever: the paths that used to wedge one, each caused for real."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from llamactl.server.control_plane.loops import Loops
from llamactl.server.control_plane.stored import StoredTask
from llamactl.server.errors import InvalidRequest, StateStoreError
from llamactl.server.mq import topics
from llamactl.server.state.base import Index
from llamactl.server.types import TaskDefinition, TaskStatus

from .conftest import DEPLOYMENT, Deliveries, Harness, completed


async def test_a_report_that_was_dead_lettered_is_still_applied(harness: Harness) -> None:
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    created = await plane.create_task(TaskDefinition())
    delivery, _ = await deliveries.take()
    dead = topics.dead_letter_topic(topics.control_topic(DEPLOYMENT))
    await worker.publish(dead, completed(created.task_id, "from the dead letters").model_dump_json().encode())
    done = await plane.wait_for_task(created.task_id, timeout=10)
    assert (done.status, done.result) == (TaskStatus.COMPLETED, "from the dead letters")
    await delivery.ack()
    await deliveries.aclose()


async def test_a_final_report_applied_again_still_moves_its_session_on(harness: Harness) -> None:
    """The report of the session's first task arrives twice (a redelivery after the control plane
    failed to move on): the second copy must still hand out the session's next task."""
    plane = await harness.control_plane()
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    session = await plane.create_session()
    first = await plane.create_task(TaskDefinition(session_id=session.session_id))
    second = await plane.create_task(TaskDefinition(session_id=session.session_id))
    delivery, _ = await deliveries.take()
    # Moving the session on fails once, after the task's end is stored (the store went away
    # between the two commits): the report is applied again, and the second time the task is
    # already finished.
    real_finished = plane.dispatcher.finished
    calls = 0

    async def finished_failing_once(task: Any, *, released: bool = False) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StateStoreError("the store went away for a moment")
        await real_finished(task, released=released)

    plane.dispatcher.finished = finished_failing_once  # type: ignore[method-assign]
    report = completed(first.task_id, 1).model_dump_json().encode()
    control = topics.control_topic(DEPLOYMENT)
    await worker.publish(control, report, msg_id="copy-1", key=first.task_id)
    await plane.wait_for_task(first.task_id, timeout=10)
    await worker.publish(control, report, msg_id="copy-2", key=first.task_id)
    await delivery.ack()
    _, next_message = await deliveries.take()
    assert next_message.task_id == second.task_id
    await deliveries.aclose()


async def test_a_task_cancelled_while_in_the_queue_never_reaches_a_worker(harness: Harness) -> None:
    plane = await harness.control_plane()
    queued = await plane.create_task(TaskDefinition(input=json.dumps({"n": 1})))
    cancelled = await plane.cancel_task(queued.task_id)
    assert cancelled.status is TaskStatus.CANCELLED
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    marker = await plane.create_task(TaskDefinition(input=json.dumps({"n": 2})))
    _, message = await deliveries.take()
    assert message.task_id == marker.task_id  # the cancelled one was taken out of the queue
    await deliveries.aclose()


@pytest.mark.parametrize(
    "raw",
    ['{"text": "\\ud800"}', "[" * 200 + "]" * 200, '{"deep": ' + "[" * 150 + "]" * 150 + "}"],
    ids=["lone-surrogate", "nested-list", "nested-value"],
)
async def test_input_that_could_never_reach_a_worker_is_refused_and_nothing_is_kept(
    harness: Harness, raw: str
) -> None:
    plane = await harness.control_plane()
    with pytest.raises(InvalidRequest):
        await plane.create_task(TaskDefinition(input=raw))
    tasks, _ = await plane.list_tasks()
    sessions, _ = await plane.list_sessions()
    assert (tasks, sessions) == ([], [])


async def test_records_that_cannot_be_read_do_not_stop_a_control_plane_from_starting(
    harness: Harness,
) -> None:
    """A queued task whose record is garbage (and one whose input could never be sent): the
    control plane still starts, skips or fails them, and serves the rest."""
    ns = f"{DEPLOYMENT}/tasks"
    queued = {"status": "queued", "session": "s", "service": "a", "svc_status": "a/queued"}
    await harness.store.put(ns, "garbage", b"\xff not json", index=Index(sort="0:garbage", fields=queued))
    unsendable = StoredTask(
        task_id="unsendable",
        deployment=DEPLOYMENT,
        service_id="a",
        session_id="s2",
        input="{not json",
        dispatched=True,
    )
    await harness.store.put(ns, "unsendable", unsendable.model_dump_json().encode(), index=unsendable.index())
    plane = await harness.control_plane()
    assert plane.health()["unreadable_records"] >= 1
    failed = await plane.wait_for_task("unsendable", timeout=10)
    assert failed.status is TaskStatus.FAILED and "cannot be handed to its service" in (failed.error or "")
    good = await plane.create_task(TaskDefinition())
    assert (await plane.get_task(good.task_id)).status is TaskStatus.QUEUED


async def test_a_background_loop_that_fails_is_restarted_and_its_failure_shown() -> None:
    loops = Loops("test")
    runs: list[int] = []
    again = asyncio.Event()

    async def body() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError(f"failure {len(runs)}")
        again.set()
        await asyncio.Event().wait()

    loops.start("flaky", body)
    await asyncio.wait_for(again.wait(), 10)
    health = loops.health["flaky"]
    assert (health.running, health.restarts) == (True, 2)
    assert health.last_error == "RuntimeError: failure 2"
    await loops.close()
