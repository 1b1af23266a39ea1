"""Tasks that kill their worker every time fail alone, after max-attempts, with a clear reason;
the innocent tasks that shared their workers all complete."""

from __future__ import annotations

import asyncio
from collections import Counter

from llamactl.server.types import TaskDefinition, TaskStatus

from .apps import audit
from .conftest import Start


async def test_poison_tasks_fail_alone_and_innocent_ones_complete(start_app: Start) -> None:
    deployment, _ = await start_app(
        {"mixed": {"path": "funcs:work", "replicas": 2, "max-concurrency": 4}},
        message_queue={"max-attempts": 3},
    )
    cp = deployment.control_plane
    innocent = [
        await cp.create_task(TaskDefinition(service_id="mixed", input=f'{{"key": "i{i}", "seconds": 0.3}}'))
        for i in range(20)
    ]
    poisoned = [
        await cp.create_task(TaskDefinition(service_id="mixed", input=f'{{"key": "p{i}", "die": true}}'))
        for i in range(3)
    ]
    innocent += [
        await cp.create_task(TaskDefinition(service_id="mixed", input=f'{{"key": "j{i}", "seconds": 0.3}}'))
        for i in range(20)
    ]
    done = await asyncio.gather(*(cp.wait_for_task(t.task_id, timeout=180) for t in [*innocent, *poisoned]))
    records = await audit(cp, [t.task_id for t in [*innocent, *poisoned]])
    statuses = Counter(r.status.value for r in records)
    print(f"injected: 3 tasks that kill their worker among 40 on 2 replicas; counted: {dict(statuses)}")
    assert all(r.status is TaskStatus.COMPLETED for r in done[: len(innocent)])
    for record in done[len(innocent) :]:
        assert record.status is TaskStatus.FAILED
        assert record.error is not None and "gave up after 3 failed attempts" in record.error
        print(f"  {record.task_id}: attempts {record.attempts}: {record.error}")
