"""A task whose code calls ``sys.exit`` or raises KeyboardInterrupt fails once, and its worker
serves on; one that exits its worker from outside its run, stops its event loop or cancels the
worker's own tasks is a poison task, given up after max-attempts. Before, either ended the worker in order, which the queue took for a stop on
purpose: the task was handed out again uncounted, and ended every worker after, for ever."""

from __future__ import annotations

import asyncio
import json

from llamactl.server.types import TaskDefinition, TaskStatus

from .apps import audit
from .conftest import Start


async def test_exits_in_a_task_fail_it_and_no_task_ends_workers_for_ever(start_app: Start) -> None:
    deployment, app = await start_app(
        {
            "leaver": {"path": "funcs:leave"},
            "worker": {"path": "funcs:work"},
            # One worker each, so that each poison task dies alone and every attempt counts.
            "caller": {"path": "funcs:leave"},
            "stopper": {"path": "funcs:leave"},
            "canceller": {"path": "funcs:leave"},
        },
        message_queue={"max-attempts": 3},
    )
    cp = deployment.control_plane

    async def task(service: str, **kwargs: object) -> str:
        record = await cp.create_task(TaskDefinition(service_id=service, input=json.dumps(kwargs)))
        return record.task_id

    exits = [await task("leaver", key="exit", how="exit"), await task("leaver", key="int", how="interrupt")]
    stayed = await task("worker", key="after", seconds=0.01)
    ends = [
        await task("caller", key="callback", how="callback"),
        await task("stopper", key="stop", how="stop"),
        await task("canceller", key="cancel", how="cancel"),
    ]
    ids = [*exits, stayed, *ends]
    done = await asyncio.gather(*(cp.wait_for_task(t, timeout=120) for t in ids))
    await audit(cp, ids)
    for record, line in zip(done[:2], ("SystemExit: 3", "KeyboardInterrupt"), strict=True):
        print(f"  {record.task_id}: attempts {record.attempts}: {record.error}")
        assert record.status is TaskStatus.FAILED and record.attempts == 1
        assert record.error is not None and record.error.startswith(
            f"ExitInTask: {line}, raised by the task's code"
        )
    assert done[2].status is TaskStatus.COMPLETED
    for record in done[3:]:
        print(f"  {record.task_id}: attempts {record.attempts}: {record.error}")
        assert record.status is TaskStatus.FAILED
        assert record.error is not None and "gave up after 3 failed attempts" in record.error
    # The exits in a run left their worker up: both ran in one process, which served on.
    pids = {(app.runs / f"{key}.runs").read_text() for key in ("exit", "int")}
    assert len(pids) == 1 and len(pids.pop().split()) == 1
    assert app.runs_of("callback") == app.runs_of("stop") == app.runs_of("cancel") == 3
