"""The blocking client: `Client`."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

import httpx

from llamactl.client import _calls as calls
from llamactl.client._base import (
    DEFAULT_TIMEOUT,
    PROBE_PATH,
    PROBE_TIMEOUT,
    Call,
    check,
    client_settings,
    parse_answer,
    transport_error,
)
from llamactl.client._streams import (
    IDLE_SECONDS,
    MAX_RECONNECTS,
    Changes,
    Cursor,
    RawTaskEvents,
    TaskEvents,
    backoff,
    lines_of,
)
from llamactl.client.errors import BackendUnavailable, NotLlamactlServer, StreamBroken
from llamactl.client.models import DeploymentState, Page
from llamactl.client.sessions import Sessions
from llamactl.server.types import (
    ChangeEvent,
    DeploymentDefinition,
    EventDefinition,
    EventEnvelope,
    ServiceStatus,
    Status,
    TaskDefinition,
    TaskRecord,
    TaskResult,
    TaskStatus,
    TaskWhere,
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
        self._answered = False
        """A llamactl server has answered this client: a request that breaks off later means it
        went away (a restart, say), not that something else listens there."""
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
        value = parse_answer(call, self._request(call))
        self._answered = True
        return value

    def _page(self, call: Call[list[T]]) -> Page[T]:
        response = self._request(call)
        page = Page(parse_answer(call, response), response.headers.get("x-next-cursor") or None)
        self._answered = True
        return page

    def _request(self, call: Call[Any]) -> httpx.Response:
        try:
            return self._http.request(call.method, call.path, **call.request_kwargs(self._http.timeout))
        except httpx.TransportError as exc:
            raise transport_error(self._http, exc, self._probe(exc), known=self._answered) from exc

    def _probe(self, exc: httpx.TransportError) -> httpx.Response | Exception | None:
        """After a request broke off without an answer: what ``GET /healthz`` gets now."""
        if isinstance(exc, httpx.ConnectError | httpx.TimeoutException | httpx.UnsupportedProtocol):
            return None
        try:
            return self._http.get(PROBE_PATH, timeout=PROBE_TIMEOUT)
        except httpx.HTTPError as failure:
            return failure

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
                    cursor.check(response)
                    self._answered = True
                    for line in lines_of(response.iter_text()):
                        item = cursor.feed(line)
                        if item is not None:
                            received, failures = True, 0
                            yield item
                        if cursor.done:
                            return
                if cursor.ends_on_close:
                    return
                problem: Exception = StreamBroken(f"{cursor.path}: the server ended the stream")
            except BackendUnavailable:
                # The server answers, but its state store or queue does not, for now; the log is
                # kept there, so a follower waits for it (this is no lost stream: never given up).
                if not (follow and resume):
                    raise
                cursor.resumed = True
                time.sleep(backoff(MAX_RECONNECTS))
                continue
            except httpx.ReadTimeout:
                if not follow:
                    return
                raise
            except httpx.TransportError as exc:
                if not cursor.resumed and not received:
                    error = transport_error(self._http, exc, self._probe(exc), known=self._answered)
                    if isinstance(error, NotLlamactlServer) or isinstance(
                        exc, httpx.ConnectError | httpx.ConnectTimeout
                    ):
                        raise error from exc  # nothing (or no llamactl server) answers: no use retrying
                if not resume:
                    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
                        raise transport_error(self._http, exc) from exc
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
        task_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Run a task and return the workflow's result (raises TaskFailed if it failed).

        ``input`` holds the workflow's keyword arguments; ``service`` None means the default service;
        ``session_id`` None means a new session; ``task_id`` (new, e.g. a uuid) tells the caller the
        task's id before the answer comes. The server waits at most ``timeout`` seconds (default:
        the service's timeout plus a minute), then raises WaitTimeout naming the task, which goes on.
        Example: ``tasks.run({"message": "hi"})``.
        """
        body = calls.task_definition(input, service, session_id, task_id)
        return self._client._call(calls.tasks_run(self._deployment, body, timeout))

    def create(
        self,
        input: Mapping[str, Any] | None = None,
        *,
        service: str | None = None,
        session_id: str | None = None,
        task_id: str | None = None,
    ) -> TaskDefinition:
        """Queue a task and return at once with its ids.

        Example: ``task = tasks.create({"count": 3}, service="stream")``.
        """
        body = calls.task_definition(input, service, session_id, task_id)
        return self._client._call(calls.tasks_create(self._deployment, body))

    def list(
        self, *, session_id: str | None = None, status: TaskStatus | str | None = None
    ) -> list[TaskRecord]:
        """The deployment's tasks (the first page: at most 1000), optionally of one session and/or in
        one status; :meth:`page` and :meth:`iter` read further."""
        return self._client._call(calls.tasks_list(self._deployment, session_id, status))

    def page(
        self,
        *,
        session_id: str | None = None,
        status: TaskStatus | str | None = None,
        service_id: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
        newest_first: bool = False,
    ) -> Page[TaskRecord]:
        """One page of tasks (oldest first, or newest first) and the cursor of the next one.

        Example, the 20 newest failed tasks: ``tasks.page(status="failed", limit=20, newest_first=True)``.
        """
        call = calls.tasks_list(
            self._deployment,
            session_id,
            status,
            service_id=service_id,
            limit=limit,
            cursor=cursor,
            newest_first=newest_first,
        )
        return self._client._page(call)

    def iter(
        self,
        *,
        session_id: str | None = None,
        status: TaskStatus | str | None = None,
        service_id: str | None = None,
        page_size: int = 1000,
        newest_first: bool = False,
    ) -> Iterator[TaskRecord]:
        """Every task, a page (of ``page_size``) per request."""
        cursor: str | None = None
        while True:
            page = self.page(
                session_id=session_id,
                status=status,
                service_id=service_id,
                limit=page_size,
                cursor=cursor,
                newest_first=newest_first,
            )
            yield from page.items
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def get(self, task_id: str) -> TaskRecord:
        """Everything known about a task: status, attempts, timings, result or error."""
        return self._client._call(calls.tasks_get(self._deployment, task_id))

    def cancel(self, task_id: str) -> TaskRecord:
        """Cancel a task (raises Conflict if it has already finished)."""
        return self._client._call(calls.tasks_cancel(self._deployment, task_id))

    def where(self, task_id: str) -> TaskWhere:
        """Where a running task's code is now, as its worker answers: ``where`` names the line
        (``in fetch (app.py line 12)``), ``stacks`` holds each stack. Raises Conflict for a
        task queued or ended, and an error naming the worker when it does not answer in 10 s."""
        return self._client._call(calls.tasks_where(self._deployment, task_id))

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
