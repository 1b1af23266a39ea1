"""The dashboard's actions (keys, and the command palette): the dialogs they open and what they ask the
server to do, through the ``Actions`` workers. Destructive ones ask for confirmation first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.screen import Screen
from textual.widgets import TabbedContent, Tree

from llamactl.client.questions import question_of
from llamactl.server.types import TaskStatus
from llamactl.tui.actions import Actions
from llamactl.tui.dialogs.confirm import ConfirmDialog
from llamactl.tui.dialogs.deployments import DeploymentPicker
from llamactl.tui.dialogs.prompt import AnswerDialog, OpenTaskDialog
from llamactl.tui.dialogs.run_task import RunRequest, RunTaskDialog
from llamactl.tui.events.event_list import EventList
from llamactl.tui.events.panel import EventsPanel
from llamactl.tui.feed import Feed
from llamactl.tui.grid import LiveGrid
from llamactl.tui.model.format import id_matches
from llamactl.tui.model.tasks import TaskRow
from llamactl.tui.services.table import ServicesTable
from llamactl.tui.tasks.region import TasksRegion

if TYPE_CHECKING:
    from llamactl.tui.app import DashboardApp

__all__ = ["UserActions"]

_REGIONS = {
    "services": "#services",
    "sessions": "#sessions",
    "tasks": "#tasks",
    "events": "#event-list",
    "state": "#state",
}


class UserActions(Screen[None]):
    """The actions of the dashboard screen; :class:`~llamactl.tui.screen.DashboardScreen` adds the rest."""

    @property
    def dashboard(self) -> DashboardApp:
        from llamactl.tui.app import DashboardApp  # noqa: PLC0415 (the app module imports this one)

        assert isinstance(self.app, DashboardApp)
        return self.app

    @property
    def feed(self) -> Feed:
        return self.query_one(Feed)

    @property
    def actions(self) -> Actions:
        return self.query_one(Actions)

    @property
    def tasks_region(self) -> TasksRegion:
        return self.query_one(TasksRegion)

    @property
    def events_panel(self) -> EventsPanel:
        return self.query_one(EventsPanel)

    def show_task(self, task_id: str, *, focus: bool = False) -> None:
        raise NotImplementedError

    def redraw_task_header(self) -> None:
        raise NotImplementedError

    @property
    def shown_row(self) -> TaskRow | None:
        """The task on show (the one the task actions act on)."""
        shown = self.dashboard.shown_task
        return self.dashboard.model.tasks.get(shown) if shown else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Actions that make no sense right now are shown dimmed in the footer (None) and do nothing."""
        app = self.dashboard
        if action == "answer":
            book = app.events_book
            return True if book is not None and book.waiting_for() is not None else None
        if action in ("cancel_task",):
            row = self.shown_row
            return True if row is not None and not row.status.is_final else None
        if action == "where_task":
            row = self.shown_row
            return True if row is not None and row.status is TaskStatus.RUNNING else None
        if action == "copy_task_id":
            return True if app.shown_task else None
        if action in ("run_task", "create_session", "open_task"):
            return True if self.feed.deployment else None
        if action == "retry_now":
            return True if not self.feed.connected else None
        return True

    # --- tasks -------------------------------------------------------------------------------------

    def action_run_task(self) -> None:
        """Open the run form (the service under the cursor and the session picked come preselected)."""
        model = self.dashboard.model
        service = self.query_one(ServicesTable).selected
        row = self.shown_row
        if service is None and row is not None:
            service = row.service_id
        sessions = [s.session_id for s in model.sessions.newest(20)]
        picked = self.tasks_region.sessions.selected

        def run(request: RunRequest | None) -> None:
            if request is not None:
                self.actions.run_task(request.service, request.input, request.session_id)

        self.app.push_screen(RunTaskDialog(model.services.ids(), service, sessions, picked), run)

    def action_answer(self) -> None:
        """Answer the question the task on show waits on (human in the loop)."""
        app = self.dashboard
        book = app.events_book
        waiting = book.waiting_for() if book is not None else None
        row = self.shown_row
        if book is None or waiting is None:
            self.notify("The task on show does not wait for an answer.", severity="warning", markup=False)
            return

        def send(answer: str | None) -> None:
            if answer is None:
                return
            still = book.waiting_for()
            if still is None or still.seq != waiting.seq:
                # Answered elsewhere meanwhile, or the task ended: a second answer would reach
                # the workflow as the answer to a question it has not asked.
                self.notify(
                    f"Task {book.task_id} no longer waits for this answer: it was not sent.",
                    severity="warning",
                    markup=False,
                )
                return
            book.answered.add(waiting.seq)
            self.actions.answer(book.task_id, answer, row.service_id if row else None, waiting.seq)
            self.notify(f"Answer sent to task {book.task_id}.", title="Answered", markup=False)
            self.redraw_task_header()

        self.app.push_screen(AnswerDialog(question_of(waiting)), send)

    def action_cancel_task(self) -> None:
        row = self.shown_row
        if row is None:
            self.notify(
                "No task on show: pick one in the tasks table first.", severity="warning", markup=False
            )
            return
        if row.status.is_final:
            self.notify(
                f"Task {row.task_id} has already finished ({row.status.value}).",
                severity="warning",
                markup=False,
            )
            return
        task_id = row.task_id

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.actions.cancel_task(task_id)

        self.app.push_screen(
            ConfirmDialog(
                f"Cancel task {task_id}?",
                f"It is {row.status.value} on {row.service_id}. A running task is asked to stop.",
                confirm_label="Cancel task",
            ),
            confirmed,
        )

    def action_where_task(self) -> None:
        """Ask where the running task on show is: its line in a notice, its stacks in its events."""
        row = self.shown_row
        if row is None or row.status is not TaskStatus.RUNNING:
            what = "No task on show" if row is None else f"Task {row.task_id} is {row.status.value}"
            self.notify(
                f"{what}: only a running task's code has a place to show.", severity="warning", markup=False
            )
            return
        self.actions.where_task(row.task_id)

    def action_copy_task_id(self) -> None:
        task_id = self.dashboard.shown_task
        if task_id is None:
            self.notify(
                "No task on show: pick one in the tasks table first.", severity="warning", markup=False
            )
            return
        self.app.copy_to_clipboard(task_id)
        self.notify(f"Copied task id {task_id}.", title="Copied", markup=False)

    def action_open_task(self) -> None:
        def open_it(value: str | None) -> None:
            if value is None:
                return
            known = [t.task_id for t in self.dashboard.model.tasks if id_matches(t.task_id, value)]
            self.actions.open_task(known[0] if len(known) == 1 else value)

        self.app.push_screen(OpenTaskDialog(), open_it)

    # --- sessions ----------------------------------------------------------------------------------

    def action_create_session(self) -> None:
        self.actions.create_session()

    def delete_session(self, session_id: str) -> None:
        row = self.dashboard.model.sessions.get(session_id)
        count = len(row.task_ids) if row else 0

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.actions.delete_session(session_id)

        self.app.push_screen(
            ConfirmDialog(
                f"Delete session {session_id}?",
                f"Its saved Context is deleted; its {count} task(s) keep their records.",
                confirm_label="Delete session",
            ),
            confirmed,
        )

    def action_delete_session(self) -> None:
        picked = self.tasks_region.sessions.selected
        if picked is None:
            self.notify("Pick a session in the sessions list first.", severity="warning", markup=False)
            return
        self.delete_session(picked)

    # --- deployment and connection -----------------------------------------------------------------

    def action_switch_deployment(self) -> None:
        self.actions.list_deployments()

    def pick_deployment(self, names: list[str], current: str | None) -> None:
        def picked(name: str | None) -> None:
            if name is not None and name != self.feed.deployment:
                self.switch_to(name)

        self.app.push_screen(DeploymentPicker(names, current), picked)

    def switch_to(self, deployment: str) -> None:
        """Show another deployment: everything shown so far is dropped."""
        app = self.dashboard
        app.model.reset()
        app.shown_task = None
        app.events_book = None
        app.task_record = None
        self.events_panel.events.reset()
        self.actions.deployment = deployment
        self.feed.follow(deployment)
        self.redraw_task_header()
        self.notify(f"Showing deployment {deployment}.", title="Deployment", markup=False)

    def action_retry_now(self) -> None:
        self.feed.retry_now()

    # --- moving around -------------------------------------------------------------------------------

    def action_focus_region(self, region: str) -> None:
        selector = _REGIONS.get(region)
        if selector is None:
            return
        if region in ("events", "state"):
            self.query_one(TabbedContent).active = f"{region}-tab"
        widget = self.query_one(selector)
        if isinstance(widget, LiveGrid | EventList | Tree):
            widget.focus()

    def action_zoom(self) -> None:
        """Give the focused region the whole screen, or give the others back."""
        if self.maximized is not None:
            self.minimize()
            return
        focused = self.focused
        if focused is not None:
            self.maximize(focused)
