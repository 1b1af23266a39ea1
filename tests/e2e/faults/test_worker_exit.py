"""A worker that stopped ends its process even when the service's code leaves something behind
that Python waits for: a thread that is not a daemon (a library's poller), or a task that never
takes its cancel. Before, the worker stayed until its stop grace ran out and it was killed, at
every stop of `serve` and every reload ("ignored SIGTERM for 30.0s: killing it")."""

from __future__ import annotations

import json
import os
import signal

import pytest

from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import wait_until
from tests.llamactl.serving import alive

from .conftest import Start


@pytest.mark.parametrize("target", ["lingering", "stubborn"])
async def test_a_stopped_worker_ends_though_the_service_s_code_lingers(start_app: Start, target: str) -> None:
    deployment, _ = await start_app({"svc": {"path": f"lingers:{target}"}})
    cp = deployment.control_plane
    record = await cp.create_task(TaskDefinition(service_id="svc", input=json.dumps({"key": "k"})))
    done = await cp.wait_for_task(record.task_id, timeout=60)
    assert (done.status, done.result) == (TaskStatus.COMPLETED, f"{target} k")
    (replica,) = cp.registry.status("svc").replicas
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGTERM)  # nobody kills it after a grace here
    await wait_until(lambda: not alive(replica.pid), timeout=30)  # before: never
