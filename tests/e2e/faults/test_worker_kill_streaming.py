"""A worker SIGKILLed while a task streams as fast as it can, its events on their way several to
a report: the task's log keeps the killed attempt's events with no gap and none twice, then the
next attempt's marker and all of its events, in order."""

from __future__ import annotations

from llamactl.server.types import TaskDefinition, TaskStatus

from .conftest import Start

EVENTS = 5000
KILL_AT = 3000


async def test_a_worker_killed_mid_stream_leaves_a_log_without_gaps_or_doubles(start_app: Start) -> None:
    deployment, app = await start_app({"gush": {"path": "funcs:gush"}})
    cp = deployment.control_plane
    created = await cp.create_task(
        TaskDefinition(service_id="gush", input=f'{{"key": "g", "n": {EVENTS}, "kill_at": {KILL_AT}}}')
    )
    done = await cp.wait_for_task(created.task_id, timeout=120)
    assert done.status is TaskStatus.COMPLETED, done
    assert app.runs_of("g") == 2 and done.attempts == 2
    log = [e async for e in cp.task_events(created.task_id)]
    assert [e.seq for e in log] == list(range(len(log)))
    marker = next(n for n, e in enumerate(log) if e.type == "TaskAttempt")
    killed = [e.value["i"] for e in log[:marker]]
    again = [e.value["i"] for e in log[marker + 1 :]]
    print(f"counted: {len(killed)} events of the killed attempt stored, {len(again)} of the next")
    assert killed == list(range(len(killed))) and len(killed) <= KILL_AT
    assert {e.attempt for e in log[:marker]} == {1}
    assert again == list(range(EVENTS))
    assert {e.attempt for e in log[marker + 1 :]} == {2}
