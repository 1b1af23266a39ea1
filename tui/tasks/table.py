"""The tasks table: status, service, replica, attempt, age and duration of each task, live."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message

from llamactl.tui.cells import Cell
from llamactl.tui.grid import Column, LiveGrid, Row
from llamactl.tui.messages import TaskPicked
from llamactl.tui.model.format import ago, duration, short_id
from llamactl.tui.model.query import SORTS
from llamactl.tui.model.tasks import STATUS_ORDER, TaskRow
from llamactl.tui.palette import Palette

__all__ = ["COLUMNS", "SORT_CYCLE", "TasksTable"]

COLUMNS = [
    Column("task", "Task", 8),
    Column("status", "Status", 9),
    Column("service", "Service", 9),
    Column("replica", "Replica", 8),
    Column("attempt", "Try", 3),
    Column("age", "Age", 4),
    Column("duration", "Took", 6),
]
"""The columns; their keys are the sort names of ``model.query.SORTS``."""

SORT_CYCLE = ("age", "status", "service", "duration", "attempt", "replica", "task")
"""The order ``s`` goes through the columns: the most useful first."""


class TasksTable(LiveGrid):
    """One row per task; ``s`` cycles the sort column, ``S`` flips its direction."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "open", "Events", id="tasks.open"),
        Binding("slash", "filter", "Filter", id="tasks.filter", key_display="/"),
        Binding("s", "sort", "Sort", id="tasks.sort"),
        Binding("S", "reverse", "Reverse", id="tasks.reverse"),
    ]

    DEFAULT_CSS = """
    TasksTable { height: 1fr; }
    """

    class SortChanged(Message):
        """The user changed the sort column or direction."""

    class FilterRequested(Message):
        """The user pressed ``/``."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(COLUMNS, id=id)
        self.sort_by = "age"
        self.reverse = False
        self.palette = Palette()
        self._rows: dict[str, tuple[tuple[object, ...], Row]] = {}
        self._label_columns()

    def _label_columns(self) -> None:
        for column in COLUMNS:
            if column.key == self.sort_by:
                _, descending = SORTS[column.key]
                arrow = "▼" if descending != self.reverse else "▲"
                self.set_label(column.key, f"{column.label}{arrow}")
            else:
                self.set_label(column.key, column.label)

    def show_tasks(self, tasks: list[TaskRow], now: float) -> None:
        """Show ``tasks`` in this order (already filtered, sorted and capped)."""
        rows: dict[str, tuple[tuple[object, ...], Row]] = {}
        for task in tasks:
            took = task.duration(now)
            age = ago(task.age(now))
            # Cells are built again only for rows whose shown values (or the theme's colors) changed.
            shown = (task.shown_status, task.service_id, task.replica_id, task.attempts)
            signature = (*shown, age, duration(took), self.palette)
            cached = self._rows.get(task.task_id)
            if cached is None or cached[0] != signature:
                cached = (signature, self._row(task, took, age))
            rows[task.task_id] = cached
        self._rows = rows
        self.show([row for _, row in rows.values()])

    def _row(self, task: TaskRow, took: float | None, age: str) -> Row:
        status = task.shown_status
        return (
            task.task_id,
            [
                Cell(short_id(task.task_id), task.task_id),
                Cell(status, STATUS_ORDER[task.status], self.palette.status(status)),
                Cell(task.service_id or "-"),
                Cell(task.replica_id or "-"),
                Cell(str(task.attempts) if task.attempts else "-", task.attempts),
                Cell(age, -task.created_at),
                Cell(duration(took), took),
            ],
        )

    # --- actions --------------------------------------------------------------------------------

    def action_open(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(TaskPicked(key, open=True))

    def action_filter(self) -> None:
        self.post_message(self.FilterRequested())

    def action_sort(self) -> None:
        self.sort_by = SORT_CYCLE[(SORT_CYCLE.index(self.sort_by) + 1) % len(SORT_CYCLE)]
        self.reverse = False
        self._label_columns()
        self.post_message(self.SortChanged())

    def action_reverse(self) -> None:
        self.reverse = not self.reverse
        self._label_columns()
        self.post_message(self.SortChanged())

    def on_live_grid_header_clicked(self, event: LiveGrid.HeaderClicked) -> None:
        event.stop()
        if event.column == self.sort_by:
            self.reverse = not self.reverse
        else:
            self.sort_by, self.reverse = event.column, False
        self._label_columns()
        self.post_message(self.SortChanged())

    def on_live_grid_row_highlighted(self, event: LiveGrid.RowHighlighted) -> None:
        event.stop()
        self.post_message(TaskPicked(event.key))

    def on_live_grid_row_selected(self, event: LiveGrid.RowSelected) -> None:
        event.stop()
        self.post_message(TaskPicked(event.key, open=True))
