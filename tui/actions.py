"""What the user asks the server to do, in workers: run, cancel, answer and locate tasks, create and delete
sessions, list deployments, open a task by id. Each posts its outcome (or ``ActionFailed`` with a
message that says what went wrong and what to do) to the app."""

from __future__ import annotations

from typing import Any

import httpx
from textual import work
from textual.message import Message
from textual.widget import Widget

from llamactl.client import (
    AsyncClient,
    BadRequest,
    ClientError,
    Conflict,
    NotFound,
    ServerUnreachable,
)
from llamactl.tui.dialogs.where import where_line
from llamactl.tui.feed import describe_error
from llamactl.tui.messages import (
    ActionFailed,
    DeploymentsListed,
    SessionCreated,
    SessionDeleted,
    TaskCancelled,
    TaskCreated,
    TaskLoaded,
    TaskWhereAnswered,
)
from llamactl.tui.model.format import short_id

__all__ = ["Actions", "failure_message"]


def failure_message(action: str, exc: BaseException) -> str:
    """``exc`` as one line that says what went wrong with ``action`` and what to do about it."""
    if isinstance(exc, ServerUnreachable):
        return f"could not {action}: the server is not reachable; it is retried when the server is back"
    if isinstance(exc, Conflict):
        return f"could not {action}: {exc.detail}"
    if isinstance(exc, NotFound):
        return f"could not {action}: {exc.detail}"
    if isinstance(exc, BadRequest):
        return f"could not {action}: {exc.detail}: fix the input and try again"
    return f"could not {action}: {describe_error(exc)}"


class Actions(Widget):
    """Non-visual: runs the user's requests against the deployment on show."""

    DEFAULT_CSS = "Actions { display: none; }"

    def __init__(self, client: AsyncClient) -> None:
        super().__init__()
        self.client = client
        self.deployment: str | None = None

    def _send(self, message: Message) -> None:
        self.post_message(message)

    def _done(self, deployment: str, message: Message, done: str) -> None:
        """Post ``message``, the outcome of an action on ``deployment``, unless the user switched to
        another deployment meanwhile: its views must not take it, so only ``done`` is said."""
        if deployment == self.deployment:
            self._send(message)
        else:
            self.notify(f"{done} on deployment '{deployment}', no longer on show.", markup=False)

    def _fail(self, action: str, exc: BaseException, **details: Any) -> None:
        self._send(ActionFailed(action, failure_message(action, exc), details))

    @work(group="actions")
    async def run_task(self, service: str | None, task_input: dict[str, Any], session_id: str | None) -> None:
        """Create a task (answers at once); its events then stream into the events view."""
        deployment = self.deployment
        if deployment is None:
            return
        tasks = self.client.deployment(deployment).tasks
        try:
            created = await tasks.create(task_input, service=service, session_id=session_id)
            record = await tasks.get(created.task_id)
        except (ClientError, httpx.TransportError) as exc:
            self._fail("run the task", exc)
            return
        self._done(deployment, TaskCreated(record), f"Task {record.task_id} queued on {record.service_id}")

    @work(group="actions")
    async def cancel_task(self, task_id: str) -> None:
        deployment = self.deployment
        if deployment is None:
            return
        try:
            record = await self.client.deployment(deployment).tasks.cancel(task_id)
        except (ClientError, httpx.TransportError) as exc:
            self._fail(f"cancel task {short_id(task_id)}", exc)
            return
        self._done(deployment, TaskCancelled(record), f"Task {task_id} {record.status.value}")

    @work(group="actions")
    async def where_task(self, task_id: str) -> None:
        """Ask the worker running the task where its code is; its stacks come as an event."""
        deployment = self.deployment
        if deployment is None:
            return
        try:
            answer = await self.client.deployment(deployment).tasks.where(task_id)
        except (ClientError, httpx.TransportError) as exc:
            self._fail(f"see where task {short_id(task_id)} is", exc)
            return
        self._done(deployment, TaskWhereAnswered(answer), where_line(answer))

    @work(group="actions")
    async def answer(self, task_id: str, response: str, service_id: str | None, seq: int) -> None:
        """Send ``response`` as the ``HumanResponseEvent`` the task's workflow waits for."""
        if self.deployment is None:
            return
        try:
            await self.client.deployment(self.deployment).tasks.send_event(
                task_id, {"response": response}, service_id=service_id
            )
        except (ClientError, httpx.TransportError) as exc:
            self._fail(f"answer task {short_id(task_id)}", exc, task_id=task_id, seq=seq)

    @work(group="actions")
    async def create_session(self) -> None:
        deployment = self.deployment
        if deployment is None:
            return
        try:
            session = await self.client.deployment(deployment).sessions.create()
        except (ClientError, httpx.TransportError) as exc:
            self._fail("create a session", exc)
            return
        self._done(deployment, SessionCreated(session), f"Session {session.session_id} created")

    @work(group="actions")
    async def delete_session(self, session_id: str) -> None:
        deployment = self.deployment
        if deployment is None:
            return
        try:
            await self.client.deployment(deployment).sessions.delete(session_id)
        except (ClientError, httpx.TransportError) as exc:
            self._fail(f"delete session {short_id(session_id)}", exc)
            return
        self._done(deployment, SessionDeleted(session_id), f"Session {session_id} deleted")

    @work(exclusive=True, group="deployments")
    async def list_deployments(self) -> None:
        try:
            names = sorted(d.name for d in await self.client.deployments.list())
        except (ClientError, httpx.TransportError) as exc:
            self._fail("list the deployments", exc)
            return
        self._send(DeploymentsListed(names, self.deployment))

    @work(group="actions")
    async def open_task(self, task_id: str) -> None:
        deployment = self.deployment
        if deployment is None:
            return
        try:
            record = await self.client.deployment(deployment).tasks.get(task_id)
        except (ClientError, httpx.TransportError) as exc:
            self._fail(f"open task {task_id}", exc)
            return
        self._done(deployment, TaskLoaded(record, open=True), f"Task {task_id} found")
