"""A task whose workflow waits for a person's answer (human in the loop) when its deployment stops
(Ctrl-C of `serve`, a reload, the end of `llamactl worker`): it does not hold the stop for the
whole grace and get killed at its end; its worker puts it back at once, uncharged, while a task
that works is still let finish. On the next start it runs again, asks again, and completes with
the answer. `tasks where` says that it waits for a person.

Before: the stop waited out the grace (here 10 s) for the task that waited for nobody, then
killed its worker ("did not stop within 10.0s of its SIGTERM")."""

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

from .apps import write_fault_app

SERVICES = {"hitl": {"path": "flows:hitl_workflow"}, "work": {"path": "funcs:work"}}


async def _asked(cp: ControlPlane, task_id: str, attempt: int) -> None:
    async for event in cp.task_events(task_id):
        if event.type == "InputRequiredEvent" and event.attempt == attempt:
            return
    raise AssertionError(f"task {task_id} ended without asking (attempt {attempt})")


async def _started(tmp_path: Path) -> Deployment:
    deployment = Deployment.from_file(
        tmp_path / "app" / "deployment.yml", heartbeat_interval=0.5, report_interval=1.0, stop_grace=10
    )
    await deployment.start()
    await deployment.wait_ready(timeout=90, all_replicas=True)
    return deployment


async def test_a_task_waiting_for_a_person_is_put_back_at_a_stop_and_asks_again_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_fault_app(tmp_path / "app", SERVICES)
    first = await _started(tmp_path)
    try:
        cp = first.control_plane
        asking = await cp.create_task(TaskDefinition(service_id="hitl"))
        await _asked(cp, asking.task_id, attempt=1)
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
        assert (done.status, done.result, done.attempts) == (TaskStatus.COMPLETED, "the human said 42", 2)
    finally:
        await second.close()
