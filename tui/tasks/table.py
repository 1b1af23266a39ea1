"""The tasks table: status, service, replica, attempt, age and duration of each task, live."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets.data_table import ColumnKey

from llamactl.tui.cells import Cell
from llamactl.tui.keyed_table import KeyedTable, Row
from llamactl.tui.messages import TaskPicked
from llamactl.tui.model.format import ago, duration, short_id
from llamactl.tui.model.query import SORTS
from llamactl.tui.model.tasks import STATUS_ORDER, TaskRow
from llamactl.tui.palette import Palette

__all__ = ["COLUMNS", "SORT_CYCLE", "TasksTable"]

COLUMNS: list[tuple[str, str, int]] = [
    ("task", "Task", 8),
    ("status", "Status", 9),
    ("service", "Service", 9),
    ("replica", "Replica", 9),
    ("attempt", "Try", 3),
    ("age", "Age", 4),
    ("duration", "Took", 5),
]
"""(key, label, width) of each column; the keys are the sort names of ``model.query.SORTS``."""

SORT_CYCLE = ("age", "status", "service", "duration", "attempt", "replica", "task")
"""The order ``s`` goes through the columns: the most useful first."""


class TasksTable(KeyedTable):
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
        super().__init__(id=id)
        self.sort_by = "age"
        self.reverse = False
        self.palette = Palette()

    def on_mount(self) -> None:
        for key, label, width in COLUMNS:
            self.add_column(label, width=width, key=key)
        self._label_columns()

    def _label_columns(self) -> None:
        for key, label, _ in COLUMNS:
            column = self.columns[ColumnKey(key)]
            if key == self.sort_by:
                _, descending = SORTS[key]
                arrow = "▼" if descending != self.reverse else "▲"
                column.label = Text(f"{label}{arrow}", style="bold")
            else:
                column.label = Text(label)
        self.refresh()

    def show_tasks(self, tasks: list[TaskRow], now: float) -> None:
        """Show ``tasks`` in this order (already filtered, sorted and capped)."""
        self.show([self._row(task, now) for task in tasks])

    def _row(self, task: TaskRow, now: float) -> Row:
        status = task.status.value
        took = task.duration(now)
        return (
            task.task_id,
            [
                Cell(short_id(task.task_id), task.task_id),
                Cell(status, STATUS_ORDER[task.status], self.palette.status(status)),
                Cell(task.service_id or "-"),
                Cell(task.replica_id or "-"),
                Cell(str(task.attempts) if task.attempts else "-", task.attempts),
                Cell(ago(task.age(now)), -task.created_at),
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

    def on_data_table_header_selected(self, event: KeyedTable.HeaderSelected) -> None:
        event.stop()
        key = event.column_key.value
        if key is None:
            return
        if key == self.sort_by:
            self.reverse = not self.reverse
        else:
            self.sort_by, self.reverse = key, False
        self._label_columns()
        self.post_message(self.SortChanged())

    def on_data_table_row_highlighted(self, event: KeyedTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(TaskPicked(event.row_key.value))

    def on_data_table_row_selected(self, event: KeyedTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(TaskPicked(event.row_key.value, open=True))
