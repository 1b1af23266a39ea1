"""A task whose workflow waits for a person's answer (human in the loop) when its deployment stops
(Ctrl-C of `serve`, a reload, the end of `llamactl worker`): it does not hold the stop for the
whole grace and get killed at its end; its worker suspends it at once, while a task that works is
still let finish. On the next start (or on the reloaded service) it goes on from its question: it
asks again, its earlier steps do not run again, and it completes with the answer. `tasks where`
says that it waits for a person.

Before: the stop waited out the grace (here 10 s) for the task that waited for nobody, then
killed its worker ("did not stop within 10.0s of its SIGTERM"); later, it was put back and ran
again from its start (its first step ran twice)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from workflows.context.serializers import JsonSerializer
from workflows.events import HumanResponseEvent

from llamactl.server.control_plane import ControlPlane
from llamactl.server.deployment import Deployment
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually
from tests.postgres import PostgresSchema
from tests.server.mq.conftest import REDIS_URL

from .apps import App, write_fault_app

SERVICES = {
    "hitl": {"path": "syncs:prepare_then_ask"},
    "twice": {"path": "syncs:ask_twice"},
    "work": {"path": "funcs:work"},
}


async def _asked(cp: ControlPlane, task_id: str, attempt: int, question: str | None = None) -> None:
    async for event in cp.task_events(task_id):
        asks = event.type == "InputRequiredEvent" and event.attempt == attempt
        if asks and (question is None or event.value["prefix"] == question):
            return
    raise AssertionError(f"task {task_id} ended without asking {question or ''} (attempt {attempt})")


async def _started(tmp_path: Path) -> Deployment:
    deployment = Deployment.from_file(
        tmp_path / "app" / "deployment.yml", heartbeat_interval=0.5, report_interval=1.0, stop_grace=10
    )
    await deployment.start()
    await deployment.wait_ready(timeout=90, all_replicas=True)
    return deployment


async def test_a_task_waiting_for_a_person_is_suspended_at_a_stop_and_goes_on_from_its_question_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await _stop_and_start(tmp_path, caplog, write_fault_app(tmp_path / "app", SERVICES))


async def test_the_same_on_redis_and_postgresql(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, backends: tuple[PostgresSchema, str]
) -> None:
    """The resume's message id and attempts do not rest on what only the embedded broker does."""
    pg, prefix = backends
    app = write_fault_app(
        tmp_path / "app",
        SERVICES,
        control_plane={"state_store_uri": pg.uri},
        message_queue={"type": "redis", "url": REDIS_URL, "prefix": prefix},
    )
    await _stop_and_start(tmp_path, caplog, app)


async def _stop_and_start(tmp_path: Path, caplog: pytest.LogCaptureFixture, app: App) -> None:
    first = await _started(tmp_path)
    try:
        cp = first.control_plane
        asking = await cp.create_task(TaskDefinition(service_id="hitl", input=json.dumps({"key": "a"})))
        await _asked(cp, asking.task_id, attempt=1)

        async def asks() -> bool:  # its started report may be stored after its first event
            return (await cp.get_task(asking.task_id)).status is TaskStatus.RUNNING

        await eventually(asks, 30)
        where = (await cp.task_where(asking.task_id)).where
        working = await cp.create_task(
            TaskDefinition(service_id="work", input=json.dumps({"key": "w", "seconds": 1.5}))
        )

        async def works() -> bool:
            return (await cp.get_task(working.task_id)).status is TaskStatus.RUNNING

        await eventually(works, 30)
    finally:
        with caplog.at_level(logging.WARNING):
            await first.close()
    assert "did not stop within" not in caplog.text  # stopped in order: nobody killed at the grace
    assert "waiting for a person's answer" in where

    second = await _started(tmp_path)
    try:
        cp = second.control_plane
        assert (await cp.get_task(working.task_id)).status is TaskStatus.COMPLETED  # let finish
        await _asked(cp, asking.task_id, attempt=2)
        await cp.send_event(asking.task_id, JsonSerializer().serialize(HumanResponseEvent(response="42")))
        done = await cp.wait_for_task(asking.task_id, timeout=30)
        assert (done.status, done.result, done.attempts) == (TaskStatus.COMPLETED, "a: the human said 42", 2)
        assert app.runs_of("a") == 1  # its first step ran once
        assert "going on from the question attempt 1 asked" in await _marker(cp, asking.task_id, 2)
    finally:
        await second.close()


async def test_a_task_waiting_for_a_person_goes_on_from_its_question_on_the_reloaded_service(
    tmp_path: Path,
) -> None:
    app = write_fault_app(tmp_path / "app", SERVICES)
    deployment = await _started(tmp_path)
    try:
        cp = deployment.control_plane
        asking = await cp.create_task(TaskDefinition(service_id="hitl", input=json.dumps({"key": "r"})))
        await _asked(cp, asking.task_id, attempt=1)
        outcome = await deployment.reload_service("hitl")
        assert outcome.ok, outcome
        await _asked(cp, asking.task_id, attempt=2)
        assert (await cp.get_task(asking.task_id)).waiting_for_answer
        await cp.send_event(asking.task_id, JsonSerializer().serialize(HumanResponseEvent(response="yes")))
        done = await cp.wait_for_task(asking.task_id, timeout=30)
        assert (done.status, done.result, done.attempts) == (TaskStatus.COMPLETED, "r: the human said yes", 2)
        assert app.runs_of("r") == 1
    finally:
        await deployment.close()


async def test_a_task_whose_waiting_step_the_reload_removed_runs_again_from_its_start(tmp_path: Path) -> None:
    """Restored into code without the step it waited in, the run would wait, silently, for its
    whole timeout: it runs from its start instead, and its marker says why."""
    app = write_fault_app(tmp_path / "app", SERVICES)
    deployment = await _started(tmp_path)
    try:
        cp = deployment.control_plane
        task = await cp.create_task(TaskDefinition(service_id="hitl", input=json.dumps({"key": "m"})))
        await _asked(cp, task.task_id, attempt=1)
        source = app.folder / "src" / "syncs.py"
        code = source.read_text()
        renamed = code.replace(
            "async def ask(self, ctx: Context, ev: Prepared)",
            "async def asks(self, ctx: Context, ev: Prepared)",
        )
        assert renamed != code
        source.write_text(renamed)
        assert (await deployment.reload_service("hitl")).ok
        await _asked(cp, task.task_id, attempt=2)
        await cp.send_event(task.task_id, JsonSerializer().serialize(HumanResponseEvent(response="no")))
        done = await cp.wait_for_task(task.task_id, timeout=30)
        assert (done.status, done.result) == (TaskStatus.COMPLETED, "m: the human said no")
        assert app.runs_of("m") == 2
        assert "from its start: the Context saved as attempt 1 waited" in await _marker(cp, task.task_id, 2)
    finally:
        await deployment.close()


async def test_an_answer_the_run_had_before_its_suspension_is_not_given_again(tmp_path: Path) -> None:
    """The resumed run reads the task's inputs from the first its attempt had not read: the
    first answer, read from the start, would answer the second question too."""
    write_fault_app(tmp_path / "app", SERVICES)
    deployment = await _started(tmp_path)
    try:
        cp = deployment.control_plane
        task = await cp.create_task(TaskDefinition(service_id="twice"))
        await _asked(cp, task.task_id, 1, "First?")
        await cp.send_event(task.task_id, JsonSerializer().serialize(HumanResponseEvent(response="one")))
        await _asked(cp, task.task_id, 1, "Second?")
        assert (await deployment.reload_service("twice")).ok
        await _asked(cp, task.task_id, 2, "Second?")
        await cp.send_event(task.task_id, JsonSerializer().serialize(HumanResponseEvent(response="two")))
        done = await cp.wait_for_task(task.task_id, timeout=30)
        assert (done.status, done.result) == (TaskStatus.COMPLETED, "one then two")
    finally:
        await deployment.close()


async def _marker(cp: ControlPlane, task_id: str, attempt: int) -> str:
    async for event in cp.task_events(task_id):
        if event.type == "TaskAttempt" and event.attempt == attempt:
            return str(event.value["reason"])
    raise AssertionError(f"no marker for attempt {attempt} of task {task_id}")
