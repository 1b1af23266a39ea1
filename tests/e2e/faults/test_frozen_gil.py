"""A task whose code holds the GIL for ever (a regular expression that backtracks without end):
the worker's watchdog thread cannot run, so faulthandler's timer, which needs no GIL, writes where
the code is stuck and ends the worker; the supervisor starts a fresh one.

Before: nothing in the worker could act; the server killed it only at its silence limit, and
nobody learned which line froze it."""

from __future__ import annotations

from pathlib import Path

from llamactl.server.deployment import Deployment
from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import eventually

from .apps import write_fault_app


async def test_code_that_holds_the_gil_is_shown_and_its_worker_ended(tmp_path: Path) -> None:
    app = write_fault_app(
        tmp_path / "app",
        {"freeze": {"path": "funcs:freeze"}},
        message_queue={"lease": 1, "max-attempts": 1},
    )
    lines: list[str] = []
    deployment = Deployment.from_file(
        app.file, report_interval=1.0, stop_grace=5, worker_output=lambda name, line: lines.append(line)
    )
    await deployment.start()
    try:
        await deployment.wait_ready(timeout=90, all_replicas=True)
        [first] = [r.pid for s in deployment.services() for r in s.replicas]
        cp = deployment.control_plane
        created = await cp.create_task(TaskDefinition(service_id="freeze", input='{"key": "f"}'))
        done = await cp.wait_for_task(created.task_id, timeout=120)
        assert done.status is TaskStatus.FAILED, done

        async def replaced() -> bool:
            pids = [r.pid for s in deployment.services() for r in s.replicas if r.state == "ready"]
            return bool(pids) and first not in pids

        await eventually(replaced, 120)
    finally:
        await deployment.close()
    text = "\n".join(lines)
    assert "Timeout (0:00:" in text, text[-3000:]
    assert 'funcs.py", line' in text and "in freeze" in text, text[-3000:]
