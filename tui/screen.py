"""The dashboard's screen: lays the regions out and routes what the workers read into the model and views.

Layout: the header (stats, and the banner while disconnected) on top; below it the services and the
sessions/tasks on the left, the events of the task on show and the state tree (tabs) on the right.
Below 150 columns the right side goes under the left one.
"""

from __future__ import annotations

import time
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Container, Vertical
from textual.events import Resize
from textual.timer import Timer
from textual.widgets import Footer, TabbedContent, TabPane

from llamactl.server.types import TaskRecord
from llamactl.tui.actions import Actions
from llamactl.tui.events.event_list import EventList
from llamactl.tui.events.panel import EventsPanel
from llamactl.tui.feed import Feed
from llamactl.tui.header.banner import ConnectionBanner
from llamactl.tui.header.stats import StatsBar
from llamactl.tui.messages import (
    ActionFailed,
    Connected,
    ContextSizesLoaded,
    DeploymentsListed,
    Disconnected,
    FeedChanges,
    ServicesLoaded,
    SessionCreated,
    SessionDeleted,
    SessionPicked,
    SnapshotLoaded,
    StateLoaded,
    TaskCancelled,
    TaskCreated,
    TaskEvents,
    TaskEventsEnded,
    TaskEventsInterrupted,
    TaskLoaded,
    TaskPicked,
)
from llamactl.tui.model.dashboard import Delta
from llamactl.tui.model.events import EventBook
from llamactl.tui.palette import Palette
from llamactl.tui.services.table import ServicesTable
from llamactl.tui.state.tree import StateTree
from llamactl.tui.tasks.region import TasksRegion
from llamactl.tui.tasks.sessions import ALL, SessionsTable
from llamactl.tui.tasks.table import TasksTable
from llamactl.tui.user_actions import UserActions

__all__ = ["NARROW", "DashboardScreen"]

NARROW = 150
"""Below this many columns the events and state go under the tasks instead of beside them."""
PICK_DELAY = 0.15
"""Seconds the cursor rests on a task before its events are streamed (skimming costs nothing)."""
ACTIVE_TICK = 1.0
IDLE_TICK = 15.0
REDRAW_EVERY = 0.5
"""Seconds between two redraws while changes keep coming (a lone change is shown at once)."""


class DashboardScreen(UserActions):
    """The one screen of the dashboard."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "run_task", "Run task", id="dashboard.run"),
        Binding("a", "answer", "Answer", id="dashboard.answer"),
        Binding("c", "cancel_task", "Cancel task", id="dashboard.cancel"),
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
    DashboardScreen.-narrow #services { max-height: 5; }
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
        self._pick_timer: Timer | None = None
        self._tick_timer: Timer | None = None
        self._events_paused = False
        self._availability: tuple[bool | None, ...] = ()
        self._pending: Delta | None = None
        self._redraw_timer: Timer | None = None
        self._last_redraw = 0.0

    def compose(self) -> ComposeResult:
        app = self.dashboard
        yield StatsBar(app.model, id="stats")
        yield ConnectionBanner(app.model.now, id="banner")
        with Container(id="main"):
            with Vertical(id="left"):
                yield ServicesTable(app.model, id="services")
                yield TasksRegion(app.model, app.config.max_rows, id="tasks-region")
            with TabbedContent(id="right"):
                with TabPane("Events", id="events-tab"):
                    yield EventsPanel(id="events")
                with TabPane("State", id="state-tab"):
                    yield StateTree(app.model, app.config.tree_sessions, id="state")
        yield Footer()
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
            for action in ("answer", "cancel_task", "copy_task_id", "run_task", "retry_now")
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

    # --- what the feed reads ---------------------------------------------------------------------------

    def on_connected(self, message: Connected) -> None:
        app = self.dashboard
        self.actions.deployment = message.deployment
        self.query_one(ConnectionBanner).connected()
        self.query_one("#main").remove_class("-stale")
        self.query_one(StatsBar).show_connection(message.url, message.deployment, "live")
        if message.reconnected:
            self.notify(
                f"Reconnected to {message.url}: the views are live again.", title="Connected", markup=False
            )
        book = app.events_book
        if self._events_paused and book is not None and not book.ended:
            self._events_paused = False
            self.feed.follow_events(book.task_id, book.next_seq)
            self.redraw_task_header()
        self._refresh_actions()

    def on_disconnected(self, message: Disconnected) -> None:
        banner = self.query_one(ConnectionBanner)
        if not banner.shown:
            self.notify(
                f"Lost the connection to {message.url}: {message.reason}. Retrying; the data shown is kept.",
                title="Disconnected",
                severity="warning",
                markup=False,
            )
        banner.disconnected(message.url, message.reason, message.retry_in, message.attempt)
        self.query_one("#main").add_class("-stale")
        self.query_one(StatsBar).show_connection(message.url, self.feed.deployment, "disconnected")
        self._refresh_actions()

    def on_snapshot_loaded(self, message: SnapshotLoaded) -> None:
        app = self.dashboard
        if message.reset:
            self.notify("The server's state was reset: showing it afresh.", severity="warning", markup=False)
        delta = app.model.load_snapshot(message.state, message.tasks, message.sessions, app.model.now())
        if app.shown_task is not None:
            app.model.tasks.pinned = {app.shown_task}
        self.redraw(delta)
        self.feed.contexts_changed(set(self.query_one(StateTree).shown_session_ids(None)))

    def on_state_loaded(self, message: StateLoaded) -> None:
        self.redraw(self.dashboard.model.load_state(message.state))

    def on_services_loaded(self, message: ServicesLoaded) -> None:
        changed = self.dashboard.model.services.load(message.services)
        self.redraw(Delta(services=changed or {"*"}))

    def on_feed_changes(self, message: FeedChanges) -> None:
        app = self.dashboard
        delta = app.model.apply(message.changes)
        if delta.tasks:
            self.feed.changes_seen()
        if delta.services_stale:
            self.feed.refresh_services()
        if delta.finished_sessions:
            shown = set(self.query_one(StateTree).shown_session_ids(self.tasks_region.sessions.selected))
            if shown & delta.finished_sessions:
                self.feed.contexts_changed(shown & delta.finished_sessions)
        if delta:
            self.redraw(delta)

    def on_context_sizes_loaded(self, message: ContextSizesLoaded) -> None:
        changed = self.dashboard.model.sessions.set_context_sizes(message.sizes)
        if changed:
            self.redraw(Delta(sessions=changed))

    # --- the task on show ---------------------------------------------------------------------------------

    def show_task(self, task_id: str, *, focus: bool = False) -> None:
        """Put ``task_id`` on show in the events region and stream its events."""
        if self._pick_timer is not None:  # an explicit choice wins over a cursor still settling
            self._pick_timer.stop()
            self._pick_timer = None
        app = self.dashboard
        if app.shown_task != task_id:
            app.shown_task = task_id
            app.model.tasks.pinned = {task_id}
            app.events_book = EventBook(task_id, app.config.max_events)
            app.task_record = None
            self._events_paused = False
            self.events_panel.start(app.events_book)
            self.feed.follow_events(task_id, 0)
            self.redraw_task_header()
        self.query_one(TabbedContent).active = "events-tab"
        if focus:
            self.query_one(EventList).focus()

    @on(TaskPicked)
    def _task_picked(self, message: TaskPicked) -> None:
        if self._pick_timer is not None:
            self._pick_timer.stop()
            self._pick_timer = None
        if message.open:
            self.show_task(message.task_id, focus=True)
        elif message.task_id != self.dashboard.shown_task:
            self._pick_timer = self.set_timer(PICK_DELAY, lambda: self.show_task(message.task_id))

    def on_task_events(self, message: TaskEvents) -> None:
        app = self.dashboard
        book = app.events_book
        if book is None or book.task_id != message.task_id:
            return
        fresh, dropped = book.add(message.events)
        if fresh or dropped:
            self.events_panel.add(fresh, dropped)
            self.redraw_task_header()

    def on_task_events_ended(self, message: TaskEventsEnded) -> None:
        app = self.dashboard
        book = app.events_book
        if book is None or book.task_id != message.task_id:
            return
        book.end(message.record.status.value if message.record else None)
        if message.record is not None:
            self._take_record(message.record)
        self.redraw_task_header()

    def on_task_events_interrupted(self, message: TaskEventsInterrupted) -> None:
        book = self.dashboard.events_book
        if book is None or book.task_id != message.task_id:
            return
        if message.resumable:
            self._events_paused = True  # resumed from book.next_seq once the feed is back
            if self.feed.connected:
                self._events_paused = False
                self.feed.follow_events(book.task_id, book.next_seq)
        else:
            self.notify(
                f"The events of task {message.task_id} stopped: {message.reason}",
                severity="error",
                markup=False,
            )
        self.redraw_task_header()

    def _take_record(self, record: TaskRecord) -> None:
        app = self.dashboard
        if record.task_id == app.shown_task:
            app.task_record = record
        changed = app.model.tasks.load([record])
        changed |= app.model.sessions.add_task(record.session_id, record.task_id, record.created_at)
        self.redraw(Delta(tasks={record.task_id} | changed, sessions={record.session_id}))

    def on_task_loaded(self, message: TaskLoaded) -> None:
        self._take_record(message.record)
        if message.open:
            self.show_task(message.record.task_id, focus=True)
            self.reveal_task(message.record.task_id)

    def reveal_task(self, task_id: str) -> None:
        """Move the tasks table's cursor to ``task_id`` (showing all sessions if it is elsewhere)."""
        region = self.tasks_region
        if not region.table.move_to(task_id):
            region.sessions.move_to(ALL)
            region.redraw(self.dashboard.model.now(), sessions=False)
            region.table.move_to(task_id)

    # --- outcomes of the user's actions ---------------------------------------------------------------------

    def on_task_created(self, message: TaskCreated) -> None:
        record = message.record
        self._take_record(record)
        self.show_task(record.task_id)
        self.reveal_task(record.task_id)
        self.notify(
            f"Task {record.task_id} queued on {record.service_id}.", title="Task created", markup=False
        )

    def on_task_cancelled(self, message: TaskCancelled) -> None:
        self._take_record(message.record)
        state = message.record.status.value
        detail = "cancelled" if state == "cancelled" else "asked to stop (its worker is told)"
        self.notify(f"Task {message.record.task_id} {detail}.", title="Cancel", markup=False)

    def on_session_created(self, message: SessionCreated) -> None:
        app = self.dashboard
        session_id = message.session.session_id
        changed = app.model.sessions.created(session_id, app.model.now())
        self.redraw(Delta(sessions=changed | {session_id}))
        self.tasks_region.sessions.move_to(session_id)
        self.notify(
            f"Session {session_id} created: tasks run with r now go to it.", title="Session", markup=False
        )

    def on_session_deleted(self, message: SessionDeleted) -> None:
        changed = self.dashboard.model.sessions.deleted(message.session_id)
        self.redraw(Delta(sessions=changed | {message.session_id}))
        self.notify(f"Session {message.session_id} deleted.", title="Session", markup=False)

    def on_session_picked(self, message: SessionPicked) -> None:
        app = self.dashboard
        app.model.sessions.pinned = {message.session_id} if message.session_id else set()
        self.redraw_state_tree()
        if message.session_id is not None:
            self.feed.contexts_changed({message.session_id})

    def on_deployments_listed(self, message: DeploymentsListed) -> None:
        self.pick_deployment(message.names, message.current)

    def on_action_failed(self, message: ActionFailed) -> None:
        book = self.dashboard.events_book
        seq = message.details.get("seq")
        if book is not None and isinstance(seq, int) and message.details.get("task_id") == book.task_id:
            book.answered.discard(seq)
            self.redraw_task_header()
        self.notify(message.message, title="Failed", severity="error", timeout=8, markup=False)

    def on_services_table_tasks_requested(self, message: ServicesTable.TasksRequested) -> None:
        region = self.tasks_region
        region.open_filter()
        from llamactl.tui.tasks.filter_bar import FilterBar  # noqa: PLC0415

        region.query_one(FilterBar).value = f"service:{message.service_id}"

    def on_sessions_table_create_requested(self, message: SessionsTable.CreateRequested) -> None:
        self.action_create_session()

    def on_sessions_table_delete_requested(self, message: SessionsTable.DeleteRequested) -> None:
        self.delete_session(message.session_id)
