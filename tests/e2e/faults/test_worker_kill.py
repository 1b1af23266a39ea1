"""A worker killed with SIGKILL holding 50 of 100 tasks: every task ends exactly once, and the
killed worker's tasks run again (alone, since none of them is known to be the culprit)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter

from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually

from .apps import audit
from .conftest import Start


async def test_sigkill_of_a_worker_with_fifty_tasks_in_flight_loses_none(start_app: Start) -> None:
    deployment, app = await start_app(
        {"work": {"path": "funcs:work", "replicas": 2, "max-concurrency": 50}},
    )
    cp = deployment.control_plane
    tasks = [
        await cp.create_task(
            TaskDefinition(service_id="work", input=f'{{"key": "k{i}", "first": 4, "seconds": 0.02}}')
        )
        for i in range(100)
    ]

    async def all_running() -> bool:
        return (await cp.task_counts()).get("work", {}).get("running", 0) == 100

    await eventually(all_running, 60)
    victim = next(r for s in deployment.services() for r in s.replicas if r.replica_id == "work#1")
    assert victim.pid is not None
    on_victim = [t.task_id for t in tasks if (await cp.get_task(t.task_id)).replica_id == "work#1"]
    os.kill(victim.pid, signal.SIGKILL)
    print(f"injected: SIGKILL of work#1 (pid {victim.pid}) holding {len(on_victim)} of 100 running tasks")

    done = await asyncio.gather(*(cp.wait_for_task(t.task_id, timeout=120) for t in tasks))
    records = await audit(cp, [t.task_id for t in tasks])
    statuses = Counter(r.status.value for r in records)
    runs = Counter(app.runs_of(f"k{i}") for i in range(100))
    print(f"counted: {dict(statuses)}; runs per task {dict(sorted(runs.items()))}")
    assert all(t.status is TaskStatus.COMPLETED for t in done)
    assert max(runs) <= 2 and runs.get(2, 0) == len(on_victim)
    retried = await cp.get_task(on_victim[0])
    assert retried.attempts == 2
    markers = [e async for e in cp.task_events(on_victim[0]) if e.type == "TaskAttempt"]
    assert [m.value["attempt"] for m in markers] == [2]
