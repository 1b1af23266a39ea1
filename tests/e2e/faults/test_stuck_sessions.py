"""Sessions that used to stay blocked after one transient failure: a full journal disk, a report
that cannot be stored, a service removed by a reload."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from pathlib import Path

import pytest

from llamactl.server.config import load_deployment_file
from llamactl.server.deployment import Deployment
from llamactl.server.errors import PublishRejected, StateStoreError
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually
from tests.faults import small_disk, use_up

from .apps import audit, write_fault_app
from .conftest import Start

WORK = {"work": {"path": "funcs:work", "max-concurrency": 4}}


def task(key: str, seconds: float = 0.0, session: str | None = None, service: str = "work") -> TaskDefinition:
    return TaskDefinition(
        service_id=service, session_id=session, input=json.dumps({"key": key, "seconds": seconds})
    )


async def test_a_full_journal_disk_does_not_hold_a_sessions_tasks_back(tmp_path: Path) -> None:
    """Before: a task's start message was journaled, so a full journal disk refused it and the
    session waited for the disk. The task record is that message's durable copy now, and the
    embedded broker holds it in memory: the session's tasks run while the disk is still full.
    (A publish that the queue refuses is retried: tests/server/control_plane/test_unpublished.py.)"""
    folder = tmp_path / "app"
    state = f"sqlite:///{folder}/state/state.sqlite"  # the state store stays on the normal disk
    app = write_fault_app(folder, WORK, control_plane={"state-store-uri": state})
    with small_disk(folder / ".llamactl", "8m") as journal_disk:  # only the broker's journal here
        async with Deployment.from_file(app.file) as deployment:
            await deployment.wait_ready(timeout=60)
            cp = deployment.control_plane

            def filler(n: int, value: bytes) -> Awaitable[int]:
                return cp.queue.publish("work.faults.filler", value, msg_id=f"filler-{n}")

            session = await cp.create_session()
            journal_disk.fill()
            await use_up(filler, PublishRejected)
            first = await cp.create_task(task("first", session=session.session_id))
            second = await cp.create_task(task("second", session=session.session_id))
            print("injected: the journal's disk is full while two tasks of one session are created")
            done = [await cp.wait_for_task(t.task_id, timeout=30) for t in (first, second)]
            print(f"counted: {[d.status.value for d in done]} with the disk still full")
            assert [d.status for d in done] == [TaskStatus.COMPLETED] * 2
            with pytest.raises(PublishRejected):
                await filler(-1, b"x" * 65536)  # the journal still cannot take anything
            journal_disk.free()
            await audit(cp, [first.task_id, second.task_id])


async def test_a_report_that_cannot_be_stored_is_applied_later_and_the_session_moves_on(
    tmp_path: Path,
) -> None:
    """Before: a failure while finishing a task nacked its report, and the report's redelivery
    returned early (the task was final), so the session's next task never went out."""
    folder = tmp_path / "app"
    (folder / "state").mkdir(parents=True)
    state = f"sqlite:///{folder}/state/state.sqlite"
    app = write_fault_app(folder, WORK, control_plane={"state-store-uri": state})
    with small_disk(folder / "state", "8m") as state_disk:
        async with Deployment.from_file(app.file) as deployment:
            await deployment.wait_ready(timeout=60)
            cp = deployment.control_plane
            session = await cp.create_session()
            # Long enough for the disk to fill before it ends, also under a full suite's load
            # (at 1 s its report was stored, once, while the filler still wrote: nothing to retry).
            first = await cp.create_task(task("first", 4.0, session.session_id))
            second = await cp.create_task(task("second", 0.0, session.session_id))

            async def first_running() -> bool:
                return (await cp.get_task(first.task_id)).status is TaskStatus.RUNNING

            await eventually(first_running, 30)
            state_disk.fill()
            await use_up(lambda n, v: cp.records.store.put("filler", f"k{n}", v), StateStoreError)
            print("injected: the state store's disk fills up while the session's first task runs")

            async def report_refused() -> bool:
                return cp.inbox.deliveries.counters.failed_tries > 0

            await eventually(report_refused, 30)
            state_disk.free()
            done = [await cp.wait_for_task(t.task_id, timeout=60) for t in (first, second)]
            print(
                f"counted: {[d.status.value for d in done]}; reports retried {cp.health()['retried_reports']}"
            )
            assert [d.status for d in done] == [TaskStatus.COMPLETED] * 2
            await audit(cp, [first.task_id, second.task_id])


async def test_removing_a_service_fails_what_waits_for_it_and_its_sessions_move_on(start_app: Start) -> None:
    """Before: the removed service's queued tasks had no consumer, and their sessions blocked."""
    services = {
        "stays": {"path": "funcs:work"},
        "goes": {"path": "funcs:work", "max-concurrency": 1},
    }
    deployment, app = await start_app(services)
    cp = deployment.control_plane
    session = await cp.create_session()
    running = await cp.create_task(task("running", 1.0, session.session_id, "goes"))
    waiting = await cp.create_task(task("waiting", 0.0, session.session_id, "goes"))
    in_queue = await cp.create_task(task("in-queue", 0.0, None, "goes"))
    after = await cp.create_task(task("after", 0.0, session.session_id, "stays"))

    async def started() -> bool:
        return (await cp.get_task(running.task_id)).status is TaskStatus.RUNNING

    await eventually(started, 30)
    write_fault_app(app.folder, {"stays": services["stays"]})
    await deployment.reconfigure(load_deployment_file(app.file))
    print(
        "injected: 'goes' removed by a reload with 1 task running, 1 waiting in its session, 1 in its queue"
    )
    done = {
        t.task_id: await cp.wait_for_task(t.task_id, timeout=60) for t in (running, waiting, in_queue, after)
    }
    statuses = {
        app_key: done[t.task_id].status.value
        for app_key, t in (
            ("running", running),
            ("waiting", waiting),
            ("in-queue", in_queue),
            ("after", after),
        )
    }
    print(f"counted: {statuses}")
    assert statuses == {
        "running": "completed",
        "waiting": "failed",
        "in-queue": "failed",
        "after": "completed",
    }
    assert "was removed from the deployment" in (done[waiting.task_id].error or "")
    assert "was removed from the deployment" in (done[in_queue.task_id].error or "")
    await audit(cp, list(done))
