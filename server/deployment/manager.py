"""Several running deployments, by name: what the API server serves.

The manager starts a deployment and waits until every service has a ready replica before it
answers; a deployment that fails to come up is closed and its error raised. While a deployment
is starting (or being reloaded or deleted) :meth:`DeploymentManager.get` raises
:class:`DeploymentUnavailable` so the API can answer 503 instead of touching a half-built engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from llamactl.server.config import DeploymentConfig
from llamactl.server.deployment.runtime import Deployment
from llamactl.server.errors import DeploymentExists, DeploymentNotFound, LlamactlError, ShuttingDown
from llamactl.server.supervisor.models import SupervisorEvent
from llamactl.server.types import ReplicaState

__all__ = ["DeploymentHooks", "DeploymentManager", "DeploymentUnavailable"]

log = logging.getLogger(__name__)


class DeploymentUnavailable(LlamactlError):
    """The deployment exists but is starting, reloading or stopping right now."""

    def __init__(self, name: str, state: str) -> None:
        super().__init__(f"Deployment '{name}' is {state}: try again in a moment")
        self.name = name
        self.state = state


class DeploymentHooks(Protocol):
    """Called around a deployment's life (e.g. to serve its control-plane port)."""

    async def started(self, deployment: Deployment) -> None: ...

    async def stopping(self, deployment: Deployment) -> None: ...


EventCallback = Callable[[str], None]

SLOW_START_NOTE = 5.0
"""Seconds after its start at which a service with no ready replica yet is said to be loading."""


class _ReportingDeployment(Deployment):
    """A Deployment that reports each service's first ready replica as one human line."""

    def __init__(self, config: DeploymentConfig, on_event: EventCallback | None, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self._on_event = on_event
        self._reported: set[str] = set()
        self._slow_note: asyncio.TimerHandle | None = None

    def say_restarting(self, event: SupervisorEvent) -> None:
        if self._on_event is None:
            super().say_restarting(event)
        else:
            self._on_event(event.restart_line())

    def tell(self, line: str) -> None:
        if self._on_event is None:
            super().tell(line)
        else:
            self._on_event(line)

    def notice(self, line: str) -> None:
        if self._on_event is None:
            super().notice(line)
        else:
            self._on_event(f"warning: {line}")

    async def start(self) -> None:
        await super().start()
        if self._on_event is None:
            return
        for service in self.config.services.values():
            if service.replicas == 0:
                self._on_event(
                    f"{self.name}/{service.id} ({service.name}) has no replica here: its tasks wait for "
                    "`llamactl worker` on other hosts"
                )
        self._slow_note = asyncio.get_running_loop().call_later(SLOW_START_NOTE, self._say_still_loading)

    def _say_still_loading(self) -> None:
        """Say which services are not up yet, once: a silent start looks like a hung one."""
        self._slow_note = None
        if self._on_event is None or self._control_plane is None:
            return
        for status in self._control_plane.registry.statuses():
            crashed = any(r.state is ReplicaState.CRASHED for r in status.replicas)
            if status.ready or status.desired_replicas == 0 or crashed or status.service_id in self._reported:
                continue
            service = self.config.services[status.service_id]
            doing = f"importing {service.import_path}" if service.import_path else "starting"
            self._on_event(
                f"{self.name}/{status.service_id} ({status.name}) is still loading: no worker ready after "
                f"{SLOW_START_NOTE:g} s ({doing}; big libraries take a while: it has "
                f"{service.startup_timeout:g} s, its startup-timeout; Ctrl-C stops)"
            )

    async def close(self) -> None:
        if self._slow_note is not None:
            self._slow_note.cancel()
            self._slow_note = None
        await super().close()

    def _on_change(self, kind: str, data: dict[str, Any]) -> None:
        super()._on_change(kind, data)
        if self._on_event is None or self._control_plane is None:
            return
        statuses = self._control_plane.registry.statuses()
        self._reported &= {status.service_id for status in statuses}  # one removed comes back: say so
        for status in statuses:
            if status.ready and status.service_id not in self._reported:
                self._reported.add(status.service_id)
                ready = [r.replica_id for r in status.replicas if r.state is ReplicaState.READY]
                self._on_event(
                    f"{self.name}/{status.service_id} ({status.name}) is up: "
                    f"{len(ready)}/{status.desired_replicas} replica(s) ready"
                )


class DeploymentManager:
    """Holds the running deployments of one API server.

    Args:
        ready_timeout: seconds to wait for every service of a new deployment to have a ready
            replica before giving up (TimeoutError); default: the services' ``startup-timeout``.
        deployment_kwargs: passed to each :class:`Deployment` (e.g. ``stop_grace``).
    """

    def __init__(self, *, ready_timeout: float | None = None, **deployment_kwargs: Any) -> None:
        self.ready_timeout = ready_timeout
        self._deployment_kwargs = deployment_kwargs
        self._running: dict[str, Deployment] = {}
        self._busy: dict[str, str] = {}
        self._draining: dict[str, Deployment] = {}
        self._say: dict[str, EventCallback] = {}
        self._expected: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}
        self._starting: dict[str, asyncio.Task[Deployment]] = {}
        self._hooks: list[DeploymentHooks] = []
        self._closing = False

    def add_hooks(self, hooks: DeploymentHooks) -> None:
        """Call ``hooks.started`` after each deployment comes up and ``hooks.stopping`` before it stops."""
        self._hooks.append(hooks)

    def expect(self, names: Iterable[str]) -> None:
        """Deployments this server is about to start (:meth:`create` follows for each): until it
        does, a request for one answers that it is starting (503, try again), not that there is
        no such deployment (404), so clients of a restarted server wait instead of giving up."""
        for name in names:
            if name not in self._running and name not in self._busy:
                self._busy[name] = "starting"
                self._expected.add(name)

    # --- lookups -----------------------------------------------------------------------------

    def names(self) -> list[str]:
        """Names of the deployments that exist (running, starting or reloading), sorted."""
        return sorted(set(self._running) | set(self._busy))

    def get(self, name: str) -> Deployment:
        """The running deployment ``name``, or one being deleted while its workers finish their
        tasks (its records, events and streams stay readable; it takes no new task).

        Raises:
            DeploymentNotFound: no such deployment.
            DeploymentUnavailable: it is starting, reloading or stopping.
        """
        deployment = self._running.get(name) or self._draining.get(name)
        if deployment is not None:
            return deployment
        state = self._busy.get(name)
        if state is not None:
            raise DeploymentUnavailable(name, state)
        raise DeploymentNotFound(name)

    def running(self) -> list[Deployment]:
        """The deployments that are up, by name."""
        return [self._running[n] for n in sorted(self._running)]

    # --- lifecycle ---------------------------------------------------------------------------

    async def create(
        self, config: DeploymentConfig, *, reload: bool = False, on_event: EventCallback | None = None
    ) -> Deployment:
        """Start a deployment and wait until every service has a ready replica.

        With ``reload`` the running deployment of that name is stopped first (its workers finish
        their tasks) and the new one started from ``config``; tasks and sessions live on in the
        deployment's state store.

        Raises:
            DeploymentExists: the name is taken and ``reload`` is false.
            DeploymentNotFound: ``reload`` of a name that does not exist.
            ShuttingDown: the server is stopping (what had started of it is closed).
            DeploymentConfigError, WorkflowLoadError, MessageQueueError, TimeoutError: the
                deployment did not come up (it has been closed).
        """
        name = config.name
        self._refuse_if_closing(name)
        if not reload and name not in self._expected and name in self.names():
            raise DeploymentExists(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            self._refuse_if_closing(name)
            expected = not reload and name in self._expected  # read under the lock: one create takes it
            old = self._running.get(name)
            if reload and old is None:
                raise DeploymentNotFound(name)
            if not reload and (old is not None or (name in self._busy and not expected)):
                raise DeploymentExists(name)
            self._expected.discard(name)
            self._busy[name] = "reloading" if reload else "starting"
            try:
                if old is not None:
                    del self._running[name]
                    await self._stop(old)
                deployment = await self._start_unless_closed(name, config, on_event)
                self._running[name] = deployment
            finally:
                self._busy.pop(name, None)
            if on_event is not None:
                self._say[name] = on_event
                on_event(f"deployment '{name}' is ready ({len(config.services)} service(s))")
            # Still under the lock: a delete or reload that comes while a hook starts (opens the
            # control-plane port, say) must wait, else it stops what is not started yet and the
            # hook then starts it for a deployment that is gone.
            for hooks in self._hooks:
                try:
                    await hooks.started(deployment)
                except Exception:
                    log.exception("deployment %s: a start hook failed", name)
        return deployment

    def _refuse_if_closing(self, name: str) -> None:
        if self._closing:
            raise ShuttingDown(f"the server is stopping: deployment '{name}' was not started")

    async def _start_unless_closed(
        self, name: str, config: DeploymentConfig, on_event: EventCallback | None
    ) -> Deployment:
        """:meth:`_start` in a task of its own, which :meth:`close` cancels (closing what it started)."""
        start = asyncio.ensure_future(self._start(config, on_event))
        self._starting[name] = start
        try:
            deployment = await start
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._closing and start.cancelled() and (current is None or not current.cancelling()):
                raise ShuttingDown(f"the server is stopping: deployment '{name}' was not started") from None
            raise
        finally:
            self._starting.pop(name, None)
        if self._closing:  # up just as the server began to stop: it would outlive it
            await deployment.close()
            self._refuse_if_closing(name)
        return deployment

    async def _start(self, config: DeploymentConfig, on_event: EventCallback | None) -> Deployment:
        deployment = _ReportingDeployment(config, on_event, **self._deployment_kwargs)
        try:
            await deployment.start()
            await deployment.wait_ready(timeout=self.ready_timeout)
        except BaseException:
            with contextlib.suppress(Exception):
                await deployment.close()
            raise
        return deployment

    async def _stop(self, deployment: Deployment) -> None:
        await self._run_hooks_stopping(deployment)
        await deployment.close()

    async def _run_hooks_stopping(self, deployment: Deployment) -> None:
        for hooks in self._hooks:
            try:
                await hooks.stopping(deployment)
            except Exception:
                log.exception("deployment %s: a stop hook failed", deployment.name)

    async def delete(self, name: str, *, asked: bool = True) -> None:
        """Stop deployment ``name`` (its workers finish their tasks first) and forget it.

        While the workers finish, the deployment answers reads and those who wait for its tasks,
        and refuses new tasks (503). ``asked``: deleted on request (its ``on_event`` says so),
        not stopped with the server.

        Raises:
            DeploymentNotFound: no such deployment.
            DeploymentUnavailable: it is starting or being reloaded.
        """
        self.get(name)
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            deployment = self._running.pop(name, None)
            if deployment is None:
                raise DeploymentNotFound(name)
            self._busy[name] = "stopping"
            self._draining[name] = deployment
            say = self._say.pop(name, None) if asked else None
            if say is not None:
                say(f"{name}: deleting, its running tasks finish first")
            try:
                await self._run_hooks_stopping(deployment)
                with contextlib.suppress(LlamactlError):  # never started
                    deployment.control_plane.refuse_tasks(
                        f"deployment '{name}' is being deleted", back="it is deployed again", state="deleting"
                    )
                await deployment.stop_workers()
            finally:
                self._draining.pop(name, None)
            try:
                await deployment.close()
            finally:
                self._busy.pop(name, None)
            if say is not None:
                say(f"{name}: deleted, its workers stopped")

    def begin_shutdown(self) -> None:
        """The server is stopping: whoever waits for a task is answered now (ShuttingDown), and no
        deployment is created any more."""
        self._closing = True
        for name in self._expected:  # never started: there is no such deployment after all
            self._busy.pop(name, None)
        self._expected.clear()
        for deployment in self._running.values():
            with contextlib.suppress(LlamactlError):
                deployment.control_plane.begin_shutdown()

    async def close(self) -> None:
        """Stop every deployment (in parallel; each one's workers drain), those still being
        created or reloaded too: no deployment is created after this."""
        self._closing = True
        for start in list(self._starting.values()):
            start.cancel()  # its create closes what it had started and answers ShuttingDown
        names = list(self._locks)
        await asyncio.gather(*(self._close_one(n) for n in names), return_exceptions=True)

    async def _close_one(self, name: str) -> None:
        async with self._locks[name]:
            pass  # a create, reload or delete of it in progress ends first
        try:
            await self.delete(name, asked=False)
        except DeploymentNotFound:
            pass
        except Exception:
            log.exception("deployment %s did not stop cleanly", name)
