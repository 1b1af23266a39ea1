"""Every view of the dashboard, live, against a real `llamactl serve` (Pilot)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from llamactl.client import AsyncClient
from llamactl.server.types import TaskStatus
from llamactl.tui.events.event_list import EventList
from llamactl.tui.header.stats import StatsBar
from llamactl.tui.services.table import ServicesTable
from llamactl.tui.state.tree import StateTree
from llamactl.tui.tasks.sessions import SessionsTable
from llamactl.tui.tasks.table import TasksTable
from tests.llamactl.serving import SERVICES, Server, write_app
from tests.tui.conftest import dashboard


@pytest.fixture
async def client(tui_server: Server) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(tui_server.url) as c:
        yield c


def cell_text(table: TasksTable | ServicesTable | SessionsTable, key: str, column: str) -> str:
    """What the cell shows ("" while the row is not drawn yet)."""
    try:
        return str(table.get_cell(key, column))
    except KeyError:
        return ""


async def test_the_services_view_shows_every_service_with_its_ready_replicas(tui_server: Server) -> None:
    async with dashboard(tui_server.url) as dash:
        table = dash.app.screen.query_one(ServicesTable)
        await dash.until(lambda: set(table.keys) == set(SERVICES), "a row per service")
        await dash.until(lambda: cell_text(table, "echo", "ready") == "1/1", "echo's replica ready")
        assert cell_text(table, "echo", "state") == "up"
        assert cell_text(table, "echo", "generation") == "1"


async def test_a_task_run_elsewhere_appears_and_completes_in_the_tasks_table(
    tui_server: Server, client: AsyncClient
) -> None:
    async with dashboard(tui_server.url) as dash:
        table = dash.app.screen.query_one(TasksTable)
        task = await client.deployment("demo").tasks.create({"count": 2}, service="stream")
        await dash.until(lambda: task.task_id in table.keys, "the new task's row")
        await dash.until(lambda: cell_text(table, task.task_id, "status") == "completed", "its completion")
        assert cell_text(table, task.task_id, "service") == "stream"
        assert cell_text(table, task.task_id, "replica").startswith("stream")


async def test_rows_update_in_place_and_the_cursor_stays_on_its_task(
    tui_server: Server, client: AsyncClient
) -> None:
    tasks = client.deployment("demo").tasks
    async with dashboard(tui_server.url) as dash:
        table = dash.app.screen.query_one(TasksTable)
        first = await tasks.create({"message": "one"})
        second = await tasks.create({"message": "two"})
        await dash.until(lambda: {first.task_id, second.task_id} <= set(table.keys), "both rows")
        table.focus()
        assert table.move_to(first.task_id)
        slow = await tasks.create({"seconds": 30}, service="slow")
        await dash.until(lambda: slow.task_id in table.keys, "a newer row above")
        assert table.cursor_key == first.task_id
        await dash.until(
            lambda: cell_text(table, slow.task_id, "status") == "running", "the row turns running"
        )
        assert table.cursor_key == first.task_id
        await tasks.cancel(slow.task_id)


async def test_the_filter_narrows_the_tasks_and_escape_clears_it(
    tui_server: Server, client: AsyncClient
) -> None:
    tasks = client.deployment("demo").tasks
    failing = await tasks.create({"message": "x"}, service="boom")
    await tasks.result(failing.task_id, timeout=30)
    await tasks.run({"message": "fine"})
    async with dashboard(tui_server.url) as dash:
        table = dash.app.screen.query_one(TasksTable)
        await dash.until(lambda: failing.task_id in table.keys, "the failed task")
        table.focus()
        await dash.pilot.press("slash")
        await dash.pilot.press(*"status:failed")
        await dash.until(
            lambda: table.keys and all(cell_text(table, k, "status") == "failed" for k in table.keys),
            "only failed tasks",
        )
        await dash.pilot.press("escape")
        await dash.until(
            lambda: any(cell_text(table, k, "status") == "completed" for k in table.keys), "all again"
        )


async def test_s_sorts_by_the_next_column_and_capital_s_flips_it(
    tui_server: Server, client: AsyncClient
) -> None:
    await client.deployment("demo").tasks.run({"message": "a"})
    await client.deployment("demo").tasks.run({"name": "b"}, service="func")
    async with dashboard(tui_server.url) as dash:
        table = dash.app.screen.query_one(TasksTable)
        table.focus()
        await dash.until(lambda: len(table.keys) >= 2, "a few rows")
        await dash.pilot.press("s", "s")  # age -> status -> service
        assert table.sort_by == "service"
        services = lambda: [cell_text(table, k, "service") for k in table.keys]  # noqa: E731
        await dash.until(lambda: services() == sorted(services()), "sorted by service")
        await dash.pilot.press("S")
        await dash.until(lambda: services() == sorted(services(), reverse=True), "sorted the other way")


async def test_picking_a_session_shows_only_its_tasks(tui_server: Server, client: AsyncClient) -> None:
    demo = client.deployment("demo")
    session = await demo.sessions.create()
    mine = await demo.tasks.create({}, service="counter", session_id=session.session_id)
    await demo.tasks.run({"message": "elsewhere"})
    async with dashboard(tui_server.url) as dash:
        sessions = dash.app.screen.query_one(SessionsTable)
        table = dash.app.screen.query_one(TasksTable)
        await dash.until(lambda: session.session_id in sessions.keys, "the session's row")
        sessions.move_to(session.session_id)
        await dash.until(lambda: table.keys == [mine.task_id], "only the session's task")


async def test_the_events_view_streams_the_task_on_show(tui_server: Server, client: AsyncClient) -> None:
    async with dashboard(tui_server.url) as dash:
        task = await client.deployment("demo").tasks.create({"count": 4}, service="stream")
        await dash.until(lambda: task.task_id in dash.app.model.tasks, "the task")
        dash.app.screen.show_task(task.task_id)  # type: ignore[attr-defined]
        events = dash.app.screen.query_one(EventList)
        await dash.until(lambda: events.seqs == [0, 1, 2, 3, 4], "its five events")
        assert dash.app.events_book is not None
        await dash.until(lambda: dash.app.events_book.ended, "the end of its stream")  # type: ignore[union-attr]
        assert dash.app.task_record is not None and dash.app.task_record.result == 4


async def test_enter_expands_an_event_to_its_json(tui_server: Server, client: AsyncClient) -> None:
    async with dashboard(tui_server.url) as dash:
        task = await client.deployment("demo").tasks.create({"count": 1}, service="stream")
        await dash.until(lambda: task.task_id in dash.app.model.tasks, "the task")
        dash.app.screen.show_task(task.task_id, focus=True)  # type: ignore[attr-defined]
        events = dash.app.screen.query_one(EventList)
        await dash.until(lambda: events.seqs == [0, 1], "its events")
        events.highlighted = 0
        await dash.pilot.press("enter")
        assert events.is_expanded(0)
        await dash.pilot.press("enter")
        assert not events.is_expanded(0)


async def test_scrolled_up_events_count_what_arrives_and_f_follows_again(
    tui_server: Server, client: AsyncClient
) -> None:
    tasks = client.deployment("demo").tasks
    async with dashboard(tui_server.url) as dash:
        task = await tasks.create(service="hitl")
        await dash.until(lambda: task.task_id in dash.app.model.tasks, "the task")
        dash.app.screen.show_task(task.task_id, focus=True)  # type: ignore[attr-defined]
        events = dash.app.screen.query_one(EventList)
        await dash.until(lambda: events.seqs == [0], "the question")
        await dash.pilot.press("up")
        assert not events.following
        await tasks.send_event(task.task_id, {"response": "42"})
        await dash.until(lambda: events.unseen >= 1, "a '+N new' count")
        marker = dash.app.screen.query_one("#unseen")
        assert marker.has_class("-shown")
        await dash.pilot.press("f")
        assert events.following and events.unseen == 0 and not marker.has_class("-shown")
        assert events.highlighted == events.option_count - 1


async def test_the_state_tree_shows_replicas_and_session_context_sizes(
    tui_server: Server, client: AsyncClient
) -> None:
    demo = client.deployment("demo")
    session = await demo.sessions.create()
    await demo.tasks.run({}, service="counter", session_id=session.session_id)
    async with dashboard(tui_server.url) as dash:
        await dash.pilot.press("5")
        tree = dash.app.screen.query_one(StateTree)
        await dash.until(lambda: "echo" in tree._services, "the echo service node")
        replica_labels = [str(node.label) for node in tree._services["echo"].children]
        assert replica_labels and "ready" in replica_labels[0]
        row = lambda: dash.app.model.sessions.get(session.session_id)  # noqa: E731
        await dash.until(lambda: row() is not None and row().context_known, "the session's Context size")  # type: ignore[union-attr]
        node = tree._session_nodes.get(session.session_id)
        assert node is not None and "Context" in str(node.label) and "B" in str(node.label)


async def test_counters_and_throughput_follow_finished_tasks(tui_server: Server, client: AsyncClient) -> None:
    async with dashboard(tui_server.url) as dash:
        before = dash.app.model.counts["completed"]
        for n in range(5):
            await client.deployment("demo").tasks.run({"message": str(n)})
        await dash.until(lambda: dash.app.model.counts["completed"] >= before + 5, "the completed counter")
        now = dash.app.model.now()
        assert sum(dash.app.model.throughput.series(now + 1)) >= 5
        rate = str(dash.app.screen.query_one(StatsBar).query_one("#rate").render())
        assert rate.endswith("/s")


async def test_a_task_status_change_reaches_the_table_in_place(
    tui_server: Server, client: AsyncClient
) -> None:
    tasks = client.deployment("demo").tasks
    async with dashboard(tui_server.url) as dash:
        table = dash.app.screen.query_one(TasksTable)
        task = await tasks.create({"seconds": 30}, service="slow")
        await dash.until(lambda: task.task_id in table.keys, "the row")
        await dash.until(lambda: cell_text(table, task.task_id, "status") == "running", "running")
        rows_before = table.row_count
        await tasks.cancel(task.task_id)
        await dash.until(lambda: cell_text(table, task.task_id, "status") == "cancelled", "cancelled")
        assert table.row_count == rows_before
        row = dash.app.model.tasks.get(task.task_id)
        assert row is not None and row.status is TaskStatus.CANCELLED


async def test_the_services_view_shows_a_reload_and_a_failed_one_with_its_file_and_line(
    tmp_path: Path,
) -> None:
    file = write_app(tmp_path, "watched", {"echo": "flows:echo_workflow"})
    server = await asyncio.to_thread(Server, file, extra=("--watch",))
    try:
        async with dashboard(server.url, "watched") as dash:
            table = dash.app.screen.query_one(ServicesTable)
            flows = tmp_path / "src" / "flows.py"
            source = flows.read_text()
            flows.write_text(source + "\nthis is not python\n")
            await dash.until(lambda: "✗" in cell_text(table, "echo", "reload"), "the failed reload", 60)
            error = dash.app.model.services.get("echo").status.last_reload_error  # type: ignore[union-attr]
            assert "flows.py:" in cell_text(table, "echo", "reload"), error
            flows.write_text(source + "\n# fixed\n")
            await dash.until(lambda: "✓" in cell_text(table, "echo", "reload"), "the reload", 60)
            await dash.until(lambda: cell_text(table, "echo", "generation") == "2", "the new generation")
    finally:
        await asyncio.to_thread(server.stop)


async def test_nothing_is_requested_while_nothing_changes(tui_server: Server, client: AsyncClient) -> None:
    await client.deployment("demo").tasks.run({"message": "settle"})
    async with dashboard(tui_server.url) as dash:
        requests: list[str] = []

        async def note(request: httpx.Request) -> None:
            requests.append(request.url.path)

        dash.app.client._http.event_hooks["request"].append(note)
        quiet_since = deadline = time.monotonic()
        while time.monotonic() - quiet_since < 2:  # let the first snapshot's follow-ups finish
            assert time.monotonic() - deadline < 15, f"requests never stop: {requests}"
            await dash.pilot.pause(0.1)
            if requests:
                requests.clear()
                quiet_since = time.monotonic()
        await dash.pilot.pause(3)
        assert requests == [], "the dashboard asked the server for something while nothing changed"
        await client.deployment("demo").tasks.run({"message": "a change"})
        await dash.until(lambda: any(path.endswith("/state") for path in requests), "counters after a change")
