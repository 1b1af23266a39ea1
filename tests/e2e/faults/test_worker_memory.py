"""A worker whose service's code keeps memory between tasks is replaced once it holds more than
the service's ``max-memory``, after its running tasks end: no task is lost, and a worker under
its limit stays."""

from __future__ import annotations

import json
import logging

import pytest

from llamactl.server.types import ReplicaState, TaskDefinition, TaskStatus
from tests.e2e.waiting import wait_until

from .apps import audit
from .conftest import Start


async def test_a_worker_over_its_max_memory_is_replaced_once_its_task_ends(
    start_app: Start, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="llamactl.server.supervisor")
    deployment, app = await start_app({"hoard": {"path": "funcs:hoard", "max-memory": "160M"}})
    cp = deployment.control_plane

    async def hoard(key: str, mb: int) -> tuple[str, int]:
        record = await cp.create_task(
            TaskDefinition(service_id="hoard", input=json.dumps({"key": key, "mb": mb}))
        )
        done = await cp.wait_for_task(record.task_id, timeout=60)
        assert (done.status, done.result) == (TaskStatus.COMPLETED, f"hoarded {key}"), done.error
        return record.task_id, int((app.runs / f"{key}.runs").read_text())

    def pids() -> set[int | None]:
        return {r.pid for r in cp.registry.status("hoard").replicas if r.state is ReplicaState.READY}

    small, first_pid = await hoard("small", 1)  # a worker holds ~50 MB: under the limit
    big, big_pid = await hoard("big", 200)
    assert big_pid == first_pid
    await wait_until(lambda: bool(pids()) and big_pid not in pids(), timeout=60)  # before: never
    after, after_pid = await hoard("after", 1)
    again, again_pid = await hoard("again", 1)
    assert after_pid != big_pid and again_pid == after_pid
    await audit(cp, [small, big, after, again])
    said = [r.getMessage() for r in caplog.records if r.name.startswith("llamactl.server")]
    assert any("asked to be replaced" in line for line in said)
    assert not [line for line in said if "exited" in line]  # a replacement is not a crash
