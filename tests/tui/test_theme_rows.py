"""A change of theme recolors every row of the tasks table and every event on show, not only
what is drawn anew next."""

from __future__ import annotations

from rich.text import Text

from llamactl.tui.app import DashboardApp
from llamactl.tui.config import DashboardConfig
from llamactl.tui.events.event_list import EventList
from llamactl.tui.palette import Palette
from llamactl.tui.tasks.table import TasksTable
from tests.tui.conftest import until
from tests.tui.fake_api import EVENTS, NOW, SHOWN, TASKS, fake_client

COMPLETED = TASKS[0]["task_id"]


async def test_finished_tasks_take_the_new_themes_colors() -> None:
    app = DashboardApp(
        DashboardConfig(deployment="demo", theme="textual-dark"), clock=lambda: NOW, client=fake_client()
    )
    async with app.run_test(size=(160, 40)) as pilot:
        table = app.screen.query_one(TasksTable)
        await until(pilot, lambda: len(table.keys) == len(TASKS), "the table's rows")
        dark = table.get_cell(COMPLETED, "status").style
        assert dark == Palette.of(app).status("completed")
        app.theme = "nord"
        await until(pilot, lambda: table.palette.status("completed") != dark, "the new theme's palette")
        nord = table.palette.status("completed")
        await until(
            pilot,
            lambda: table.get_cell(COMPLETED, "status").style == nord,
            "the completed task's status in the new theme's color",
            timeout=3,
        )


async def test_the_events_on_show_take_the_new_themes_colors() -> None:
    app = DashboardApp(
        DashboardConfig(deployment="demo", theme="textual-dark"), clock=lambda: NOW, client=fake_client()
    )
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: len(app.model.tasks) == len(TASKS), "the fixed tasks")
        app.screen.show_task(SHOWN)  # type: ignore[attr-defined]
        events = app.screen.query_one(EventList)
        await until(pilot, lambda: events.option_count == len(EVENTS[SHOWN]), "the task's events")
        last = events.option_count - 1  # its StopEvent, in the theme's success color

        def styles() -> str:
            prompt = events.get_option_at_index(last).prompt
            assert isinstance(prompt, Text)
            return " ".join(str(span.style) for span in prompt.spans)

        dark = events.palette.success
        assert dark in styles()
        app.theme = "nord"
        await until(pilot, lambda: events.palette.success != dark, "the new theme's palette")
        assert events.palette.success in styles()
