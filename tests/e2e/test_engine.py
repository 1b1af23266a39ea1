"""The engine end to end through its Python API: a real deployment on ZeroMQ + SQLite with real
worker subprocesses (no HTTP)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from workflows.context.serializers import JsonSerializer
from workflows.events import HumanResponseEvent

from llamactl.server.deployment import Deployment
from llamactl.server.errors import SessionNotFound, TaskFinished
from llamactl.server.types import EventEnvelope, TaskDefinition, TaskStatus
from tests.e2e.waiting import wait_until

APP = Path(__file__).parent / "apps" / "engine"

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("engine") / "app"
    shutil.copytree(APP, target, ignore=shutil.ignore_patterns(".llamactl", "__pycache__"))
    return target


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def deployment(app_dir: Path) -> AsyncIterator[Deployment]:
    async with Deployment.from_file(app_dir / "deployment.yml") as running:
        await running.wait_ready(timeout=90, all_replicas=True)
        yield running


async def test_a_task_returns_the_workflows_result(deployment: Deployment) -> None:
    task = await deployment.run("echo", message="hi", timeout=30)
    assert task.status is TaskStatus.COMPLETED
    assert task.result == "Message received: hi"
    assert task.attempts == 1
    assert task.replica_id == "echo#1"


async def test_the_default_service_takes_tasks_that_name_none(deployment: Deployment) -> None:
    task = await deployment.run(message="default", timeout=30)
    assert (task.service_id, task.result) == ("echo", "Message received: default")


async def test_streamed_events_arrive_in_order(deployment: Deployment) -> None:
    cp = deployment.control_plane
    task = await cp.create_task(TaskDefinition(service_id="stream", input=json.dumps({"count": 20})))
    events = [e async for e in cp.task_events(task.task_id)]
    progress = [e for e in events if e.type == "Progress"]
    assert [e.value["n"] for e in progress] == list(range(20))
    assert [e.seq for e in events] == list(range(len(events)))
    assert events[-1].type == "StopEvent"
    assert all(e.attempt == 1 for e in events)
    assert progress[0].qualified_name.endswith("Progress")
    assert (await cp.get_task(task.task_id)).result == 20


async def test_reading_events_from_an_offset_resumes_there(deployment: Deployment) -> None:
    cp = deployment.control_plane
    task = await cp.run_task(TaskDefinition(service_id="stream", input=json.dumps({"count": 6})), timeout=30)
    everything = [e async for e in cp.task_events(task.task_id)]
    tail = [e async for e in cp.task_events(task.task_id, from_seq=4)]
    assert tail == everything[4:]


async def test_a_human_in_the_loop_workflow_resumes_after_an_event_is_sent(deployment: Deployment) -> None:
    cp = deployment.control_plane
    task = await cp.create_task(TaskDefinition(service_id="hitl"))
    first: EventEnvelope | None = None
    async for event in cp.task_events(task.task_id):
        first = event
        break
    assert first is not None and first.type == "InputRequiredEvent"
    assert first.value["prefix"] == "What is the answer?"
    await cp.send_event(task.task_id, JsonSerializer().serialize(HumanResponseEvent(response="42")))
    done = await cp.wait_for_task(task.task_id, timeout=30)
    assert done.status is TaskStatus.COMPLETED
    assert done.result == "the human said 42"
    with pytest.raises(TaskFinished):
        await cp.send_event(task.task_id, JsonSerializer().serialize(HumanResponseEvent(response="late")))


async def test_tasks_in_one_session_share_context(deployment: Deployment) -> None:
    cp = deployment.control_plane
    session = await cp.create_session()
    other = await cp.create_session()
    results = [
        (await deployment.run("counter", session_id=session.session_id, timeout=30)).result for _ in range(3)
    ]
    assert results == [1, 2, 3]
    assert (await deployment.run("counter", session_id=other.session_id, timeout=30)).result == 1
    assert len((await cp.get_session(session.session_id)).task_ids) == 3


async def test_tasks_queued_together_in_a_session_run_one_after_another(deployment: Deployment) -> None:
    cp = deployment.control_plane
    session = await cp.create_session()
    tasks = [
        await cp.create_task(TaskDefinition(service_id="counter", session_id=session.session_id))
        for _ in range(5)
    ]
    done = [await cp.wait_for_task(t.task_id, timeout=30) for t in tasks]
    assert [t.result for t in done] == [1, 2, 3, 4, 5]


async def test_an_unknown_session_is_an_error_not_a_fresh_context(deployment: Deployment) -> None:
    with pytest.raises(SessionNotFound):
        await deployment.run("counter", session_id="no-such-session")


async def test_a_raising_workflow_gives_a_failed_task_with_its_error(deployment: Deployment) -> None:
    task = await deployment.run("boom", message="x", timeout=30)
    assert task.status is TaskStatus.FAILED
    assert task.error == "ValueError: cannot handle 'x'"
    assert task.traceback is not None and "flows.py" in task.traceback
    result = await deployment.control_plane.task_result(task.task_id)
    assert result is not None and "cannot handle" in result.result


async def test_plain_functions_and_async_generators_are_services(deployment: Deployment) -> None:
    cp = deployment.control_plane
    greeting = await deployment.run("func", name="llamactl", timeout=30)
    assert greeting.result == "hello llamactl"
    countdown = await deployment.run("gen", start=3, timeout=30)
    assert countdown.status is TaskStatus.COMPLETED
    events = [e async for e in cp.task_events(countdown.task_id)]
    assert [e.value for e in events] == [{"n": 3}, {"n": 2}, {"n": 1}]


async def test_two_replicas_share_a_hundred_tasks(deployment: Deployment) -> None:
    cp = deployment.control_plane
    created = await asyncio.gather(
        *(
            cp.create_task(TaskDefinition(service_id="shared", input=json.dumps({"delay": 0.01})))
            for _ in range(100)
        )
    )
    done = await asyncio.gather(*(cp.wait_for_task(t.task_id, timeout=60) for t in created))
    assert all(t.status is TaskStatus.COMPLETED for t in done)
    by_replica = Counter(t.replica_id for t in done)
    assert set(by_replica) == {"shared#1", "shared#2"}, by_replica
    assert len({t.result["pid"] for t in done}) == 2


async def test_cancelling_a_waiting_human_task_cancels_it(deployment: Deployment) -> None:
    cp = deployment.control_plane
    task = await cp.create_task(TaskDefinition(service_id="hitl"))
    async for _ in cp.task_events(task.task_id):
        break  # the workflow is now waiting for a human
    await cp.cancel_task(task.task_id)
    done = await cp.wait_for_task(task.task_id, timeout=30)
    assert done.status is TaskStatus.CANCELLED


async def test_a_task_whose_worker_is_killed_runs_again_elsewhere(
    deployment: Deployment, tmp_path: Path
) -> None:
    cp = deployment.control_plane
    marker = tmp_path / "first-attempt.pid"
    task = await cp.create_task(
        TaskDefinition(service_id="fragile", input=json.dumps({"marker": str(marker)}))
    )
    await wait_until(lambda: marker.exists() and marker.read_text() != "", timeout=30)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    done = await cp.wait_for_task(task.task_id, timeout=60)
    assert done.status is TaskStatus.COMPLETED, done.error
    assert done.attempts == 2
    assert done.result.startswith("survived after")


async def test_the_change_feed_reports_services_and_task_status(deployment: Deployment) -> None:
    cp = deployment.control_plane
    task = await deployment.run("echo", message="feed", timeout=30)
    streaming = await cp.run_task(TaskDefinition(service_id="stream", input=json.dumps({"count": 3})))
    await cp.changes.flushed()
    changes = await cp.changes.read(0, limit=100_000)
    kinds = {c.kind for c in changes}
    assert {"service.up", "replica.up", "task.status"} <= kinds

    def statuses(task_id: str) -> list[str]:
        return [c.data["status"] for c in changes if c.kind == "task.status" and c.data["task_id"] == task_id]

    # A task that ends within STARTED_AFTER never reports "running" (on a loaded machine it may
    # take longer, and then does); one that streams does, with its first event.
    assert statuses(task.task_id) in (["queued", "completed"], ["queued", "running", "completed"])
    assert statuses(streaming.task_id) == ["queued", "running", "completed"]
