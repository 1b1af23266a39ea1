"""A worker frozen whole (SIGSTOP here; in life also a C call that holds the GIL for ever, or the
kernel): neither its event loop nor its watchdog thread can act, so the server kills it and the
supervisor starts it again; the task that waited for the service then runs.

Before: the process stayed stopped for good, its service had no worker ready, and the task stayed
queued."""

from __future__ import annotations

import os
import signal

from llamactl.server.types import TaskDefinition, TaskStatus
from tests.llamactl.serving import alive

from .conftest import Start


async def test_a_frozen_worker_is_killed_and_its_service_serves_again(start_app: Start) -> None:
    deployment, _ = await start_app({"work": {"path": "funcs:work"}}, message_queue={"lease": 1})
    cp = deployment.control_plane
    [victim] = [r.pid for s in deployment.services() for r in s.replicas]
    assert victim is not None
    os.kill(victim, signal.SIGSTOP)
    try:
        created = await cp.create_task(TaskDefinition(service_id="work", input='{"key": "k", "seconds": 0}'))
        done = await cp.wait_for_task(created.task_id, timeout=120)
        assert done.status is TaskStatus.COMPLETED, done
        [now] = [r.pid for s in deployment.services() for r in s.replicas]
        assert now != victim and not alive(victim)
    finally:
        if alive(victim):
            os.kill(victim, signal.SIGCONT)
