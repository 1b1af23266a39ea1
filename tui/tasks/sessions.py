"""The sessions list: "all tasks", then each session (newest first) with its task count.

Their Context sizes are in the state tree (this list stays narrow enough for 80 columns)."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message

from llamactl.tui.cells import Cell
from llamactl.tui.grid import Column, LiveGrid, Row
from llamactl.tui.messages import SessionPicked
from llamactl.tui.model.format import short_id
from llamactl.tui.model.sessions import SessionRow

__all__ = ["ALL", "SessionsTable"]

ALL = "*"
"""Key of the first row: every task, whatever its session."""


class SessionsTable(LiveGrid):
    """Picking a row shows that session's tasks in the tasks table."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("n", "create", "New session", id="sessions.create"),
        Binding("x", "delete", "Delete session", id="sessions.delete"),
    ]

    DEFAULT_CSS = """
    SessionsTable { width: 18; height: 1fr; scrollbar-size-vertical: 1; }
    """

    class CreateRequested(Message):
        pass

    class DeleteRequested(Message):
        def __init__(self, session_id: str) -> None:
            super().__init__()
            self.session_id = session_id

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__([Column("session", "Session", 8), Column("tasks", "Tasks", 5)], id=id)
        self.show([self._all_row(0)])

    @property
    def selected(self) -> str | None:
        """The session picked (None: all tasks)."""
        key = self.cursor_key
        return None if key in (None, ALL) else key

    def show_sessions(self, sessions: list[SessionRow], total_tasks: int) -> None:
        rows = [self._all_row(total_tasks)]
        rows += [
            (
                s.session_id,
                [
                    Cell(short_id(s.session_id), s.session_id),
                    Cell(str(len(s.task_ids)), len(s.task_ids)),
                ],
            )
            for s in sessions
        ]
        self.show(rows)

    def _all_row(self, total: int) -> Row:
        return (ALL, [Cell("all", ""), Cell(str(total), total)])

    def action_create(self) -> None:
        self.post_message(self.CreateRequested())

    def action_delete(self) -> None:
        if self.selected is not None:
            self.post_message(self.DeleteRequested(self.selected))

    def on_live_grid_row_highlighted(self, event: LiveGrid.RowHighlighted) -> None:
        event.stop()
        self.post_message(SessionPicked(self.selected))
