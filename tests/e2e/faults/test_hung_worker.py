"""Workers whose event loop is blocked by user code (a blocking sleep, a busy loop in an async
step): timeouts are enforced from outside the loop, a stalled task that finishes late is not run
again after its result, and the other tasks of the service keep flowing."""

from __future__ import annotations

import asyncio
import time

from llamactl.server.types import TaskDefinition, TaskStatus

from .apps import audit
from .conftest import Start

HUNG = {
    "hang": {"path": "funcs:block", "replicas": 2, "timeout": 2},
    "spin": {"path": "funcs:spin", "timeout": 2},
    "stall": {"path": "funcs:block", "replicas": 2},
    "work": {"path": "funcs:work", "replicas": 2},
}
MQ = {"lease": 4}


async def test_a_blocking_call_past_the_timeout_is_interrupted_and_the_task_fails(start_app: Start) -> None:
    deployment, app = await start_app(HUNG, message_queue=MQ)
    cp = deployment.control_plane
    started = time.monotonic()
    hung = await cp.create_task(TaskDefinition(service_id="hang", input='{"key": "h", "seconds": 60}'))
    others = [
        await cp.create_task(TaskDefinition(service_id="work", input=f'{{"key": "w{i}", "seconds": 0.05}}'))
        for i in range(10)
    ]
    done = await cp.wait_for_task(hung.task_id, timeout=30)
    took = time.monotonic() - started
    print(
        f"injected: time.sleep(60) in an async step with timeout 2 s; ended after {took:.1f} s: {done.error}"
    )
    assert done.status is TaskStatus.FAILED
    assert done.error is not None and "timeout" in done.error.lower()
    assert took < 15
    assert app.runs_of("h") == 1
    await asyncio.gather(*(cp.wait_for_task(t.task_id, timeout=30) for t in others))
    records = await audit(cp, [hung.task_id, *(t.task_id for t in others)])
    assert all(r.status is TaskStatus.COMPLETED for r in records[1:])


async def test_a_busy_loop_past_the_timeout_is_interrupted_and_the_task_fails(start_app: Start) -> None:
    deployment, app = await start_app(HUNG, message_queue=MQ)
    cp = deployment.control_plane
    started = time.monotonic()
    spun = await cp.create_task(TaskDefinition(service_id="spin", input='{"key": "s", "seconds": 60}'))
    done = await cp.wait_for_task(spun.task_id, timeout=30)
    took = time.monotonic() - started
    print(
        f"injected: a 60 s busy loop in an async step with timeout 2 s; ended after {took:.1f} s: {done.error}"
    )
    assert done.status is TaskStatus.FAILED and took < 15
    assert app.runs_of("s") == 1
    await audit(cp, [spun.task_id])


async def test_a_stalled_worker_keeps_its_task_and_its_late_result_ends_it(start_app: Start) -> None:
    """The blocked worker is vouched for by its watchdog: its task stays with it (no other replica
    blocks on it too) and its record says it runs. Blocked past the lease (4 s), the task goes to
    the other replica; the first worker still finishes first (6 s), and that result ends the task:
    the second run's result is dropped and nothing runs it again."""
    deployment, app = await start_app(HUNG, message_queue=MQ)
    cp = deployment.control_plane
    stalled = await cp.create_task(TaskDefinition(service_id="stall", input='{"key": "st", "seconds": 6}'))
    await asyncio.sleep(2.5)
    during = await cp.get_task(stalled.task_id)
    assert (during.status, during.attempts, app.runs_of("st")) == (TaskStatus.RUNNING, 1, 1)
    done = await cp.wait_for_task(stalled.task_id, timeout=60)
    await asyncio.sleep(6)  # the second run (on the other replica) ends too: nothing may follow it
    runs = app.runs_of("st")
    record = await cp.get_task(stalled.task_id)
    late = deployment.health()["late_results"]
    print(
        f"injected: time.sleep(6) with a 4 s lease; counted: {runs} runs, attempts {record.attempts}, "
        f"late results ignored {late}"
    )
    assert done.status is TaskStatus.COMPLETED and done.result == "woke st"
    assert runs == 2 and record.attempts == 2
    assert late == 1  # the second run's result: ignored, and counted
    await audit(cp, [stalled.task_id])
    assert (await cp.get_task(stalled.task_id)).result == "woke st"
