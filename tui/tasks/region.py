"""The sessions/tasks region: the sessions list beside the (filtered, sorted) tasks of the one picked."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical

from llamactl.tui.messages import SessionPicked
from llamactl.tui.model.dashboard import DashboardModel
from llamactl.tui.model.format import short_id
from llamactl.tui.model.query import TaskQuery, select_tasks
from llamactl.tui.tasks.filter_bar import FilterBar
from llamactl.tui.tasks.sessions import SessionsTable
from llamactl.tui.tasks.table import TasksTable

__all__ = ["SESSIONS_SHOWN", "TasksRegion"]

SESSIONS_SHOWN = 200
"""Sessions the list shows (the newest); the others stay reachable through the filter."""


class TasksRegion(Horizontal):
    """Sessions on the left, tasks on the right; ``/`` filters the tasks, ``s`` sorts them."""

    DEFAULT_CSS = """
    TasksRegion { height: 1fr; border: round $primary 50%; border-title-color: $text; }
    TasksRegion:focus-within { border: round $primary; }
    TasksRegion > #tasks-side { width: 1fr; }
    """

    def __init__(self, model: DashboardModel, max_rows: int, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.max_rows = max_rows
        self.task_query = TaskQuery()
        self.border_title = "Sessions · Tasks"
        self._all_shown = -1
        """The count the sessions table's "all" row shows (it is redrawn when that changes)."""

    def compose(self) -> ComposeResult:
        yield SessionsTable(id="sessions")
        with Vertical(id="tasks-side"):
            yield FilterBar(id="filter")
            yield TasksTable(id="tasks")

    @property
    def table(self) -> TasksTable:
        return self.query_one(TasksTable)

    @property
    def sessions(self) -> SessionsTable:
        return self.query_one(SessionsTable)

    def redraw(self, now: float, *, sessions: bool = True) -> None:
        """Show the model's tasks (through the filter and sort) and, with ``sessions``, its sessions."""
        table = self.table
        picked = self.sessions.selected
        total = len(self.model.tasks)
        if sessions or total != self._all_shown:
            self._all_shown = total
            self.sessions.show_sessions(self.model.sessions.newest(SESSIONS_SHOWN), total)
            if self.sessions.selected != picked:
                # The session picked went away (deleted, or dropped): the row the cursor is on
                # now is the one picked, as if the user had moved there.
                picked = self.sessions.selected
                self.post_message(SessionPicked(picked))
        shown = select_tasks(
            self.model.tasks,
            session_id=picked,
            query=self.task_query or None,
            sort=table.sort_by,
            reverse=table.reverse,
            limit=self.max_rows,
        )
        table.show_tasks(shown, now)
        parts = [f"{len(shown)} of {len(self.model.tasks)} tasks"]
        if picked is not None:
            parts.append(f"session {short_id(picked)}")
        if self.task_query:
            parts.append(f"filter: {self.task_query.text}")
        self.border_subtitle = " · ".join(parts)

    def open_filter(self) -> None:
        self.query_one(FilterBar).open()

    def on_tasks_table_filter_requested(self, event: TasksTable.FilterRequested) -> None:
        event.stop()
        self.open_filter()

    def on_tasks_table_sort_changed(self, event: TasksTable.SortChanged) -> None:
        event.stop()
        self.redraw(self.model.now(), sessions=False)

    def on_filter_bar_filter_changed(self, event: FilterBar.FilterChanged) -> None:
        event.stop()
        self.task_query = TaskQuery.parse(event.text)
        self.redraw(self.model.now(), sessions=False)

    def on_filter_bar_done(self, event: FilterBar.Done) -> None:
        event.stop()
        self.task_query = TaskQuery.parse(self.query_one(FilterBar).value)
        self.redraw(self.model.now(), sessions=False)
        self.table.focus()

    def on_session_picked(self, event: SessionPicked) -> None:
        self.redraw(self.model.now(), sessions=False)
