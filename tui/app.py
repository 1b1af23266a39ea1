"""The dashboard app: its settings, client and model, the help screen and the command palette.

The screen (``llamactl.tui.screen``) lays out the regions and routes the data; the workers
(``llamactl.tui.feed``, ``llamactl.tui.actions``) do all the I/O through ``llamactl.client``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import ClassVar

from textual.app import App, SystemCommand
from textual.binding import Binding, BindingType
from textual.screen import Screen

from llamactl.client import AsyncClient
from llamactl.server.types import TaskRecord
from llamactl.tui.commands import dashboard_commands
from llamactl.tui.config import DashboardConfig
from llamactl.tui.dialogs.base import Dialog
from llamactl.tui.dialogs.confirm import ConfirmDialog
from llamactl.tui.dialogs.help import HelpScreen, Section, bindings_of
from llamactl.tui.dialogs.run_task import RunTaskDialog
from llamactl.tui.events.event_list import EventList
from llamactl.tui.model.dashboard import DashboardModel
from llamactl.tui.model.events import EventBook
from llamactl.tui.screen import DashboardScreen
from llamactl.tui.services.table import ServicesTable
from llamactl.tui.tasks.filter_bar import FilterBar
from llamactl.tui.tasks.sessions import SessionsTable
from llamactl.tui.tasks.table import TasksTable

__all__ = ["DashboardApp"]


class DashboardApp(App[None]):
    """`llamactl tui`: a live view of one deployment of a llamactl server.

    Example::

        DashboardApp(DashboardConfig(server="http://127.0.0.1:4501", deployment="demo")).run()

    Args:
        config: where the server is, which deployment, and the caps on what is kept.
        clock: the wall clock for ages and durations (a fixed one makes screenshots repeatable).
        client: the client to use (default: one for ``config.server``); the app closes it.
    """

    TITLE = "llamactl"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", id="app.quit"),
        Binding("question_mark", "help", "Keys", key_display="?", id="app.help"),
    ]

    def __init__(
        self,
        config: DashboardConfig | None = None,
        *,
        clock: Callable[[], float] = time.time,
        client: AsyncClient | None = None,
    ) -> None:
        super().__init__()
        self.config = config or DashboardConfig()
        self.client = client or AsyncClient(self.config.server, token=self.config.token)
        self.model = DashboardModel(
            max_tasks=self.config.max_tasks, max_sessions=self.config.max_sessions, clock=clock
        )
        self.shown_task: str | None = None
        """The task in the events region (the one the task actions act on)."""
        self.events_book: EventBook | None = None
        self.task_record: TaskRecord | None = None
        """The full record of the task on show, once finished (its result)."""

    def get_default_screen(self) -> Screen[None]:
        return DashboardScreen()

    def on_mount(self) -> None:
        if self.config.theme:
            self.theme = self.config.theme
        # One help screen, built once: each new screen's widgets stay in Textual's style caches
        # for a while, so building it on every ? would grow memory for nothing.
        self.install_screen(HelpScreen(help_sections()), name="help")

    async def on_unmount(self) -> None:
        await self.client.aclose()

    def action_help(self) -> None:
        """Every key, by region."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen("help")

    def get_system_commands(self, screen: Screen[object]) -> Iterable[SystemCommand]:
        if isinstance(screen, DashboardScreen):
            yield from dashboard_commands(screen)
        yield SystemCommand("Keys", "Every key of the dashboard (?)", self.action_help)
        yield from super().get_system_commands(screen)


def help_sections() -> list[Section]:
    """The help screen's sections, from the widgets' own bindings (so it cannot go stale)."""
    palette = Binding("ctrl+p", "command_palette", "Command palette: every action, and the theme")
    return [
        ("Everywhere", [*bindings_of(DashboardApp), palette]),
        ("Dashboard", bindings_of(DashboardScreen)),
        ("Services", bindings_of(ServicesTable)),
        ("Sessions", bindings_of(SessionsTable)),
        ("Tasks", bindings_of(TasksTable)),
        ("Task filter", bindings_of(FilterBar)),
        ("Events", bindings_of(EventList)),
        ("Dialogs", [*bindings_of(Dialog), *bindings_of(ConfirmDialog), *bindings_of(RunTaskDialog)]),
    ]
