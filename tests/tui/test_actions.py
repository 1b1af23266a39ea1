"""Every action of the dashboard, from the keyboard (and the palette), against a real `llamactl serve`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from textual.command import CommandPalette
from textual.widgets import Input, Select, Static

from llamactl.client import AsyncClient
from llamactl.server.types import TaskStatus
from llamactl.tui.dialogs.confirm import ConfirmDialog
from llamactl.tui.dialogs.deployments import DeploymentPicker
from llamactl.tui.dialogs.help import HelpScreen
from llamactl.tui.dialogs.prompt import AnswerDialog, OpenTaskDialog
from llamactl.tui.dialogs.run_task import RunTaskDialog
from llamactl.tui.dialogs.where import WhereScreen
from llamactl.tui.events.event_list import EventList
from llamactl.tui.services.table import ServicesTable
from llamactl.tui.tasks.sessions import ALL, SessionsTable
from llamactl.tui.tasks.table import TasksTable
from tests.llamactl.serving import Server
from tests.tui.conftest import Dash, dashboard, feed_of


@pytest.fixture
async def client(tui_server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(tui_server.url) as c:
        yield c


async def open_in_dashboard(dash: Dash, task_id: str) -> None:
    """What a user does: put the tasks table's cursor on the task and press enter."""
    table = dash.app.screen.query_one(TasksTable)
    await dash.until(lambda: task_id in table.keys, f"task {task_id} in the table")
    table.focus()
    assert table.move_to(task_id)
    await dash.pilot.press("enter")
    await dash.until(lambda: dash.app.shown_task == task_id, "the task on show")


async def test_r_runs_a_task_from_a_form_and_its_events_and_result_appear(tui_server: Server) -> None:
    async with dashboard(tui_server.url) as dash:
        await dash.pilot.press("r")
        await dash.until(lambda: isinstance(dash.app.screen, RunTaskDialog), "the run form")
        dash.app.screen.query_one("#service", Select).value = "echo"
        await dash.pilot.press(*"hi there", "enter")
        await dash.until(lambda: not isinstance(dash.app.screen, RunTaskDialog), "the form to close")
        await dash.until(lambda: dash.app.task_record is not None, "the task to finish")
        assert dash.app.task_record is not None
        assert dash.app.task_record.result == "Message received: hi there"
        events = dash.app.screen.query_one(EventList)
        assert events.seqs == [0]
        assert dash.noticed("queued on echo")


async def test_the_run_form_says_what_is_wrong_with_bad_json(tui_server: Server) -> None:
    async with dashboard(tui_server.url) as dash:
        await dash.pilot.press("r")
        await dash.until(lambda: isinstance(dash.app.screen, RunTaskDialog), "the run form")
        await dash.pilot.press(*'{"count": ', "enter")
        problem = str(dash.app.screen.query_one("#problem").render())
        assert "not valid JSON" in problem and isinstance(dash.app.screen, RunTaskDialog)
        await dash.pilot.press("escape")
        assert not isinstance(dash.app.screen, RunTaskDialog)


async def test_a_human_in_the_loop_task_is_answered_from_the_dashboard(
    tui_server: Server, client: AsyncClient
) -> None:
    tasks = client.deployment("demo").tasks
    async with dashboard(tui_server.url) as dash:
        task = await tasks.create(service="hitl")
        await open_in_dashboard(dash, task.task_id)
        await dash.until(lambda: dash.app.events_book and dash.app.events_book.waiting_for(), "the question")
        header = str(dash.app.screen.query_one("#task-header").render())
        assert "What is the answer?" in header

        def asking() -> bool:
            row = dash.app.model.tasks.get(task.task_id)
            return row is not None and row.shown_status == "asking"

        await dash.until(asking, "asking in the tasks table")
        await dash.pilot.press("a")
        await dash.until(lambda: isinstance(dash.app.screen, AnswerDialog), "the answer dialog")
        assert "What is the answer?" in str(dash.app.screen.query_one("#question").render())
        await dash.pilot.press(*"42", "enter")
        await dash.until(lambda: dash.app.task_record is not None, "the task to finish")
        assert dash.app.task_record is not None and dash.app.task_record.result == "the human said 42"
        assert (await tasks.get(task.task_id)).status is TaskStatus.COMPLETED


async def test_c_cancels_a_running_task_after_confirmation(tui_server: Server, client: AsyncClient) -> None:
    tasks = client.deployment("demo").tasks
    async with dashboard(tui_server.url) as dash:
        task = await tasks.create({"seconds": 60}, service="slow")
        await open_in_dashboard(dash, task.task_id)
        await dash.until(lambda: dash.app.model.tasks.get(task.task_id).status.value == "running", "running")  # type: ignore[union-attr]
        await dash.pilot.press("c")
        await dash.until(lambda: isinstance(dash.app.screen, ConfirmDialog), "the confirmation")
        await dash.pilot.press("y")
        await dash.until(
            lambda: dash.app.model.tasks.get(task.task_id).status is TaskStatus.CANCELLED,  # type: ignore[union-attr]
            "the task cancelled",
        )
        assert (await tasks.get(task.task_id)).status is TaskStatus.CANCELLED


async def test_w_shows_where_the_running_task_is_with_its_stacks_and_w_closes_it(
    tui_server: Server, client: AsyncClient
) -> None:
    tasks = client.deployment("demo").tasks
    async with dashboard(tui_server.url) as dash:
        task = await tasks.create({"seconds": 60}, service="slow")
        try:
            await open_in_dashboard(dash, task.task_id)
            await dash.until(
                lambda: dash.app.model.tasks.get(task.task_id).status.value == "running", "running"
            )  # type: ignore[union-attr]
            await dash.pilot.press("w")
            await dash.until(lambda: isinstance(dash.app.screen, WhereScreen), "the answer's screen")
            screen = dash.app.screen
            title = str(screen.query_one(".title", Static).render())
            assert title.startswith(f"Task {task.task_id} on slow#1: in slow (funcs.py line "), title
            assert "await asyncio.sleep(float(seconds))" in str(screen.query_one("#stacks", Static).render())
            await dash.pilot.press("w")
            await dash.until(lambda: not isinstance(dash.app.screen, WhereScreen), "the screen closed")
            book = dash.app.events_book
            assert book is not None and all(e.type != "TaskWhere" for e in book)  # not an event
        finally:
            await tasks.cancel(task.task_id)
        await dash.until(lambda: dash.app.model.tasks.get(task.task_id).status.is_final, "the task ended")  # type: ignore[union-attr]
        await dash.until(lambda: dash.app.screen.check_action("where_task", ()) is None, "w dimmed")


async def test_declining_the_confirmation_leaves_the_task_running(
    tui_server: Server, client: AsyncClient
) -> None:
    tasks = client.deployment("demo").tasks
    async with dashboard(tui_server.url) as dash:
        task = await tasks.create({"seconds": 60}, service="slow")
        await open_in_dashboard(dash, task.task_id)
        await dash.pilot.press("c")
        await dash.until(lambda: isinstance(dash.app.screen, ConfirmDialog), "the confirmation")
        await dash.pilot.press("n")
        await dash.until(lambda: not isinstance(dash.app.screen, ConfirmDialog), "the dialog gone")
        assert not [w for w in dash.app.workers if w.group == "actions"], "no request was sent"
        assert not (await tasks.get(task.task_id)).status.is_final
        await tasks.cancel(task.task_id)


async def test_n_creates_a_session_and_x_deletes_it_after_confirmation(
    tui_server: Server, client: AsyncClient
) -> None:
    async with dashboard(tui_server.url) as dash:
        sessions = dash.app.screen.query_one(SessionsTable)
        await dash.pilot.press("n")
        await dash.until(lambda: dash.noticed(" created: tasks run with r"), "the new session's notice")
        created = next(n for n in dash.notices if " created: tasks run with r" in n).split()[1]
        await dash.until(lambda: created in sessions.keys, "the new session's row")
        assert (await client.deployment("demo").sessions.get(created)).session_id == created
        sessions.focus()
        assert sessions.move_to(created)
        await dash.pilot.press("x")
        await dash.until(lambda: isinstance(dash.app.screen, ConfirmDialog), "the confirmation")
        await dash.pilot.press("y")
        await dash.until(lambda: created not in sessions.keys, "the row gone")
        assert dash.noticed(f"Session {created} deleted")
        names = {s.session_id for s in await client.deployment("demo").sessions.list()}
        assert created not in names


async def test_d_switches_to_another_deployment(tui_server: Server) -> None:
    async with dashboard(tui_server.url) as dash:
        await dash.pilot.press("d")
        await dash.until(lambda: isinstance(dash.app.screen, DeploymentPicker), "the picker")
        picker = dash.app.screen
        assert isinstance(picker, DeploymentPicker) and picker.names == ["demo", "other"]
        await dash.pilot.press("down", "enter")
        await dash.until(lambda: feed_of(dash.app).deployment == "other", "the other deployment")
        services = dash.app.screen.query_one(ServicesTable)
        await dash.until(lambda: services.keys == ["echo"], "other's only service")


async def test_without_a_deployment_the_dashboard_asks_which_one(tui_server: Server) -> None:
    async with dashboard(tui_server.url, deployment=None) as dash:
        await dash.until(lambda: isinstance(dash.app.screen, DeploymentPicker), "the picker")
        await dash.pilot.press("enter")
        await dash.until(
            lambda: feed_of(dash.app).connected and feed_of(dash.app).deployment == "demo", "demo"
        )


async def test_o_opens_a_task_by_its_id(tui_server: Server, client: AsyncClient) -> None:
    task = await client.deployment("demo").tasks.create({"count": 2}, service="stream")
    await client.deployment("demo").tasks.result(task.task_id, timeout=30)
    async with dashboard(tui_server.url) as dash:
        await dash.pilot.press("o")
        await dash.until(lambda: isinstance(dash.app.screen, OpenTaskDialog), "the open dialog")
        await dash.pilot.press(*task.task_id, "enter")
        await dash.until(lambda: dash.app.shown_task == task.task_id, "the task on show")
        events = dash.app.screen.query_one(EventList)
        await dash.until(lambda: events.seqs == [0, 1, 2], "its events")


async def test_opening_an_unknown_task_says_so(tui_server: Server) -> None:
    async with dashboard(tui_server.url) as dash:
        await dash.pilot.press("o")
        await dash.until(lambda: isinstance(dash.app.screen, OpenTaskDialog), "the open dialog")
        dash.app.screen.query_one(Input).value = "no-such-task"
        await dash.pilot.press("enter")
        await dash.until(lambda: dash.noticed("could not open task no-such-task"), "an error notice")


async def test_y_copies_the_id_of_the_task_on_show(tui_server: Server, client: AsyncClient) -> None:
    async with dashboard(tui_server.url) as dash:
        task = await client.deployment("demo").tasks.create({"message": "copy me"})
        await open_in_dashboard(dash, task.task_id)
        await dash.pilot.press("y")
        assert dash.app.clipboard == task.task_id
        assert dash.noticed(f"Copied task id {task.task_id}")


async def test_question_mark_lists_every_key_by_region(tui_server: Server) -> None:
    async with dashboard(tui_server.url) as dash:
        await dash.pilot.press("question_mark")
        await dash.until(lambda: isinstance(dash.app.screen, HelpScreen), "the help screen")
        screen = dash.app.screen
        assert isinstance(screen, HelpScreen)
        text = " ".join(b.description for _, bindings in screen.sections for b in bindings)
        for needle in (
            "Run task",
            "Answer",
            "Cancel task",
            "Copy id",
            "Open task",
            "New session",
            "Delete session",
            "Deployment",
            "Filter",
            "Sort",
            "Follow",
            "Expand",
        ):
            assert needle in text, needle
        await dash.pilot.press("escape")
        assert not isinstance(dash.app.screen, HelpScreen)


async def test_the_command_palette_runs_the_dashboards_actions(tui_server: Server) -> None:
    async with dashboard(tui_server.url) as dash:
        await dash.pilot.press("ctrl+p")
        await dash.until(lambda: isinstance(dash.app.screen, CommandPalette), "the palette")
        await dash.pilot.press(*"Run a task")
        await dash.pilot.pause(0.3)
        await dash.pilot.press("enter")
        await dash.until(lambda: isinstance(dash.app.screen, RunTaskDialog), "the run form")


async def test_z_zooms_the_focused_region_and_back(tui_server: Server) -> None:
    async with dashboard(tui_server.url) as dash:
        table = dash.app.screen.query_one(TasksTable)
        table.focus()
        await dash.pilot.press("z")
        assert dash.app.screen.maximized is table
        await dash.pilot.press("z")
        assert dash.app.screen.maximized is None


async def test_number_keys_move_between_regions(tui_server: Server) -> None:
    async with dashboard(tui_server.url) as dash:
        await dash.pilot.press("1")
        assert isinstance(dash.app.focused, ServicesTable)
        await dash.pilot.press("2")
        assert isinstance(dash.app.focused, SessionsTable)
        await dash.pilot.press("4")
        assert isinstance(dash.app.focused, EventList)
        await dash.pilot.press("3")
        assert isinstance(dash.app.focused, TasksTable)


async def test_tasks_run_in_sessions_of_their_own_add_no_session_rows(
    tui_server: Server, client: AsyncClient
) -> None:
    """`tasks/run` naming no session gives its task a session with no record: no row for it,
    from the snapshot nor from the change feed, and the "all" row counts the task."""
    tasks = client.deployment("demo").tasks
    await tasks.run({"message": "before"}, service="echo", task_id=f"own-{time.time_ns()}")
    async with dashboard(tui_server.url) as dash:
        later = f"own-{time.time_ns()}"  # one that asks and waits: nothing but its status changes
        waiting = asyncio.create_task(tasks.run(service="hitl", task_id=later))
        await dash.until(lambda: dash.app.model.tasks.get(later) is not None, "the task from the feed")
        own = {t.session_id for t in await tasks.list() if t.own_session}
        assert len(own) >= 2
        rows = {row.session_id for row in dash.app.model.sessions.newest(1000)}
        assert not own & rows, own & rows
        sessions = dash.app.screen.query_one(SessionsTable)

        def all_counted() -> bool:
            return sessions.get_cell(ALL, "tasks").text == str(len(dash.app.model.tasks))

        await dash.until(all_counted, 'the "all" row counting the task that came later')
        waiting.cancel()
        await tasks.cancel(later)
