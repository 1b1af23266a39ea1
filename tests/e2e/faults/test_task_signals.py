"""A task that makes its worker ignore SIGTERM (as a library with handlers of its own may) does
not keep the worker from stopping in order: before, every stop and reload waited out the stop
grace and killed it."""

from __future__ import annotations

import json
import os
import signal

from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually
from tests.llamactl.serving import alive

from .conftest import Start


async def test_a_worker_whose_stop_signals_a_task_replaced_still_stops_on_sigterm(start_app: Start) -> None:
    deployment, app = await start_app({"deaf": {"path": "funcs:deafen"}})
    cp = deployment.control_plane
    record = await cp.create_task(TaskDefinition(service_id="deaf", input=json.dumps({"key": "deaf"})))
    done = await cp.wait_for_task(record.task_id, timeout=60)
    assert done.status is TaskStatus.COMPLETED
    pid = int((app.runs / "deaf.runs").read_text())

    async def stopped_on_sigterm() -> bool:
        if not alive(pid):
            return True
        os.kill(pid, signal.SIGTERM)  # again until it stops: it puts its handler back within 1 s
        return False

    await eventually(stopped_on_sigterm, timeout=20, interval=0.25)  # before: never


async def test_a_fork_pool_in_a_task_does_not_stop_its_worker(start_app: Start) -> None:
    """A fork pool's end sends SIGTERM to its processes; they shared the worker's signal wakeup
    socket, so the worker took the signal for its own and stopped after every such task."""
    deployment, app = await start_app({"fork": {"path": "funcs:forks"}})
    cp = deployment.control_plane
    for _ in range(2):
        record = await cp.create_task(TaskDefinition(service_id="fork", input=json.dumps({"key": "fork"})))
        done = await cp.wait_for_task(record.task_id, timeout=60)
        assert done.status is TaskStatus.COMPLETED, done.error
        assert done.result == "forked fork [1, 2]"
    pids = (app.runs / "fork.runs").read_text().split()
    assert len(set(pids)) == 1, f"the worker was replaced between the two tasks: pids {pids}"  # before: 2
