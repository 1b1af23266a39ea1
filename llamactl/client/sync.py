"""The blocking client: `Client`."""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import httpx

from llamactl.client import _calls as calls
from llamactl.client._base import DEFAULT_TIMEOUT, Call, check, client_settings, unreachable
from llamactl.client._streams import (
    IDLE_SECONDS,
    MAX_RECONNECTS,
    Changes,
    Cursor,
    RawTaskEvents,
    TaskEvents,
    backoff,
)
from llamactl.client.errors import StreamBroken
from llamactl.client.models import DeploymentState, Page
from llamactl.server.types import (
    ChangeEvent,
    DeploymentDefinition,
    EventDefinition,
    EventEnvelope,
    ServiceStatus,
    SessionDefinition,
    Status,
    TaskDefinition,
    TaskRecord,
    TaskResult,
    TaskStatus,
)

__all__ = ["Client", "DeploymentClient", "Deployments", "Sessions", "Tasks"]

T = TypeVar("T")


class Client:
    """A blocking client for a llamactl server (one keep-alive connection pool; close it when done).

    Example::

        from llamactl.client import Client

        with Client() as client:  # LLAMACTL_SERVER, else http://127.0.0.1:4501
            client.deployments.create("deployment.yml")
            app = client.deployment("my-app")
            print(app.tasks.run({"message": "hi"}))  # "Message received: hi"

    Args:
        base_url: the server's URL; default ``$LLAMACTL_SERVER``, else ``http://127.0.0.1:4501``.
        token: the bearer token; default ``$LLAMACTL_API_TOKEN`` (needed when the server is bound
            beyond loopback).
        timeout: seconds (or an ``httpx.Timeout``) per request; calls that wait for the server
            (``tasks.run``, ``tasks.result``, deploy, delete) and event streams have no read timeout.
        transport: an httpx transport, for tests.
    """

    def __init__(
        self,
        base_url: str | None = None,
        *,
        token: str | None = None,
        timeout: float | httpx.Timeout | None = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        settings = client_settings(base_url, token, timeout, headers or {})
        self._http = httpx.Client(transport=transport, **settings)
        self.deployments = Deployments(self)

    @property
    def base_url(self) -> str:
        return str(self._http.base_url).rstrip("/")

    def status(self) -> Status:
        """The server's health and its deployments' names.

        Example: ``client.status().deployments`` -> ``["my-app"]``.
        """
        return self._call(calls.status())

    def deployment(self, name: str) -> DeploymentClient:
        """A handle on one deployment (no request is sent): ``client.deployment("my-app").tasks.run()``."""
        return DeploymentClient(self, name)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, call: Call[T]) -> T:
        try:
            response = self._http.request(call.method, call.path, **call.request_kwargs(self._http.timeout))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise unreachable(self._http, exc) from exc
        return call.parse(check(response))

    def _call_page(self, call: Call[list[T]]) -> Page[T]:
        try:
            response = self._http.request(call.method, call.path, **call.request_kwargs(self._http.timeout))
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise unreachable(self._http, exc) from exc
        items = call.parse(check(response))
        return Page(items, response.headers.get(calls.NEXT_CURSOR_HEADER) or None)

    def _stream(
        self, cursor: Cursor[T], follow: bool = True, *, resume: bool = True
    ) -> Generator[T, None, None]:
        failures = 0
        timeout = httpx.Timeout(self._http.timeout.connect, read=None if follow else IDLE_SECONDS)
        while True:
            params, headers = cursor.request()
            received = False
            try:
                with self._http.stream(
                    "GET", cursor.path, params=params, headers=headers, timeout=timeout
                ) as response:
                    if not response.is_success:
                        response.read()
                        check(response)
                    for line in response.iter_lines():
                        item = cursor.feed(line)
                        if item is not None:
                            received, failures = True, 0
                            yield item
                        if cursor.done:
                            return
                if cursor.ends_on_close:
                    return
                problem: Exception = StreamBroken(f"{cursor.path}: the server ended the stream")
            except httpx.ReadTimeout:
                if not follow:
                    return
                raise
            except httpx.TransportError as exc:
                if (
                    not cursor.resumed
                    and not received
                    and isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                ):
                    raise unreachable(self._http, exc) from exc
                if not resume:
                    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                        raise unreachable(self._http, exc) from exc
                    raise StreamBroken(f"{cursor.path}: the connection dropped: {exc}") from exc
                problem = exc
            if not resume:
                raise problem
            failures = 0 if received else failures + 1
            if failures > MAX_RECONNECTS:
                raise StreamBroken(f"{cursor.path}: stream lost and not resumable: {problem}") from problem
            cursor.resumed = True
            time.sleep(backoff(max(failures, 1)))


class Deployments:
    """``client.deployments``: list, inspect, create and delete deployments."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self) -> list[DeploymentDefinition]:
        """Every running deployment: ``[d.name for d in client.deployments.list()]``."""
        return self._client._call(calls.deployments_list())

    def get(self, name: str) -> DeploymentDefinition:
        """One deployment; raises NotFound if there is none of that name."""
        return self._client._call(calls.deployments_get(name))

    def create(
        self, path: str | Path, *, reload: bool = False, base_path: str | Path | None = None
    ) -> DeploymentDefinition:
        """Upload a deployment file and wait until every service has a ready worker.

        ``base_path`` (default: the file's folder) is where the server resolves the file's relative
        paths; ``reload=True`` replaces a running deployment of the same name instead of raising
        Conflict. Example: ``client.deployments.create("app/deployment.yml", reload=True)``.
        """
        return self._client._call(calls.deployments_create(path, reload=reload, base_path=base_path))

    def delete(self, name: str) -> DeploymentDefinition:
        """Stop a deployment's workers and forget it."""
        return self._client._call(calls.deployments_delete(name))


class DeploymentClient:
    """One deployment: ``client.deployment("my-app")``; its ``tasks`` and ``sessions``."""

    def __init__(self, client: Client, name: str) -> None:
        self._client = client
        self.name = name
        self.tasks = Tasks(client, name)
        self.sessions = Sessions(client, name)

    def services(self) -> list[ServiceStatus]:
        """Each service's replicas, generation, tasks in flight and last error."""
        return self._client._call(calls.services(self.name))

    def state(self) -> DeploymentState:
        """A snapshot: services, session count, task counts by status, the newest tasks."""
        return self._client._call(calls.state(self.name))

    def changes(self, from_seq: int = 0) -> Generator[ChangeEvent, None, None]:
        """The change feed, endless: services and replicas up and down, sessions, task status changes.

        Example::

            for change in client.deployment("my-app").changes():
                print(change.kind, change.data)
        """
        return self._client._stream(Changes(calls.changes_path(self.name), from_seq))

    def watch(self, from_seq: int = 0) -> Generator[ChangeEvent, None, None]:
        """The change feed over one connection, for callers that show whether they are connected.

        Like :meth:`changes`, but a drop is not resumed behind the caller's back: it raises
        ServerUnreachable (nothing answers) or StreamBroken (the connection or the server went
        away), at once. Resume with ``watch(last.seq + 1)``.
        """
        return self._client._stream(Changes(calls.changes_path(self.name), from_seq), resume=False)

    def context_sizes(self, session_ids: list[str]) -> dict[str, int | None]:
        """The size in bytes of each session's saved workflow Context (None: none saved yet).

        At most 100 sessions per call. Example: ``app.context_sizes([session.session_id])``.
        """
        return self._client._call(calls.context_sizes(self.name, session_ids))


class Tasks:
    """``client.deployment(name).tasks``: run, create, inspect, stream, cancel and talk to tasks."""

    def __init__(self, client: Client, deployment: str) -> None:
        self._client = client
        self._deployment = deployment

    def run(
        self,
        input: Mapping[str, Any] | None = None,
        *,
        service: str | None = None,
        session_id: str | None = None,
    ) -> Any:
        """Run a task and return the workflow's result (raises TaskFailed if it failed).

        ``input`` holds the workflow's keyword arguments; ``service`` None means the default service;
        ``session_id`` None means a new session. Example: ``tasks.run({"message": "hi"})``.
        """
        body = calls.task_definition(input, service, session_id)
        return self._client._call(calls.tasks_run(self._deployment, body))

    def create(
        self,
        input: Mapping[str, Any] | None = None,
        *,
        service: str | None = None,
        session_id: str | None = None,
    ) -> TaskDefinition:
        """Queue a task and return at once with its ids.

        Example: ``task = tasks.create({"count": 3}, service="stream")``.
        """
        body = calls.task_definition(input, service, session_id)
        return self._client._call(calls.tasks_create(self._deployment, body))

    def list(
        self, *, session_id: str | None = None, status: TaskStatus | str | None = None
    ) -> list[TaskRecord]:
        """The deployment's tasks, optionally of one session and/or in one status."""
        return self._client._call(calls.tasks_list(self._deployment, session_id, status))

    def list_page(
        self,
        *,
        session_id: str | None = None,
        status: TaskStatus | str | None = None,
        service_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        order: Literal["asc", "desc"] | None = None,
    ) -> Page[TaskRecord]:
        """One page of the deployment's tasks (oldest first; ``order="desc"``: newest first).

        Pass the page's ``next_cursor`` as ``cursor`` for the next one. Example: the newest 100
        tasks: ``tasks.list_page(limit=100, order="desc").items``.
        """
        call = calls.tasks_page(
            self._deployment,
            session_id=session_id,
            status=status,
            service_id=service_id,
            limit=limit,
            cursor=cursor,
            order=order,
        )
        return self._client._call_page(call)

    def get(self, task_id: str) -> TaskRecord:
        """Everything known about a task: status, attempts, timings, result or error."""
        return self._client._call(calls.tasks_get(self._deployment, task_id))

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a task (raises Conflict if it has already finished)."""
        return self._client._call(calls.tasks_cancel(self._deployment, task_id))

    @overload
    def events(
        self, task_id: str, from_seq: int = 0, raw: Literal[False] = False, *, follow: bool = True
    ) -> Generator[EventEnvelope, None, None]: ...
    @overload
    def events(
        self, task_id: str, from_seq: int = 0, *, raw: Literal[True], follow: bool = True
    ) -> Generator[dict[str, Any], None, None]: ...
    def events(
        self, task_id: str, from_seq: int = 0, raw: bool = False, *, follow: bool = True
    ) -> Generator[EventEnvelope, None, None] | Generator[dict[str, Any], None, None]:
        """A task's events from ``from_seq``, live until the task ends (resumed if the connection drops).

        ``raw=True`` yields Llama Deploy's serialized form
        (``{"__is_pydantic": true, "value": ..., "qualified_name": ...}``) instead of envelopes.
        ``follow=False`` stops at the end of what is logged so far. Example::

            for event in tasks.events(task.task_id):
                print(event.seq, event.type, event.value)
        """
        path = calls.events_path(self._deployment, task_id)
        if raw:
            return self._client._stream(RawTaskEvents(path, from_seq), follow)
        return self._client._stream(TaskEvents(path, from_seq), follow)

    def send_event(
        self,
        task_id: str,
        event: Any,
        *,
        service_id: str | None = None,
        event_type: str = calls.HUMAN_RESPONSE_EVENT,
    ) -> EventDefinition:
        """Send an event into a running task (human in the loop).

        ``event``: a workflows ``Event``, a dict of the fields of an ``event_type`` event, or an
        ``event_obj_str`` as is. ``service_id`` defaults to the task's service.
        Example: ``tasks.send_event(task_id, {"response": "42"})``.
        """
        service = service_id or self.get(task_id).service_id
        body = calls.event_obj_str(event, event_type)
        return self._client._call(calls.tasks_send_event(self._deployment, task_id, service, body))

    def result(self, task_id: str, timeout: float | None = None) -> TaskResult | None:
        """Wait for a task's result (``None`` if ``timeout`` seconds passed first)."""
        return self._client._call(calls.tasks_result(self._deployment, task_id, timeout))


class Sessions:
    """``client.deployment(name).sessions``: tasks in one session share the workflow Context."""

    def __init__(self, client: Client, deployment: str) -> None:
        self._client = client
        self._deployment = deployment

    def list(self) -> list[SessionDefinition]:
        return self._client._call(calls.sessions_list(self._deployment))

    def list_page(self, *, limit: int | None = None, cursor: str | None = None) -> Page[SessionDefinition]:
        """One page of the deployment's sessions; pass its ``next_cursor`` as ``cursor`` for the next."""
        return self._client._call_page(calls.sessions_page(self._deployment, limit=limit, cursor=cursor))

    def create(self) -> SessionDefinition:
        """A new session: ``tasks.run(..., session_id=sessions.create().session_id)``."""
        return self._client._call(calls.sessions_create(self._deployment))

    def get(self, session_id: str) -> SessionDefinition:
        return self._client._call(calls.sessions_get(self._deployment, session_id))

    def delete(self, session_id: str) -> None:
        self._client._call(calls.sessions_delete(self._deployment, session_id))
