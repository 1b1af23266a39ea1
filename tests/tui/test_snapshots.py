"""Screenshots of the main screens with fixed data (``fake_api``): they catch layout regressions.

After an intended change of the look, accept the new pictures with
``pytest tests/tui/test_snapshots.py --snapshot-update`` and review the SVG diffs. Textual and Rich
versions change the pictures too: the snapshots were taken with the versions pinned in the dev
environment (see ``pyproject.toml``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from textual.pilot import Pilot

from llamactl.tui.app import DashboardApp
from llamactl.tui.config import DashboardConfig
from llamactl.tui.events.event_list import EventList
from llamactl.tui.header.banner import ConnectionBanner
from llamactl.tui.tasks.table import TasksTable
from tests.tui.conftest import until
from tests.tui.fake_api import NOW, SHOWN, TASKS, WAITING, fake_client, unreachable_client

SnapCompare = Callable[..., bool]


def app(theme: str = "textual-dark", **config: Any) -> DashboardApp:
    return DashboardApp(
        DashboardConfig(deployment="demo", theme=theme, **config), clock=lambda: NOW, client=fake_client()
    )


def showing(task_id: str) -> Callable[[Pilot[Any]], Awaitable[None]]:
    """Wait for the snapshot, put ``task_id`` under the cursor and on show, wait for its events."""

    async def run_before(pilot: Pilot[Any]) -> None:
        dashboard = pilot.app
        assert isinstance(dashboard, DashboardApp)
        await until(pilot, lambda: len(dashboard.model.tasks) == len(TASKS), "the fixed tasks")
        table = dashboard.screen.query_one(TasksTable)
        await until(pilot, lambda: len(table.keys) == len(TASKS), "the table's rows")
        table.move_to(task_id)
        dashboard.screen.show_task(task_id)  # type: ignore[attr-defined]
        events = dashboard.screen.query_one(EventList)
        await until(pilot, lambda: events.option_count > 0, "the task's events")
        await until(pilot, lambda: len(dashboard.model.sessions) > 0, "the sessions")
        await pilot.pause(0.2)

    return run_before


def test_main_screen_wide_dark(snap_compare: SnapCompare) -> None:
    assert snap_compare(app(), terminal_size=(160, 40), run_before=showing(SHOWN))


def test_main_screen_80x24(snap_compare: SnapCompare) -> None:
    assert snap_compare(app(), terminal_size=(80, 24), run_before=showing(SHOWN))


def test_main_screen_light_theme(snap_compare: SnapCompare) -> None:
    assert snap_compare(app("textual-light"), terminal_size=(160, 40), run_before=showing(SHOWN))


def test_a_task_that_waits_for_a_human(snap_compare: SnapCompare) -> None:
    assert snap_compare(app(), terminal_size=(160, 40), run_before=showing(WAITING))


def test_state_tree(snap_compare: SnapCompare) -> None:
    assert snap_compare(app(), press=["5"], terminal_size=(160, 40), run_before=showing(SHOWN))


def test_help_screen(snap_compare: SnapCompare) -> None:
    assert snap_compare(app(), press=["question_mark"], terminal_size=(120, 40), run_before=showing(SHOWN))


def test_disconnected_banner(snap_compare: SnapCompare) -> None:
    unreachable = DashboardApp(
        DashboardConfig(deployment="demo", theme="textual-dark", retry_initial=30, retry_max=30),
        clock=lambda: NOW,
        client=unreachable_client(),
    )

    async def run_before(pilot: Pilot[Any]) -> None:
        banner = pilot.app.screen.query_one(ConnectionBanner)
        await until(pilot, lambda: banner.shown, "the banner")
        await pilot.pause(0.2)

    assert snap_compare(unreachable, terminal_size=(120, 24), run_before=run_before)
