"""Everything the dashboard reads from the server, in workers: the change feed (with reconnects),
snapshots, counters, services, Context sizes and the event stream of the task on show.

Nothing here polls: the change feed says when something changed, the event stream when a task
logged something; counters and Context sizes are fetched again only after changes (at most once
per ``stats_interval`` while changes flow). Results go to the app as messages (``tui.messages``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import httpx
from textual import work
from textual.message import Message
from textual.widget import Widget

from llamactl.client import (
    AsyncClient,
    BackendUnavailable,
    ClientError,
    NotFound,
    ServerError,
    ServerUnreachable,
    StreamBroken,
    Unauthorized,
)
from llamactl.client.aio import AsyncDeploymentClient
from llamactl.server.types import ChangeEvent, EventEnvelope, SessionDefinition, TaskRecord
from llamactl.tui.config import DashboardConfig
from llamactl.tui.messages import (
    Connected,
    ContextSizesLoaded,
    DeploymentsListed,
    Disconnected,
    FeedChanges,
    ServicesLoaded,
    SnapshotLoaded,
    StateLoaded,
    TaskEvents,
    TaskEventsEnded,
    TaskEventsInterrupted,
)

__all__ = ["Batcher", "Feed", "describe_error", "is_connection_error"]

QUIET_FLUSH = 0.03
"""Seconds a lone change waits for company before it is shown (feels immediate)."""
BUSY_FLUSH = 0.25
"""Seconds between batches while the server is busy (a few redraws per second, whatever the rate)."""
BUSY_BATCH = 100
MAX_BATCH = 5_000
PAGE = 1_000
"""Records asked for per listing request."""


def is_connection_error(exc: BaseException) -> bool:
    """Whether ``exc`` means the server is gone or unusable for now (retry), not a refusal."""
    if isinstance(exc, ServerUnreachable | StreamBroken | httpx.TransportError):
        return True
    return isinstance(exc, ServerError) and exc.status in (502, 503, 504)


def describe_error(exc: BaseException) -> str:
    """One line a user can act on."""
    if isinstance(exc, ServerUnreachable):
        return "nothing answers there (is `llamactl serve` running?)"
    if isinstance(exc, StreamBroken):
        return "the connection dropped"
    if isinstance(exc, Unauthorized):
        return "the server wants a token: start with --token TOKEN or set LLAMACTL_API_TOKEN"
    if isinstance(exc, httpx.TransportError):
        return f"the connection failed ({type(exc).__name__})"
    if isinstance(exc, BackendUnavailable):
        what = "state store" if exc.backend == "state_store" else "message queue"
        return f"the server cannot reach the deployment's {what} (`llamactl status` says more)"
    return str(exc) or type(exc).__name__


class _FeedGap(Exception):
    """The change feed skipped entries: the server trimmed them before they were read."""


class Batcher:
    """Collects items and hands them to ``flush`` in batches: soon when sparse, less often when busy."""

    def __init__(self, flush: Callable[[list[ChangeEvent]], None]) -> None:
        self._flush = flush
        self._pending: list[ChangeEvent] = []
        self._handle: asyncio.TimerHandle | None = None
        self._busy = False

    def add(self, item: ChangeEvent) -> None:
        self._pending.append(item)
        if len(self._pending) >= MAX_BATCH:
            self.flush()
        elif self._handle is None:
            delay = BUSY_FLUSH if self._busy else QUIET_FLUSH
            self._handle = asyncio.get_running_loop().call_later(delay, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._pending:
            batch, self._pending = self._pending, []
            self._busy = len(batch) >= BUSY_BATCH
            self._flush(batch)

    def discard(self) -> None:
        """Drop what is pending, unshown."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._pending = []


class Feed(Widget):
    """Non-visual: owns the reading workers and posts what they read to the app."""

    DEFAULT_CSS = "Feed { display: none; }"

    def __init__(self, client: AsyncClient, config: DashboardConfig) -> None:
        super().__init__()
        self.client = client
        self.config = config
        self.deployment: str | None = None
        self.next_seq: int | None = None
        """Where the change feed resumes: every change before it has been applied."""
        self.connected = False
        self._wake = asyncio.Event()
        self._stats_at = 0.0
        self._stats_timer: asyncio.TimerHandle | None = None
        self._context_ids: set[str] = set()
        self._contexts_at = 0.0
        self._contexts_timer: asyncio.TimerHandle | None = None
        self._batcher: Batcher | None = None
        """The change feed's batch being collected."""

    def _send(self, message: Message) -> None:
        self.post_message(message)

    def on_unmount(self) -> None:
        for timer in (self._stats_timer, self._contexts_timer):
            if timer is not None:
                timer.cancel()
        self._stats_timer = self._contexts_timer = None

    # --- the change feed ------------------------------------------------------------------------

    def follow(self, deployment: str | None) -> None:
        """Show ``deployment`` from a fresh snapshot (stops following the previous one).

        None: the server's only deployment; when it runs several, the app is sent their names
        (``DeploymentsListed``) to let the user pick one.
        """
        # What was read for the deployment followed so far must not reach the views from now on.
        for group in ("stats", "services", "contexts"):
            self.workers.cancel_group(self, group)
        if self._batcher is not None:
            self._batcher.discard()
        self._context_ids = set()
        self.deployment = deployment
        self.next_seq = None
        self._follow_changes(deployment)

    def retry_now(self) -> None:
        """Cut the wait before the next reconnect attempt short."""
        self._wake.set()

    @work(exclusive=True, group="feed")
    async def _follow_changes(self, deployment: str | None) -> None:
        failures = 0
        looked_again = False
        url = self.client.base_url
        while True:
            batcher = self._batcher = Batcher(lambda batch: self._send(FeedChanges(batch)))
            try:
                if deployment is None:
                    names = sorted(d.name for d in await self.client.deployments.list())
                    if len(names) != 1:
                        self._send(DeploymentsListed(names, None))
                        return
                    deployment = self.deployment = names[0]
                await self._catch_up(deployment)
                self.connected = True
                self._send(Connected(url, deployment, reconnected=failures > 0))
                failures, looked_again = 0, False
                await self._stream_changes(deployment, batcher)
            except _FeedGap:
                # The changes in between are lost to us: start again from a snapshot.
                batcher.flush()
                self.next_seq = None
                continue
            except Exception as exc:
                # Whatever went wrong, the dashboard stays up and tries again: a server that
                # answers oddly (a proxy's error page, a half-started deployment) is "not there".
                batcher.flush()
                live, self.connected = self.connected, False
                if live and isinstance(exc, StreamBroken) and not looked_again:
                    # The feed ended (its deployment deleted, the server stopping or killed):
                    # look again at once, so that what is said is which of them it was.
                    looked_again = True
                    continue
                failures += 1
                delay = min(self.config.retry_initial * 2 ** (failures - 1), self.config.retry_max)
                reason = describe_error(exc)
                gone = isinstance(exc, NotFound) and deployment is not None
                if gone:
                    reason = (
                        f"it has no deployment '{deployment}' (deleted?): pick another with d,"
                        " or deploy it again"
                    )
                self._send(Disconnected(url, reason, delay, failures, gone=gone))
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()

    async def _stream_changes(self, deployment: str, batcher: Batcher) -> None:
        """Apply the change feed from ``next_seq`` until the connection drops (which raises)."""
        assert self.next_seq is not None
        async with contextlib.aclosing(self.client.deployment(deployment).watch(self.next_seq)) as changes:
            async for change in changes:
                if change.seq >= 0:  # else a `health` notice, outside the log
                    if change.seq > self.next_seq:
                        raise _FeedGap  # the server trimmed its feed past where we were
                    self.next_seq = change.seq + 1
                batcher.add(change)
        raise StreamBroken("the server ended the change feed")

    async def _catch_up(self, deployment: str) -> None:
        """Load a snapshot the first time (or when the server's feed restarted), else just counters."""
        handle = self.client.deployment(deployment)
        state = await handle.state()
        self._stats_at = time.monotonic()
        if self.next_seq is not None and state.changes_seq >= self.next_seq:
            self._send(StateLoaded(state))  # resuming the feed replays what we missed
            return
        reset = self.next_seq is not None
        tasks = await _newest_tasks(handle, self.config.max_tasks)
        newest = await handle.sessions.page(limit=min(self.config.max_sessions, PAGE), newest_first=True)
        sessions = _newest_sessions(newest.items[::-1], tasks, self.config.max_sessions)
        self.next_seq = state.changes_seq
        self._send(SnapshotLoaded(state, tasks, sessions, reset=reset))

    # --- counters and services, fetched again after changes ---------------------------------------

    def changes_seen(self) -> None:
        """Task changes arrived: fetch the counters again, at most once per ``stats_interval``."""
        if self._stats_timer is not None or self.deployment is None:
            return
        wait = self.config.stats_interval - (time.monotonic() - self._stats_at)
        if wait <= 0:
            self._refresh_state(self.deployment)
        else:
            self._stats_timer = asyncio.get_running_loop().call_later(wait, self._stats_due)

    def _stats_due(self) -> None:
        self._stats_timer = None
        if self.deployment is not None and self.connected:
            self._refresh_state(self.deployment)

    @work(exclusive=True, group="stats")
    async def _refresh_state(self, deployment: str) -> None:
        self._stats_at = time.monotonic()
        with contextlib.suppress(ClientError, httpx.TransportError):
            self._send(StateLoaded(await self.client.deployment(deployment).state()))

    @work(exclusive=True, group="services")
    async def refresh_services(self) -> None:
        """Fetch the services again (one was added or removed)."""
        if self.deployment is None:
            return
        with contextlib.suppress(ClientError, httpx.TransportError):
            self._send(ServicesLoaded(await self.client.deployment(self.deployment).services()))

    # --- Context sizes of the sessions the state tree shows ---------------------------------------

    def contexts_changed(self, session_ids: set[str]) -> None:
        """These sessions' Contexts may have changed: fetch their sizes (throttled like counters)."""
        self._context_ids |= session_ids
        if self._contexts_timer is not None or self.deployment is None or not self._context_ids:
            return
        wait = self.config.stats_interval - (time.monotonic() - self._contexts_at)
        if wait <= 0:
            self._contexts_due()
        else:
            self._contexts_timer = asyncio.get_running_loop().call_later(wait, self._contexts_due)

    def _contexts_due(self) -> None:
        self._contexts_timer = None
        if self.deployment is None or not self.connected or not self._context_ids:
            return
        ids, self._context_ids = sorted(self._context_ids)[:100], set()
        self._contexts_at = time.monotonic()
        self._fetch_contexts(self.deployment, ids)

    @work(group="contexts")
    async def _fetch_contexts(self, deployment: str, session_ids: list[str]) -> None:
        with contextlib.suppress(ClientError, httpx.TransportError):
            sizes = await self.client.deployment(deployment).context_sizes(session_ids)
            self._send(ContextSizesLoaded(sizes))

    # --- the task on show --------------------------------------------------------------------------

    @work(exclusive=True, group="events")
    async def follow_events(self, task_id: str, from_seq: int) -> None:
        """Stream a task's events from ``from_seq`` until it ends (or the connection drops)."""
        if self.deployment is None:
            return
        tasks = self.client.deployment(self.deployment).tasks
        pending: list[EventEnvelope] = []
        handle: asyncio.TimerHandle | None = None

        def flush() -> None:
            nonlocal handle, pending
            if handle is not None:
                handle.cancel()
                handle = None
            if pending:
                batch, pending = pending, []
                self._send(TaskEvents(task_id, batch))

        try:
            async with contextlib.aclosing(tasks.events(task_id, from_seq)) as events:
                async for envelope in events:
                    pending.append(envelope)
                    if handle is None:
                        handle = asyncio.get_running_loop().call_later(QUIET_FLUSH, flush)
            flush()
            record = await tasks.get(task_id)
            self._send(TaskEventsEnded(task_id, record))
        except (ClientError, httpx.TransportError) as exc:
            flush()
            self._send(TaskEventsInterrupted(task_id, describe_error(exc), is_connection_error(exc)))


async def _newest_tasks(handle: AsyncDeploymentClient, count: int) -> list[TaskRecord]:
    """The ``count`` newest tasks, oldest first, a page at a time (a server ignoring ``limit``
    answers them all in one go: the newest are kept)."""
    found: list[TaskRecord] = []
    cursor: str | None = None
    while len(found) < count:
        page = await handle.tasks.page(limit=min(count - len(found), PAGE), cursor=cursor, newest_first=True)
        found.extend(page.items)
        cursor = page.next_cursor
        if cursor is None or not page.items:
            break
    return sorted(found, key=lambda t: t.created_at)[-count:]


def _newest_sessions(
    listed: list[SessionDefinition], tasks: list[TaskRecord], cap: int
) -> list[SessionDefinition]:
    """The sessions to start with: those listed, plus those of the tasks (tasks name their session;
    one made for its task alone has no record, and no row)."""
    by_id = {s.session_id: s for s in listed}
    for task in tasks:
        if task.own_session:
            continue
        session = by_id.get(task.session_id)
        if session is None:
            by_id[task.session_id] = SessionDefinition(session_id=task.session_id, task_ids=[task.task_id])
        elif task.task_id not in session.task_ids:
            session.task_ids.append(task.task_id)
    return list(by_id.values())[-cap:]
