"""The deployment's Redis answers but refuses every write for a while: its memory is full
(``maxmemory`` reached under the default ``noeviction``), as a disk it cannot save to would do
(``MISCONF``). A Redis of the test's own: the shared one may not be filled.

Meanwhile it is an outage like a cut line ("refusing writes", why, and what to do), not a stream
of refused commands: the server accepts tasks (stored, handed out once Redis takes writes), keeps
its replicas, and the task running meanwhile runs once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from llamactl.server.types import ReplicaState, TaskDefinition, TaskStatus
from tests.e2e.waiting import wait_until
from tests.server.mq.private_redis import private_redis

from .conftest import Start


@pytest.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    async with private_redis(tmp_path / "redis") as url:
        yield url


async def test_a_redis_out_of_memory_is_an_outage_that_loses_nothing(
    start_app: Start, redis_url: str, capfd: pytest.CaptureFixture[str]
) -> None:
    deployment, app = await start_app(
        {"work": {"path": "funcs:work", "replicas": 2}}, message_queue={"type": "redis", "url": redis_url}
    )
    cp = deployment.control_plane
    running = await cp.create_task(TaskDefinition(service_id="work", input='{"key": "a", "seconds": 8}'))
    await wait_until(lambda: app.runs_of("a") == 1, 30)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        await admin.config_set("maxmemory", 1)  # every write refused from now on: OOM
        await wait_until(lambda: deployment.queue_outage is not None, 10)
        async with asyncio.timeout(5):  # stored and answered at once, handed out later
            waiting = await cp.create_task(
                TaskDefinition(service_id="work", input='{"key": "b", "seconds": 0}')
            )
        outage = deployment.queue_outage
        assert outage is not None and outage.state == "refusing writes"
        assert "maxmemory" in outage.error and "raise maxmemory or free memory" in outage.error
        assert "refusing writes for" in outage.describe()
        await wait_until(lambda: time.time() - outage.since > 4.5, 10)  # past the 3 s window
        states = {r.replica_id: r.state for s in deployment.services() for r in s.replicas}
        assert set(states.values()) == {ReplicaState.READY}
        assert (await cp.get_task(waiting.task_id)).status is TaskStatus.QUEUED
        await admin.config_set("maxmemory", 0)
    finally:
        await admin.aclose()
    done = [await cp.wait_for_task(t.task_id, timeout=60) for t in (running, waiting)]
    assert [(d.status, d.attempts) for d in done] == [(TaskStatus.COMPLETED, 1)] * 2
    assert (app.runs_of("a"), app.runs_of("b")) == (1, 1)
    await wait_until(lambda: deployment.queue_outage is None, 10)
    err = capfd.readouterr().err
    assert "declared dead" not in err
    assert "refused it" not in err, "a refusal for now is an outage, said once, not per try"
