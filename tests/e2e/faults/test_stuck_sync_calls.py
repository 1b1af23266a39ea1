"""Sync code that never returns cannot wedge a worker: a workflow's stuck sync steps do not take
the threads every later sync step waits for (asyncio's default executor has cpus + 4 of them, so
six stuck steps here left every later one waiting for ever), and a worker whose abandoned calls
pass the limit is replaced once its running tasks end, freeing their threads."""

from __future__ import annotations

import asyncio
import json

from llamactl.server.services.replacement import ABANDONED_CALLS_LIMIT
from llamactl.server.types import ReplicaState, TaskDefinition, TaskStatus
from tests.e2e.waiting import wait_until

from .apps import audit
from .conftest import Start


async def test_stuck_sync_steps_leave_later_ones_threads(start_app: Start) -> None:
    deployment, _ = await start_app(
        {"syncs": {"path": "syncs:sync_step", "timeout": 1, "max-concurrency": 16}},
    )
    cp = deployment.control_plane

    async def task(**kwargs: object) -> str:
        record = await cp.create_task(TaskDefinition(service_id="syncs", input=json.dumps(kwargs)))
        return record.task_id

    stuck = [await task(key=f"stuck{i}", seconds=3600) for i in range(8)]
    first = await asyncio.gather(*(cp.wait_for_task(t, timeout=60) for t in stuck))
    assert all(r.status is TaskStatus.FAILED and "timed out after 1 s" in (r.error or "") for r in first)
    after = await cp.wait_for_task(await task(key="after", seconds=0), timeout=60)
    print(f"after 8 stuck sync steps: {after.status.value} {after.error or after.result}")
    assert after.status is TaskStatus.COMPLETED and after.result == "done after"
    await audit(cp, [*stuck, after.task_id])


async def test_a_worker_with_too_many_abandoned_calls_is_replaced(start_app: Start) -> None:
    deployment, app = await start_app(
        {"hang": {"path": "syncs:hang", "timeout": 1, "max-concurrency": 4}},
    )
    cp = deployment.control_plane

    async def task(key: str, seconds: float) -> str:
        kwargs = {"key": key, "seconds": seconds}
        record = await cp.create_task(TaskDefinition(service_id="hang", input=json.dumps(kwargs)))
        return record.task_id

    stuck = [await task(f"stuck{i}", 3600) for i in range(ABANDONED_CALLS_LIMIT + 1)]
    first = await asyncio.gather(*(cp.wait_for_task(t, timeout=60) for t in stuck))
    assert all(r.status is TaskStatus.FAILED for r in first)
    stuck_pids = {int((app.runs / f"stuck{i}.runs").read_text()) for i in range(len(stuck))}
    assert len(stuck_pids) == 1

    def pids() -> set[int | None]:
        return {r.pid for r in cp.registry.status("hang").replicas if r.state is ReplicaState.READY}

    await wait_until(lambda: bool(pids()) and not pids() & stuck_pids, timeout=60)
    print(f"stuck calls ran in {sorted(stuck_pids)}; the replica is now {pids()}")
    after = await cp.wait_for_task(await task("after", 0), timeout=60)
    assert after.status is TaskStatus.COMPLETED
    assert int((app.runs / "after.runs").read_text()) not in stuck_pids
    await audit(cp, [*stuck, after.task_id])
