"""How the dashboard screen answers its workers and widgets: what the feed read goes into the model and
the views, the task on show follows the cursor, and the outcomes of the user's actions are shown."""

from __future__ import annotations

from textual import on
from textual.timer import Timer
from textual.widgets import TabbedContent

from llamactl.server.types import TaskRecord
from llamactl.tui.dialogs.where import WhereScreen
from llamactl.tui.events.event_list import EventList
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
    TaskWhereAnswered,
)
from llamactl.tui.model.dashboard import Delta
from llamactl.tui.model.events import EventBook
from llamactl.tui.services.table import ServicesTable
from llamactl.tui.state.tree import StateTree
from llamactl.tui.tasks.filter_bar import FilterBar
from llamactl.tui.tasks.sessions import ALL, SessionsTable
from llamactl.tui.user_actions import UserActions

__all__ = ["PICK_DELAY", "RESUME_DELAY", "MessageRouting"]

PICK_DELAY = 0.15
"""Seconds the cursor rests on a task before its events are streamed (skimming costs nothing)."""
RESUME_DELAY = 1.0
"""Seconds before an event stream that dropped while the feed stayed up is opened again."""


class MessageRouting(UserActions):
    """The message handlers of :class:`~llamactl.tui.screen.DashboardScreen` (which draws)."""

    def __init__(self) -> None:
        super().__init__()
        self._pick_timer: Timer | None = None
        self._events_paused = False

    def redraw(self, delta: Delta) -> None:
        raise NotImplementedError

    def redraw_state_tree(self) -> None:
        raise NotImplementedError

    def _refresh_actions(self) -> None:
        raise NotImplementedError

    # --- what the feed reads ---------------------------------------------------------------------------

    def on_connected(self, message: Connected) -> None:
        app = self.dashboard
        self.actions.deployment = message.deployment
        banner = self.query_one(ConnectionBanner)
        again = banner.ever_connected
        banner.connected()
        self.query_one("#main").remove_class("-stale")
        self.query_one(StatsBar).show_connection(message.url, message.deployment, "live")
        if message.reconnected:
            said = (
                "Reconnected to {}: the views are live again."
                if again
                else "Connected to {}: it answers now."
            )
            self.notify(said.format(message.url), title="Connected", markup=False)
        book = app.events_book
        if self._events_paused and book is not None and not book.ended:
            self._events_paused = False
            self.feed.follow_events(book.task_id, book.next_seq)
            self.redraw_task_header()
        self._refresh_actions()

    def on_disconnected(self, message: Disconnected) -> None:
        banner = self.query_one(ConnectionBanner)
        if not banner.shown:
            if message.gone:
                said = f"{message.url}: {message.reason}. The data shown is kept."
            elif banner.ever_connected:
                said = (
                    f"Lost the connection to {message.url}: {message.reason}. Retrying; the data shown "
                    "is kept."
                )
            else:
                said = f"Cannot reach {message.url}: {message.reason}. Retrying until it answers."
            title = "Deployment gone" if message.gone else "Disconnected"
            self.notify(said, title=title, severity="warning", markup=False)
        banner.disconnected(message.url, message.reason, message.retry_in, message.attempt, gone=message.gone)
        self.query_one("#main").add_class("-stale")
        state = "gone" if message.gone else "disconnected"
        self.query_one(StatsBar).show_connection(message.url, self.feed.deployment, state)
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
            # Resumed from book.next_seq when the feed says the server is back, or in a moment if
            # the feed never lost it (only this stream dropped).
            self._events_paused = True
            self.set_timer(RESUME_DELAY, lambda: self._resume_events(book))
        else:
            self.notify(
                f"The events of task {message.task_id} stopped: {message.reason}",
                severity="error",
                markup=False,
            )
        self.redraw_task_header()

    def _resume_events(self, book: EventBook) -> None:
        if (
            self._events_paused
            and self.feed.connected
            and self.dashboard.events_book is book
            and not book.ended
        ):
            self._events_paused = False
            self.feed.follow_events(book.task_id, book.next_seq)
            self.redraw_task_header()

    def _take_record(self, record: TaskRecord) -> None:
        app = self.dashboard
        if record.task_id == app.shown_task:
            app.task_record = record
        changed = app.model.tasks.load([record])
        if not record.own_session:  # one made for the task alone has no record: no row
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

    def on_task_where_answered(self, message: TaskWhereAnswered) -> None:
        self.app.push_screen(WhereScreen(message.answer))

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
        region.query_one(FilterBar).value = f"service:{message.service_id}"

    def on_sessions_table_create_requested(self, message: SessionsTable.CreateRequested) -> None:
        self.action_create_session()

    def on_sessions_table_delete_requested(self, message: SessionsTable.DeleteRequested) -> None:
        self.delete_session(message.session_id)
