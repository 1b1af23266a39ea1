"""The dashboard's screen: lays the regions out and redraws them (the message handlers are in
``routing``, the actions in ``user_actions``).

Layout: the header (stats, and a banner while disconnected or while the server cannot reach the
deployment's queue) on top; below it the services and the sessions/tasks on the left, the events
of the task on show and the state tree (tabs) on the right. Below 150 columns the right side goes
under the left one.
"""

from __future__ import annotations

import time
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.events import Resize
from textual.timer import Timer
from textual.widgets import TabbedContent, TabPane

from llamactl.tui.actions import Actions
from llamactl.tui.events.event_list import EventList
from llamactl.tui.events.panel import EventsPanel
from llamactl.tui.feed import Feed
from llamactl.tui.header.banner import ConnectionBanner
from llamactl.tui.header.outage import OutageBanner
from llamactl.tui.header.stats import StatsBar
from llamactl.tui.key_bar import KeyBar
from llamactl.tui.model.dashboard import Delta
from llamactl.tui.palette import Palette
from llamactl.tui.routing import MessageRouting
from llamactl.tui.services.table import ServicesTable
from llamactl.tui.state.tree import StateTree
from llamactl.tui.tasks.region import TasksRegion
from llamactl.tui.tasks.table import TasksTable

__all__ = ["NARROW", "DashboardScreen"]

NARROW = 150
"""Below this many columns the events and state go under the tasks instead of beside them."""
ACTIVE_TICK = 1.0
IDLE_TICK = 15.0
REDRAW_EVERY = 0.5
"""Seconds between two redraws while changes keep coming (a lone change is shown at once)."""


class DashboardScreen(MessageRouting):
    """The one screen of the dashboard."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run_task", "Run task", id="dashboard.run"),
        Binding("a", "answer", "Answer", id="dashboard.answer"),
        Binding("c", "cancel_task", "Cancel task", id="dashboard.cancel"),
        Binding("w", "where_task", "Where", show=False, id="dashboard.where"),
        Binding("y", "copy_task_id", "Copy id", id="dashboard.copy"),
        Binding("o", "open_task", "Open task", id="dashboard.open"),
        Binding("n", "create_session", "New session", id="dashboard.new_session"),
        Binding("d", "switch_deployment", "Deployment", id="dashboard.deployment"),
        Binding("z", "zoom", "Zoom", id="dashboard.zoom"),
        Binding("ctrl+r", "retry_now", "Reconnect", id="dashboard.reconnect"),
        Binding("1", "focus_region('services')", "Services", show=False, id="dashboard.services"),
        Binding("2", "focus_region('sessions')", "Sessions", show=False, id="dashboard.sessions"),
        Binding("3", "focus_region('tasks')", "Tasks", show=False, id="dashboard.tasks"),
        Binding("4", "focus_region('events')", "Events", show=False, id="dashboard.events"),
        Binding("5", "focus_region('state')", "State", show=False, id="dashboard.state"),
    ]

    DEFAULT_CSS = """
    DashboardScreen { layout: vertical; }
    DashboardScreen #main { layout: horizontal; height: 1fr; }
    DashboardScreen #left { width: 3fr; height: 1fr; }
    DashboardScreen #right { width: 2fr; height: 1fr; border: round $primary 50%; }
    DashboardScreen #right:focus-within { border: round $primary; }
    DashboardScreen #right TabPane { padding: 0; }
    DashboardScreen #main.-stale { opacity: 70%; }

    /* Narrow terminals (80x24 and up): one column, borders only on top, one-line tabs. */
    DashboardScreen.-narrow #main { layout: vertical; }
    DashboardScreen.-narrow #left { width: 1fr; }
    DashboardScreen.-narrow #right { width: 1fr; }
    DashboardScreen.-narrow #services { max-height: 5; scrollbar-size-horizontal: 0; }
    DashboardScreen.-narrow #services, DashboardScreen.-narrow #tasks-region,
    DashboardScreen.-narrow #right {
        border: none; border-top: round $primary 50%;
    }
    DashboardScreen.-narrow #services:focus, DashboardScreen.-narrow #tasks-region:focus-within,
    DashboardScreen.-narrow #right:focus-within {
        border: none; border-top: round $primary;
    }
    DashboardScreen.-narrow #right Underline { display: none; }
    DashboardScreen.-narrow #right Tabs { height: 1; }
    """

    def __init__(self) -> None:
        super().__init__()
        self._tick_timer: Timer | None = None
        self._availability: tuple[bool | None, ...] = ()
        self._pending: Delta | None = None
        self._redraw_timer: Timer | None = None
        self._last_redraw = 0.0

    def compose(self) -> ComposeResult:
        app = self.dashboard
        yield StatsBar(app.model, id="stats")
        yield ConnectionBanner(app.model.now, id="banner")
        yield OutageBanner(id="outage")
        with Container(id="main"):
            with Vertical(id="left"):
                yield ServicesTable(app.model, id="services")
                yield TasksRegion(app.model, app.config.max_rows, id="tasks-region")
            with TabbedContent(id="right"):
                with TabPane("Events", id="events-tab"):
                    yield EventsPanel(id="events")
                with TabPane("State", id="state-tab"):
                    yield StateTree(app.model, app.config.tree_sessions, id="state")
        yield KeyBar()
        yield Feed(app.client, app.config)
        yield Actions(app.client)

    def on_mount(self) -> None:
        app = self.dashboard
        self.apply_palette()
        app.theme_changed_signal.subscribe(self, lambda _: self.apply_palette())
        self.query_one(StatsBar).show_connection(app.client.base_url, app.config.deployment, "connecting")
        self.query_one(StatsBar).show_counts()
        self.query_one(TasksTable).focus()
        self.feed.follow(app.config.deployment)
        self._schedule_tick()

    def on_resize(self, event: Resize) -> None:
        narrow = event.size.width < NARROW
        self.set_class(narrow, "-narrow")
        self.query_one(StatsBar).compact = narrow

    def apply_palette(self) -> None:
        palette = Palette.of(self.app)
        for widget in (
            self.query_one(TasksTable),
            self.query_one(ServicesTable),
            self.query_one(StateTree),
            self.query_one(StatsBar),
            self.query_one(EventList),
            self.events_panel.header,
        ):
            widget.palette = palette
        self.redraw_all()

    # --- redrawing --------------------------------------------------------------------------------------

    def redraw_all(self) -> None:
        self.redraw(Delta(reset=True))

    def redraw(self, delta: Delta) -> None:
        """Redraw what ``delta`` says changed (everything when it is a reset): at once when the
        last redraw is older than ``REDRAW_EVERY``, else together with what changes meanwhile."""
        self._pending = delta if self._pending is None else self._pending.merge(delta)
        if self._redraw_timer is not None:
            return
        wait = REDRAW_EVERY - (time.monotonic() - self._last_redraw)
        if wait <= 0:
            self._redraw_pending()
        else:
            self._redraw_timer = self.set_timer(wait, self._redraw_pending)

    def _redraw_pending(self) -> None:
        self._redraw_timer = None
        delta, self._pending = self._pending, None
        self._last_redraw = time.monotonic()
        if delta is not None:
            self._redraw_now(delta)

    def _redraw_now(self, delta: Delta) -> None:
        app = self.dashboard
        now = app.model.now()
        stats = self.query_one(StatsBar)
        if delta.reset or delta.outage:
            self.query_one(OutageBanner).show(list(app.model.outages.values()))
        if delta.reset or delta.counts:
            stats.show_counts()
        if delta.reset or delta.tasks or delta.sessions:
            self.tasks_region.redraw(now, sessions=delta.reset or bool(delta.sessions))
            stats.show_throughput()
        counted_here = bool(delta.tasks) and not app.model.has_service_counts
        if delta.reset or delta.services or delta.counts or counted_here:
            self.query_one(ServicesTable).redraw()
        self.redraw_state_tree()
        if delta.reset or (app.shown_task is not None and app.shown_task in delta.tasks):
            self.redraw_task_header()
        self._schedule_tick()

    def redraw_state_tree(self) -> None:
        """Redraw the state tree, when it is on show (a tab switch redraws it)."""
        if self.query_one(TabbedContent).active == "state-tab":
            self.query_one(StateTree).redraw(self.feed.deployment, self.tasks_region.sessions.selected)

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        if event.pane.id == "state-tab":
            self.query_one(StateTree).redraw(self.feed.deployment, self.tasks_region.sessions.selected)

    def redraw_task_header(self) -> None:
        app = self.dashboard
        row = app.model.tasks.get(app.shown_task) if app.shown_task else None
        self.events_panel.header.show_task(row, app.task_record, app.events_book, app.model.now())
        book = app.events_book
        right = self.query_one("#right")
        if book is None:
            right.border_subtitle = ""
        else:
            state = "complete" if book.ended else ("paused" if self._events_paused else "live")
            dropped = f" · {book.dropped} older not kept" if book.dropped else ""
            right.border_subtitle = f"{len(book)} events · {state}{dropped}"
        self._refresh_actions()

    def _refresh_actions(self) -> None:
        """Update which actions the footer shows as available, when that changed (the footer
        rebuilds itself on every refresh, which is too costly to do for every event)."""
        availability = tuple(
            self.check_action(action, ())
            for action in ("answer", "cancel_task", "where_task", "copy_task_id", "run_task", "retry_now")
        )
        if availability != self._availability:
            self._availability = availability
            self.refresh_bindings()

    def _schedule_tick(self) -> None:
        """Keep ages, durations and the sparkline moving: every second while anything is active,
        every few seconds otherwise. A local redraw only: it sends nothing to the server."""
        if self._tick_timer is not None:
            return
        model = self.dashboard.model
        now = model.now()
        active = model.throughput.active(now) or any(not t.status.is_final for t in model.tasks)
        self._tick_timer = self.set_timer(ACTIVE_TICK if active else IDLE_TICK, self._tick)

    def _tick(self) -> None:
        self._tick_timer = None
        if time.monotonic() - self._last_redraw < ACTIVE_TICK:  # the feed keeps it fresh already
            self._schedule_tick()
            return
        now = self.dashboard.model.now()
        self.tasks_region.redraw(now, sessions=False)
        self.query_one(StatsBar).show_throughput()
        self.query_one(ServicesTable).redraw()
        if self.dashboard.shown_task is not None:
            self.redraw_task_header()
        self._schedule_tick()
