"""A worker stopped (SIGSTOP) past the broker's heartbeat wait is taken for dead: its task goes out
again, to the other replica. Continued (SIGCONT), it runs its first attempt on; the task's log
must not interleave the two runs' events."""

from __future__ import annotations

import os
import signal

from llamactl.server.control_plane.inbox import ATTEMPT_EVENT
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually

from .conftest import Start


async def test_a_worker_continued_after_its_task_went_elsewhere_does_not_stream_into_its_log(
    start_app: Start,
) -> None:
    deployment, _ = await start_app({"ticks": {"path": "funcs:ticks", "replicas": 2}})
    cp = deployment.control_plane
    created = await cp.create_task(
        TaskDefinition(service_id="ticks", input='{"key": "k", "n": 40, "every": 0.1}')
    )

    async def events() -> list[tuple[str, int]]:
        return [(e.type, e.attempt) async for e in cp.task_events(created.task_id, follow=False)]

    async def streaming() -> bool:
        return len(await events()) >= 3

    await eventually(streaming, 60)
    first = (await cp.get_task(created.task_id)).replica_id
    victim = next(r for s in deployment.services() for r in s.replicas if r.replica_id == first)
    assert victim.pid is not None
    os.kill(victim.pid, signal.SIGSTOP)
    try:

        async def taken_elsewhere() -> bool:
            return (ATTEMPT_EVENT, 2) in await events()

        await eventually(taken_elsewhere, 60)
    finally:
        os.kill(victim.pid, signal.SIGCONT)
    done = await cp.wait_for_task(created.task_id, timeout=60)
    assert done.status is TaskStatus.COMPLETED
    log = await events()
    marker = log.index((ATTEMPT_EVENT, 2))
    assert {attempt for _, attempt in log[:marker]} == {1}
    assert {attempt for _, attempt in log[marker:]} == {2}, log
    assert cp.health()["superseded_events"] > 0  # the first attempt did run on, and was not logged
