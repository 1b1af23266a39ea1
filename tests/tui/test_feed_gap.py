"""A dashboard that resumes the change feed after the server trimmed it past where it stopped (a
long disconnection from a busy server) loads the tasks afresh: the changes it missed are gone from
the feed, so resuming alone would leave rows on a status they left long ago."""

from __future__ import annotations

import json
from typing import Any

import httpx

from llamactl.client import AsyncClient
from llamactl.tui.app import DashboardApp
from llamactl.tui.config import DashboardConfig
from llamactl.tui.tasks.table import TasksTable
from tests.tui.conftest import feed_of, until
from tests.tui.fake_api import NOW, T0, SilentStream

RUNNING_THEN_DONE = "0000000a-7a1e-4c2b-9d3f-00000000000a"
LATER = "0000000b-7a1e-4c2b-9d3f-00000000000b"
FIRST_SEQ = 10
TRIMMED_TO = 4_000
"""The first entry the server still has when the dashboard comes back."""


def _task(task_id: str, status: str, created: float) -> dict[str, Any]:
    final = status in ("completed", "failed", "cancelled")
    return {
        "task_id": task_id,
        "deployment": "demo",
        "service_id": "echo",
        "session_id": "5e550000-0000-4000-8000-000000000000",
        "input": "{}",
        "status": status,
        "attempts": 1,
        "replica_id": "echo#1",
        "created_at": created,
        "started_at": created + 0.1,
        "finished_at": created + 1 if final else None,
    }


class TrimmingServer:
    """Task A runs at the first connection; the feed then ends, and by the time the dashboard is
    back A has completed, its change trimmed from the feed, which starts at ``TRIMMED_TO``."""

    def __init__(self) -> None:
        self.feeds = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        back = self.feeds > 0
        tasks = [_task(RUNNING_THEN_DONE, "completed" if back else "running", T0)]
        if back:
            tasks.append(_task(LATER, "completed", T0 + 100))
        if path == "/deployments/demo/state":
            body = {
                "deployment": "demo",
                "services": [],
                "tasks": {"running": 0 if back else 1, "completed": len(tasks) if back else 0},
                "changes_seq": TRIMMED_TO + 1 if back else FIRST_SEQ,
            }
            return httpx.Response(200, json=body)
        if path == "/deployments/demo/tasks":
            return httpx.Response(200, json=tasks[::-1])
        if path == "/deployments/demo/sessions":
            return httpx.Response(200, json=[])
        if path == "/deployments/demo/changes":
            self.feeds += 1
            headers = {"content-type": "text/event-stream"}
            if self.feeds == 1:  # the connection drops at once
                return httpx.Response(200, headers=headers, stream=SilentStream(b"retry: 1000\n\n", True))
            if int(request.url.params["from_seq"]) != FIRST_SEQ:  # from a fresh snapshot: all is quiet
                return httpx.Response(200, headers=headers, stream=SilentStream(b"retry: 1000\n\n", False))
            change = {
                "kind": "task.status",
                "deployment": "demo",
                "seq": TRIMMED_TO,
                "at": T0 + 101,
                "data": {"task_id": LATER, "session_id": tasks[1]["session_id"], "status": "completed"},
            }
            frame = f"id: {TRIMMED_TO}\nevent: task.status\ndata: {json.dumps(change)}\n\n".encode()
            return httpx.Response(200, headers=headers, stream=SilentStream(frame, False))
        return httpx.Response(404, json={"detail": f"no route {path}"})


async def test_a_gap_in_the_resumed_feed_reloads_the_tasks() -> None:
    server = TrimmingServer()
    client = AsyncClient("http://demo.invalid:4501", transport=httpx.MockTransport(server.handle))
    app = DashboardApp(
        DashboardConfig(deployment="demo", retry_initial=0.05, retry_max=0.1),
        clock=lambda: NOW,
        client=client,
    )
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: server.feeds >= 2 and LATER in app.model.tasks, "the resumed feed")
        assert feed_of(app).connected
        table = app.screen.query_one(TasksTable)
        await until(pilot, lambda: LATER in table.keys, "the later task's row")
        row = app.model.tasks.get(RUNNING_THEN_DONE)
        assert row is not None
        await until(
            pilot,
            lambda: app.model.tasks.get(RUNNING_THEN_DONE).status.value == "completed",  # type: ignore[union-attr]
            "the task whose completion was trimmed from the feed to show it",
            timeout=3,
        )
