"""The control plane of one deployment: sessions, tasks, their event logs, and the service registry.

It owns no process and no socket of its own: it reads and writes a :class:`StateStore`, publishes
tasks and consumes worker reports through a :class:`MessageQueue`, and leaves replica choice to
the queue's credit-based delivery (see :mod:`llamactl.server.orchestrator`). Its background work
(reports, dead letters, publish retries, replica expiry, retention) runs in supervised loops that
restart when they fail; :meth:`ControlPlane.health` tells how they are doing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.dispatcher import Dispatcher
from llamactl.server.control_plane.inbox import Handler, Inbox
from llamactl.server.control_plane.liveness import LivenessWatch
from llamactl.server.control_plane.loops import Loops
from llamactl.server.control_plane.queue_bound import QueueBound
from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.registry import ServiceRegistry
from llamactl.server.control_plane.remote_wakeups import RemoteWakeups
from llamactl.server.control_plane.replica_mirror import ReplicaMirror
from llamactl.server.control_plane.retention import Retention
from llamactl.server.control_plane.settings import ControlPlaneSettings
from llamactl.server.control_plane.signals import TaskSignals
from llamactl.server.control_plane.stored import Page, StoredTask
from llamactl.server.control_plane.task_events import TaskEvents
from llamactl.server.control_plane.task_input import decode_input
from llamactl.server.control_plane.upgrade import ensure_indexed
from llamactl.server.errors import (
    SessionLimitReached,
    ShuttingDown,
    StateStoreDamaged,
    TaskWaitTimeout,
)
from llamactl.server.ids import check_id, new_id
from llamactl.server.mq import topics
from llamactl.server.mq.base import MessageQueue
from llamactl.server.orchestrator import Orchestrator
from llamactl.server.state.base import StateStore
from llamactl.server.types import (
    EventEnvelope,
    SessionDefinition,
    TaskDefinition,
    TaskRecord,
    TaskResult,
    TaskStatus,
    TaskWhere,
)

__all__ = ["ControlPlane"]

log = logging.getLogger(__name__)

_TURNS_CHECK = 5.0
"""Seconds between two looks for tasks a dead server left (shared stores only)."""


class ControlPlane:
    def __init__(
        self,
        deployment: str,
        *,
        store: StateStore,
        queue: MessageQueue,
        orchestrator: Orchestrator,
        registry: ServiceRegistry,
        settings: ControlPlaneSettings | None = None,
    ) -> None:
        self.deployment = deployment
        self.settings = settings or ControlPlaneSettings()
        self.changes = ChangeFeed(store, deployment, f"{deployment}/changes")
        self.records = ControlPlaneRecords(store, deployment, self.changes)
        self.queue = queue
        self.orchestrator = orchestrator
        self.registry = registry
        self.signals = TaskSignals()
        self.dispatcher = Dispatcher(self.records, queue, self.settings.timeouts, on_final=self._changed)
        self.inbox = Inbox(
            self.records,
            registry,
            on_changed=self._changed,
            on_finished=self._finished,
            on_suspended=self.dispatcher.resume,
            release=self.dispatcher.release_write,
            on_damaged=self._store_damaged,
        )
        self.retention = Retention(self.records, self.changes, self.settings.retention)
        self.loops = Loops(f"control plane {deployment}")
        self._stopping = asyncio.Event()
        self._closing_why, self._back = "the server is stopping", "the server is back"
        self._refusing: str | None = None
        self.damaged: StateStoreDamaged | None = None
        """Set once the state store turned out damaged: no new task is taken, waiters answer at once."""
        self.events = TaskEvents(deployment, self.records, self.signals, queue, self._stopping)
        self._queue_bound = QueueBound(
            deployment,
            self.records,
            lambda service_id: self.settings.max_queued.get(service_id, self.settings.default_max_queued),
        )
        self._remote = (
            RemoteWakeups(store, self.changes, self.records.events_stream(""), self.signals)
            if store.shared
            else None
        )
        if store.shared:
            self.inbox.mirror = ReplicaMirror(store, deployment, registry)

    # --- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start consuming worker reports and hand out the tasks a previous run left unfinished."""
        await ensure_indexed(self.records)
        self.changes.start()
        control = topics.control_topic(self.deployment)
        self._consume("reports", control, self.inbox.handle_report)
        self._consume("reports.dead", topics.dead_letter_topic(control), self.inbox.handle_report)
        for service_id in self.registry.service_ids():
            self.service_added(service_id)
        resent = await self.dispatcher.recover()
        if resent:
            log.info("deployment %s: handed out %d unfinished task(s) again", self.deployment, resent)
        self.loops.start("publish-retry", self.dispatcher.retry_loop)
        if self._remote is not None:
            self._remote.start()
            self.loops.start("remote-changes", self._remote.follow_changes)
            self.loops.start("turns-check", self._check_turns)
        liveness = LivenessWatch(
            self.deployment,
            registry=self.registry,
            queue=self.queue,
            changes=self.changes,
            dispatcher=self.dispatcher,
            mirror=self.inbox.mirror,
        )
        self.loops.start("replica-expiry", liveness.run)
        self.loops.start("retention", self.retention.run)

    def _consume(self, name: str, topic: str, handler: Handler) -> None:
        self.loops.start(name, lambda: self.inbox.consume(self.queue, topic, handler))

    def service_added(self, service_id: str) -> None:
        """Consume the dead letters of a service's topic (tasks whose workers kept dying)."""
        service = topics.service_topic(self.deployment, service_id)
        self._consume(f"dead:{service_id}", topics.dead_letter_topic(service), self.inbox.handle_dead_letter)

    async def service_added_again(self, service_id: str) -> None:
        """A removed service is back: its topic is its workers' again."""
        await self.loops.stop(f"removed:{service_id}")
        self.service_added(service_id)

    async def service_removed(self, service_id: str) -> int:
        """A service left the deployment (its workers have stopped): fail what waits for it;
        return how many tasks that failed."""
        reason = f"its service '{service_id}' was removed from the deployment before the task ran"
        failed = await self.dispatcher.fail_service(service_id, reason)
        topic = topics.service_topic(self.deployment, service_id)
        self._consume(f"removed:{service_id}", topic, self.inbox.handle_removed)
        return failed

    def reconfigure(self, settings: ControlPlaneSettings) -> None:
        """New limits from an edited deployment file (timeouts, queue bounds, wait, retention)."""
        self.settings = settings
        self.dispatcher.set_timeouts(settings.timeouts)
        self.retention.policy = settings.retention

    def begin_shutdown(self) -> None:
        """Wake every waiter with ShuttingDown (503): the server is about to stop."""
        self._stopping.set()
        self.signals.notify_all()

    def refuse_tasks(self, why: str, back: str, *, state: str) -> None:
        """Take no new task (ShuttingDown, 503, saying ``why``, with ``state`` for a client to
        tell), while everything else goes on: the deployment is being deleted, and its running
        tasks finish first. ``back``: when a waiter its close answers may ask for its task again."""
        if self._stopping.is_set():
            return  # the server stops: it says so
        self._refusing = state
        self._closing_why, self._back = why, back

    async def close(self) -> None:
        self.begin_shutdown()
        await self.records.unstored.flush()  # runs handed out are stored before the store closes
        if self._remote is not None:
            self._remote.close()
        await self.loops.close()
        await self.inbox.close()
        await self.changes.close()

    def health(self) -> dict[str, object]:
        """The background loops (running, restarts, last error) and what was dropped or retried."""
        counters = self.inbox.counters
        return {
            "loops": {name: h.as_dict() for name, h in self.loops.health.items()},
            "late_results": counters.late_results,
            "late_events": counters.late_events,
            "superseded_events": counters.superseded_events,
            "malformed_reports": self.inbox.deliveries.counters.malformed,
            "retried_reports": self.inbox.deliveries.counters.retried,
            "reordered_reports": self.inbox.order.waited,
            "reports_without_predecessor": self.inbox.order.gave_up,
            "unreadable_records": self.records.unreadable,
            "pruned_tasks": self.retention.pruned_tasks,
            "dropped_changes": self.changes.dropped,
        }

    # --- sessions ----------------------------------------------------------------------------

    async def create_session(self, session_id: str | None = None) -> SessionDefinition:
        """Create a session (or return the one of that id).

        Raises:
            SessionLimitReached: the deployment holds ``max_sessions`` sessions already.
        """
        if session_id is not None:
            check_id(session_id, "session id")
            found = await self.records.find_session(session_id)
            if found is not None:
                return found.definition(await self.records.session_task_ids(session_id))
        held = await self.records.count_sessions()
        if held >= self.settings.max_sessions:
            raise SessionLimitReached(self.deployment, held, self.settings.max_sessions)
        record, _ = await self.records.create_session(session_id or new_id())
        return record.definition([])

    async def get_session(self, session_id: str) -> SessionDefinition:
        record = await self.records.get_session(session_id)
        return record.definition(await self.records.session_task_ids(session_id))

    async def list_sessions(
        self, *, limit: int = 1000, cursor: str | None = None, descending: bool = False
    ) -> tuple[list[SessionDefinition], str | None]:
        """A page of sessions in creation order (newest first with ``descending``) and the cursor
        of the next page (None on the last)."""
        page = await self.records.list_sessions(limit=limit, cursor=cursor, descending=descending)
        sessions = [s.definition(await self.records.session_task_ids(s.session_id)) for s in page.items]
        return sessions, page.next_cursor

    async def delete_session(self, session_id: str) -> None:
        """Delete a session and its Context; the tasks waiting in it are cancelled (the one
        running finishes)."""
        await self.dispatcher.drop_session(session_id)

    # --- tasks -------------------------------------------------------------------------------

    async def create_task(self, definition: TaskDefinition, *, keep_context: bool = True) -> TaskRecord:
        """Store a task (queued) and hand it to its service; return at once.

        Without a session id a new session is made for the task; with ``keep_context=False``
        (only without a session id) that session is the task's own: it has no record and no
        workflow Context is saved. An unknown session id is an error, so a typo cannot silently
        start from an empty Context. A service whose queue is full refuses the task (Overloaded).
        """
        return (await self._create(definition, keep_context=keep_context)).public()

    async def _create(self, definition: TaskDefinition, *, keep_context: bool) -> StoredTask:
        if self._stopping.is_set() or self._refusing is not None:
            state = None if self._stopping.is_set() else self._refusing
            raise ShuttingDown(f"{self._closing_why}: it takes no new tasks", state=state)
        if self.damaged is not None:
            raise StateStoreDamaged(f"deployment '{self.deployment}' takes no new task: {self.damaged}")
        if definition.task_id:
            check_id(definition.task_id, "task id")
        if definition.session_id:
            check_id(definition.session_id, "session id")
        route = self.orchestrator.route(definition.service_id)
        decode_input(definition.input)
        await self._queue_bound.check(route.service_id)
        now = time.time()
        task = StoredTask(
            task_id=definition.task_id or new_id(),
            deployment=self.deployment,
            service_id=route.service_id,
            session_id=definition.session_id or new_id(),
            input=definition.input,
            created_at=now,
            keep_context=keep_context or bool(definition.session_id),
            own_session=not keep_context and not definition.session_id,
        )
        fresh_id = "task_id" not in definition.model_fields_set  # made by its default: nobody has it
        await self.dispatcher.submit(task, new_session=not definition.session_id, new_id=fresh_id)
        self._queue_bound.taken(task.service_id)
        return task

    def wait_bound(self, service_id: str) -> float:
        """How long ``run_task`` waits for a task of ``service_id`` by default."""
        timeout = self.settings.timeouts.get(service_id)
        return timeout + 60.0 if timeout else self.settings.wait

    async def run_task(self, definition: TaskDefinition, timeout: float | None = None) -> TaskRecord:
        """Create a task and wait for it to finish, at most ``timeout`` seconds (default: the
        service's timeout plus a minute, else the deployment's wait). Raises TaskWaitTimeout
        (with the task's id and status) when the wait ends first; the task goes on.

        Without a session id the task runs in a session of its own, with no record and no saved
        Context: the caller gets only the result, so nobody runs in that session again (Llama
        Deploy 0.9 makes no session for such a run at all)."""
        # Listening before the task exists, no change of it is missed, so the first look at it
        # is the record just written, not a read (a round trip on a store other servers share).
        with self.signals.listen(definition.task_id) as changed, self.records.unstored.waiting():
            task = await self._create(definition, keep_context=False)
            wait = timeout if timeout is not None else self.wait_bound(task.service_id)
            try:
                if task.task_id != definition.task_id:  # an empty id given: made by _create
                    return await self.wait_for_task(task.task_id, timeout=wait)
                return await self._wait_for(task.task_id, changed, wait, task)
            except TimeoutError:
                current = await self.records.get_task(task.task_id)
                raise TaskWaitTimeout(task.task_id, current.status.value, wait) from None

    async def get_task(self, task_id: str) -> TaskRecord:
        return (await self.records.get_task(task_id)).public()

    async def list_tasks(
        self,
        session_id: str | None = None,
        *,
        status: TaskStatus | None = None,
        service_id: str | None = None,
        limit: int = 1000,
        cursor: str | None = None,
        descending: bool = False,
    ) -> tuple[list[TaskRecord], str | None]:
        """A page of tasks in creation order (newest first with ``descending``) and the cursor of
        the next page (None on the last)."""
        page: Page = await self.records.list_tasks(
            session_id=session_id,
            status=status,
            service_id=service_id,
            limit=limit,
            cursor=cursor,
            descending=descending,
        )
        return [t.public() for t in page.items], page.next_cursor

    async def task_counts(self) -> dict[str, dict[str, int]]:
        """Tasks by service and status, without reading them."""
        return await self.records.count_tasks()

    def _store_damaged(self, exc: StateStoreDamaged) -> None:
        """The state store turned out damaged: say so once, take no new task, and answer every
        waiter at once (reports keep being retried, so none is lost if the file is mended)."""
        if self.damaged is not None:
            return
        self.damaged = exc
        log.error("deployment %s: %s; it takes no new task until then", self.deployment, exc)
        self.signals.notify_all()

    async def wait_for_task(self, task_id: str, timeout: float | None = None) -> TaskRecord:
        """Wait until the task is completed, failed or cancelled. Raises TimeoutError after
        ``timeout`` seconds, ShuttingDown when the server stops first."""
        with self.signals.listen(task_id) as changed:
            return await self._wait_for(task_id, changed, timeout, None)

    async def _wait_for(
        self, task_id: str, changed: asyncio.Event, timeout: float | None, known: StoredTask | None
    ) -> TaskRecord:
        """:meth:`wait_for_task` with ``changed`` listening already; ``known``: the task as
        this server wrote it since ``changed`` began listening (looked at first, not read)."""
        task = known
        async with asyncio.timeout(timeout):
            while True:
                if task is None:
                    changed.clear()
                    # Woken by this server's own last commit of the task, the cache has it final.
                    task = self.records.final_cached(task_id) or await self.records.peek_task(task_id)
                if task.status.is_final:
                    return task.public()
                if self.damaged is not None:
                    raise StateStoreDamaged(
                        f"task '{task_id}' is {task.status.value}, but {self.damaged}",
                        task_id=task_id,
                        status=task.status.value,
                    )
                if self._stopping.is_set():
                    raise ShuttingDown(
                        f"{self._closing_why}; task '{task_id}' is {task.status.value}: ask for its "
                        f"result once {self._back} (it finishes, or runs again, then)",
                        task_id=task_id,
                        status=task.status.value,
                    )
                await changed.wait()
                task = None

    async def task_result(self, task_id: str) -> TaskResult | None:
        """Llama Deploy's TaskResult for a finished task (None while it runs)."""
        task = await self.records.get_task(task_id)
        if not task.status.is_final:
            return None
        if task.status is TaskStatus.COMPLETED:
            result = task.result if isinstance(task.result, str) else json.dumps(task.result)
        else:
            result = task.error or task.status.value
        return TaskResult(task_id=task_id, result=result, data={"status": task.status.value})

    def task_events(
        self, task_id: str, from_seq: int = 0, *, follow: bool = True, poll: float = 5.0
    ) -> AsyncIterator[EventEnvelope]:
        """See :meth:`TaskEvents.read`."""
        return self.events.read(task_id, from_seq, follow=follow, poll=poll)

    def task_event_batches(
        self, task_id: str, from_seq: int = 0, *, follow: bool = True, poll: float = 5.0
    ) -> AsyncIterator[list[EventEnvelope]]:
        """See :meth:`TaskEvents.read_batches`."""
        return self.events.read_batches(task_id, from_seq, follow=follow, poll=poll)

    async def send_event(self, task_id: str, event_obj_str: str) -> None:
        """See :meth:`TaskEvents.send`."""
        await self.events.send(task_id, event_obj_str)

    async def task_where(self, task_id: str) -> TaskWhere:
        """See :meth:`TaskEvents.where`."""
        return await self.events.where(task_id)

    async def cancel_task(self, task_id: str) -> TaskRecord:
        """Cancel a task: at once (it never runs) if it has not reached a worker, else its worker
        is asked to stop it and its record says cancelled once it has."""
        return (await self.dispatcher.cancel(task_id)).task.public()

    # --- internals ---------------------------------------------------------------------------

    def _changed(self, task: StoredTask) -> None:
        self.signals.notify(task.task_id)

    async def _finished(self, task: StoredTask, *, released: bool = False) -> None:
        self.signals.notify(task.task_id)
        await self.dispatcher.finished(task, released=released)

    async def _check_turns(self) -> None:
        """With a shared store: pick up what another server left half done when it died."""
        while True:
            await asyncio.sleep(_TURNS_CHECK)
            if await self.dispatcher.check_turns(older_than=_TURNS_CHECK):
                log.info("deployment %s: handed out tasks another server had left", self.deployment)
