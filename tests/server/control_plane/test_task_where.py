"""ControlPlane.task_where against a real deployment's worker: the answer of a worker whose
loop is free, the error naming a worker that cannot answer, a task that runs nowhere, and a task
asked many times."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import llamactl.server.control_plane.task_events as task_events
from llamactl.server.control_plane.control_plane import ControlPlane
from llamactl.server.deployment import Deployment
from llamactl.server.errors import TaskNotRunning, WorkerNoAnswer
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually

DEPLOYMENT = """\
name: where
services:
  waits:
    source: {type: local, location: src}
    path: code:waits
  blocks:
    source: {type: local, location: src}
    path: code:blocks
  one:
    source: {type: local, location: src}
    path: code:waits
    max-concurrency: 1
  few:
    source: {type: local, location: src}
    path: code:waits
    max-events: 3
"""

CODE = """\
import asyncio
import time


async def waits(seconds: float = 60) -> str:
    await asyncio.sleep(seconds)
    return "done"


async def blocks(seconds: float = 3) -> str:
    time.sleep(seconds)  # holds the worker's event loop
    return "done"
"""


@pytest.fixture
async def cp(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "code.py").write_text(CODE)
    (tmp_path / "deployment.yml").write_text(DEPLOYMENT)
    async with Deployment.from_file(tmp_path / "deployment.yml", stop_grace=1) as deployment:
        await deployment.wait_ready(timeout=60)
        yield deployment.control_plane


async def running(cp: ControlPlane, service: str, seconds: float) -> str:
    """A new task of ``service`` (sleeping ``seconds``), once it runs."""
    created = await cp.create_task(TaskDefinition(service_id=service, input=f'{{"seconds": {seconds}}}'))

    async def started() -> bool:
        return (await cp.get_task(created.task_id)).status is TaskStatus.RUNNING

    await eventually(started, 30)
    return created.task_id


async def test_where_asks_the_worker_and_says_when_it_cannot(
    cp: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    waiting = await running(cp, "waits", 60)
    answer = await cp.task_where(waiting)
    assert (answer.replica_id, answer.where) == ("waits#1", "in waits (code.py line 6)")
    assert answer.stacks is not None and "await asyncio.sleep(seconds)" in answer.stacks
    await cp.cancel_task(waiting)

    monkeypatch.setattr(task_events, "EVENT_WAIT", 1.0)
    blocked = await running(cp, "blocks", 4)
    with pytest.raises(WorkerNoAnswer, match=r"\(blocks#1\) did not answer within 1 s: .* `kill -USR2"):
        await cp.task_where(blocked)
    done = await cp.wait_for_task(blocked, timeout=30)
    assert done.status is TaskStatus.COMPLETED  # the question went unanswered, the task ran on

    await running(cp, "one", 60)
    queued = await cp.create_task(TaskDefinition(service_id="one", input="{}"))  # the worker is full
    with pytest.raises(TaskNotRunning, match="is queued: it has not reached a worker yet"):
        await cp.task_where(queued.task_id)
    with pytest.raises(TaskNotRunning, match=r"has ended \(completed\)"):
        await cp.task_where(blocked)


async def test_a_task_asked_where_any_number_of_times_keeps_one_answer_and_runs_on(cp: ControlPlane) -> None:
    """Answers are not the task's events: they do not count toward ``max-events`` (3 here) nor
    grow its log, and the one kept goes with the task."""
    task_id = await running(cp, "few", 60)
    for _ in range(12):
        answer = await cp.task_where(task_id)
        assert answer.where == "in waits (code.py line 6)"
    task = await cp.get_task(task_id)
    assert task.status is TaskStatus.RUNNING, task.error
    records = cp.records
    assert await records.store.log_length(records.events_stream(task_id)) == 0
    await cp.cancel_task(task_id)
    ended = await cp.wait_for_task(task_id, timeout=30)
    assert ended.status is TaskStatus.CANCELLED
    await records.delete_tasks([await records.get_task(task_id)])
    assert await records.store.list(records.where_ns) == []


async def test_where_of_a_task_queued_in_its_session_names_the_task_it_waits_for(cp: ControlPlane) -> None:
    session = await cp.create_session()
    first = await cp.create_task(
        TaskDefinition(service_id="waits", input='{"seconds": 60}', session_id=session.session_id)
    )
    second = await cp.create_task(
        TaskDefinition(service_id="waits", input="{}", session_id=session.session_id)
    )
    with pytest.raises(TaskNotRunning) as raised:
        await cp.task_where(second.task_id)
    assert f"is queued: it waits for task '{first.task_id}' of its session to end" in str(raised.value)
    await cp.cancel_task(first.task_id)
