"""When the session picked in the sessions list is deleted, the cursor lands on another row: the
tasks table, its title and what the dashboard takes as picked follow that row, not the session gone."""

from __future__ import annotations

import httpx

from llamactl.client import AsyncClient
from llamactl.tui.app import DashboardApp
from llamactl.tui.dialogs.confirm import ConfirmDialog
from llamactl.tui.feed import Feed
from llamactl.tui.tasks.region import TasksRegion
from llamactl.tui.tasks.sessions import SessionsTable
from llamactl.tui.tasks.table import TasksTable
from tests.tui import fake_api
from tests.tui.conftest import until
from tests.tui.fake_api import NOW, TASKS


def _handle(request: httpx.Request) -> httpx.Response:
    if request.method == "DELETE" and "/sessions/" in request.url.path:
        return httpx.Response(204)
    return fake_api._handle(request)


def _session_tasks(session_id: str | None) -> set[str]:
    return {t["task_id"] for t in TASKS if session_id is None or t["session_id"] == session_id}


async def test_deleting_the_picked_session_shows_the_tasks_of_the_row_the_cursor_lands_on() -> None:
    client = AsyncClient("http://demo.invalid:4501", transport=httpx.MockTransport(_handle))
    app = DashboardApp(clock=lambda: NOW, client=client)
    async with app.run_test(size=(160, 40)) as pilot:
        feed = app.screen.query_one(Feed)
        sessions = app.screen.query_one(SessionsTable)
        table = app.screen.query_one(TasksTable)
        region = app.screen.query_one(TasksRegion)
        await until(pilot, lambda: feed.connected and sessions.row_count == 4, "the sessions listed")
        gone = sessions.keys[1]
        sessions.focus()
        sessions.move_to(gone)
        await until(pilot, lambda: set(table.keys) == _session_tasks(gone), "the picked session's tasks")

        await pilot.press("x")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog), "the confirmation")
        await pilot.press("y")
        await until(pilot, lambda: gone not in sessions.keys, "the session gone from the list")

        picked = sessions.selected
        assert picked != gone
        assert set(table.keys) == _session_tasks(picked), "the tasks shown are not the picked session's"
        assert str(region.border_subtitle).startswith(f"{len(table.keys)} of ")
        # SessionPicked is a message: the pin follows once the app has handled it.
        pinned = {picked} if picked else set()
        await until(pilot, lambda: app.model.sessions.pinned == pinned, "the session picked pinned")
