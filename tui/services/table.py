"""The services region: each service's state, replicas, generation, last reload, load and last error."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message

from llamactl.tui.cells import Cell
from llamactl.tui.grid import Column, LiveGrid, Row
from llamactl.tui.model.dashboard import DashboardModel
from llamactl.tui.model.format import ago, duration, error_location, one_line
from llamactl.tui.model.services import ServiceRow
from llamactl.tui.palette import Palette

__all__ = ["COLUMNS", "ServicesTable"]

COLUMNS = [
    Column("service", "Service", 10),
    Column("state", "State", 8),
    Column("ready", "Ready", 5),
    Column("generation", "Gen", 3),
    Column("reload", "Last reload", 16),
    Column("queued", "Queued", 6),
    Column("running", "Running", 7),
    Column("error", "Last error", 20),
]


class ServicesTable(LiveGrid):
    """One row per service of the deployment, updated by the change feed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "show_tasks", "Its tasks", id="services.tasks"),
    ]

    DEFAULT_CSS = """
    ServicesTable {
        height: auto; max-height: 10;
        border: round $primary 50%; border-title-color: $text;
    }
    ServicesTable:focus { border: round $primary; }
    """

    class TasksRequested(Message):
        """Show the tasks of this service (a ``service:`` filter)."""

        def __init__(self, service_id: str) -> None:
            super().__init__()
            self.service_id = service_id

    def __init__(self, model: DashboardModel, *, id: str | None = None) -> None:
        super().__init__(COLUMNS, id=id)
        self.model = model
        self.palette = Palette()
        self.border_title = "Services"

    @property
    def selected(self) -> str | None:
        key = self.cursor_key
        return key if key is not None and self.model.services.get(key) else None

    def redraw(self) -> None:
        now = self.model.now()
        self.show([self._row(row, now) for row in self.model.services])
        self.border_subtitle = f"{len(self.model.services)} services"

    def _row(self, service: ServiceRow, now: float) -> Row:
        status = service.status
        state = service.state
        counts = self.model.service_counts(service.service_id)
        return (
            service.service_id,
            [
                Cell(service.service_id),
                Cell(state, style=self.palette.service_state(state)),
                Cell(f"{service.ready}/{service.wanted}", service.ready),
                Cell(str(status.generation), status.generation),
                self._reload_cell(service, now),
                Cell(str(counts["queued"]), counts["queued"]),
                Cell(str(counts["running"]), counts["running"]),
                Cell(one_line(status.last_error, 200), style=self.palette.error),
            ],
        )

    def _reload_cell(self, service: ServiceRow, now: float) -> Cell:
        status = service.status
        if status.last_reload_at is None:
            return Cell("-", 0.0)
        when = ago(now - status.last_reload_at)
        when = when if when == "now" else f"{when} ago"
        if status.last_reload_error:
            where = error_location(status.last_reload_error) or one_line(status.last_reload_error, 30)
            return Cell(f"✗ {when} {where}", status.last_reload_at, self.palette.error)
        seconds = status.last_reload_seconds
        took = f" in {duration(seconds)}" if seconds is not None else ""
        return Cell(f"✓ {when}{took}", status.last_reload_at, self.palette.success)

    def action_show_tasks(self) -> None:
        if self.selected is not None:
            self.post_message(self.TasksRequested(self.selected))
