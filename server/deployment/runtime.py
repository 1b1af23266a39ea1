"""A running deployment: state store, message broker, control plane, and worker replicas.

The Python entry point to the engine::

    async with Deployment.from_file("deployment.yml") as deployment:
        await deployment.wait_ready()
        task = await deployment.run("echo", message="hi")
        print(task.result)

On the embedded defaults everything but the workers runs in the caller's event loop: a SQLite
state store and a ZeroMQ broker journal under the deployment's ``.llamactl/`` folder, so tasks,
sessions and event logs survive a restart. Each service's ``replicas`` run as
``python -P -m llamactl.server.services`` child processes under a
:class:`~llamactl.server.supervisor.Supervisor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from llamactl.server.aio import cancel_and_wait
from llamactl.server.config import DeploymentConfig, ServiceConfig, load_deployment_file
from llamactl.server.control_plane import ControlPlane, ServiceRegistry
from llamactl.server.deployment.dependencies import install_python_dependencies
from llamactl.server.deployment.git_sources import check_out_git_sources
from llamactl.server.deployment.hot_reload import HotReloader
from llamactl.server.deployment.launch import QUEUE_HEARTBEAT, REPORT_INTERVAL, worker_process, worker_spec
from llamactl.server.deployment.queue_config import external_queue_config
from llamactl.server.deployment.readiness import wait_ready
from llamactl.server.deployment.replicas import (
    ReloadOutcome,
    ServiceReplicas,
    host_label,
    local_replica_id,
    service_info,
    shared_replica_naming,
)
from llamactl.server.deployment.settings import control_plane_settings
from llamactl.server.deployment.silent_workers import SilentWorkers, silent_limit
from llamactl.server.deployment.venv_repair import VenvRepair
from llamactl.server.errors import LlamactlError
from llamactl.server.mq.base import MessageQueue
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.topics import control_topic
from llamactl.server.mq.zeromq.broker import ZeroMQBroker
from llamactl.server.orchestrator import Orchestrator
from llamactl.server.outage import Outage
from llamactl.server.services.spec import WorkerSpec
from llamactl.server.stack_dumps import STACKS_SIGNAL
from llamactl.server.state.base import StateStore
from llamactl.server.state.factory import open_state_store
from llamactl.server.supervisor import ProcessSpec, Supervisor, SupervisorEvent
from llamactl.server.types import ServiceStatus, TaskDefinition, TaskRecord

__all__ = ["Deployment"]

log = logging.getLogger(__name__)

OutputCallback = Callable[[str, str], None]


class Deployment:
    """One deployment's engine. Start it with ``async with`` or :meth:`start` / :meth:`close`."""

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        heartbeat_interval: float = QUEUE_HEARTBEAT,
        report_interval: float = REPORT_INTERVAL,
        stop_grace: float = 30.0,
        worker_output: OutputCallback | None = None,
        install_dependencies: bool = True,
        allow_install: bool = False,
    ) -> None:
        self.config = config
        self.name = config.name
        self.heartbeat_interval = heartbeat_interval
        """Seconds between the message queue's heartbeats (a dead worker is noticed after 3)."""
        self.report_interval = report_interval
        """Seconds between a worker's status reports to the control plane (it is declared gone after
        3 missed ones; a worker process that exits is noticed at once by the supervisor)."""
        self.stop_grace = stop_grace
        self._worker_output = worker_output
        self._install_dependencies = install_dependencies
        self._allow_install = allow_install
        """Whether python-dependencies may be installed (into the deployment's own venv)."""
        self._python: Path | None = None
        """The deployment venv's python when it has python-dependencies; else the server's."""
        self._store: StateStore | None = None
        self._broker: ZeroMQBroker | None = None
        self._queue: MessageQueue | None = None
        self._queue_config: dict[str, Any] | None = None
        self._control_plane: ControlPlane | None = None
        self._supervisor: Supervisor | None = None
        self._replicas: ServiceReplicas | None = None
        self._changed = asyncio.Event()
        self._hot_reloader: HotReloader | None = None
        self._venv_repair: VenvRepair | None = None
        self._silent_workers: asyncio.Task[None] | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kwargs: Any) -> Deployment:
        return cls(load_deployment_file(path), **kwargs)

    @property
    def control_plane(self) -> ControlPlane:
        if self._control_plane is None:
            raise LlamactlError(f"deployment '{self.name}' is not started: call start() first")
        return self._control_plane

    @property
    def queue_config(self) -> dict[str, Any]:
        """How a worker reaches the deployment's message queue."""
        if self._queue_config is None:
            raise LlamactlError(f"deployment '{self.name}' is not started: call start() first")
        return self._queue_config

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        config = self.config
        try:
            await check_out_git_sources(config, say=self.notice, tell=self.tell)
            if self._install_dependencies:
                self._python = await install_python_dependencies(config, allow_install=self._allow_install)
                if self._python is not None:
                    self._venv_repair = VenvRepair(
                        self._python, lambda: self.config, allow_install=self._allow_install
                    )
            self._store = open_state_store(config.state_store_uri)
            await self._store.start()
            if config.message_queue.type == "zeromq":
                self._broker = await self._start_broker()
                self._queue_config = self._broker.client_config
                # The control plane shares the broker's process: link them without a socket.
                self._queue = self._broker.connect_local()
            else:
                self._queue_config = external_queue_config(config, heartbeat_interval=self.heartbeat_interval)
                self._queue = connect_queue(self._queue_config)
            await self._queue.start()
            for risk in self._queue.risks:
                self.notice(f"{self.name}: {risk}")
            registry = ServiceRegistry(
                [service_info(s) for s in config.services.values()],
                heartbeat_interval=self.report_interval,
                on_change=self._on_change,
            )
            orchestrator = Orchestrator(config.name, list(config.services), config.default_service_id)
            self._control_plane = ControlPlane(
                config.name,
                store=self._store,
                queue=self._queue,
                orchestrator=orchestrator,
                registry=registry,
                settings=control_plane_settings(config),
            )
            await self._control_plane.start()
            self._supervisor = Supervisor(
                on_event=self._on_supervisor_event,
                stop_grace=self.stop_grace,
                output=self._worker_output,
                before_restart=None if self._venv_repair is None else self._venv_repair.wait,
                last_words=STACKS_SIGNAL,
            )
            naming = (
                shared_replica_naming(f"{host_label()}-{os.getpid()}")
                if self._store.shared
                else local_replica_id
            )
            self._replicas = ServiceReplicas(self._supervisor, self._process_spec, naming)
            silent = SilentWorkers(
                self.name,
                registry=registry,
                supervisor=self._supervisor,
                service_of=self._replicas.service_of.get,
                limit=silent_limit(config.message_queue.lease),
            )
            self._silent_workers = asyncio.create_task(silent.run(), name=f"silent-workers:{self.name}")
            for service in config.services.values():
                await self._replicas.start(service, generation=1)
        except BaseException:
            await self.close()
            raise

    async def _start_broker(self) -> ZeroMQBroker:
        mq = self.config.message_queue
        journal: Path | None = None
        if mq.persistent:
            # One journal per deployment: two deployments served from one folder must not share it.
            journal = self.config.state_dir / f"{self.name}.mq.sqlite"
        broker = ZeroMQBroker(
            host=mq.host,
            port=mq.port,
            pub_port=mq.pub_port or 0,
            journal_path=journal,
            max_attempts=mq.max_attempts,
            heartbeat_interval=self.heartbeat_interval,
            retention=mq.retention,
            # Only this process's control plane consumes its reports: a result goes to it
            # unjournaled (the task's message, journaled, runs again if it is lost in a crash).
            direct_topics=(control_topic(self.name),),
        )
        await broker.start()
        if broker.beyond_loopback:
            self.notice(
                f"{self.name}: the message broker listens on {broker.client_config['router']}, reachable "
                "from other machines; only workers holding this server's keys can connect"
            )
        return broker

    def notice(self, line: str) -> None:
        """Something the person running the server should see (the API server prints it)."""
        log.warning("%s", line)

    def tell(self, line: str) -> None:
        """What the deployment does while it starts (``serve`` shows it as a row)."""
        log.info("%s", line)

    def worker_spec(self, service: ServiceConfig, replica_id: str, generation: int = 1) -> WorkerSpec:
        """What one local worker of ``service`` is started with."""
        mq, interval = self.queue_config, self.report_interval
        return worker_spec(self.config, service, replica_id, generation, mq=mq, report_interval=interval)

    def _process_spec(self, service: ServiceConfig, replica_id: str, generation: int) -> ProcessSpec:
        spec = self.worker_spec(service, replica_id, generation)
        return worker_process(spec, name=f"{self.name}/{replica_id}", python=self._python)

    async def close(self) -> None:
        """Stop the workers (they finish their tasks first, up to ``stop_grace``), then the rest."""
        await self.stop_workers()
        if self._control_plane is not None:
            await self._control_plane.close()
            self._control_plane = None
        for closer in (self._queue, self._broker, self._store):
            if closer is not None:
                with contextlib.suppress(Exception):
                    await closer.close()
        self._queue = self._broker = self._store = None
        self._queue_config = None

    async def stop_workers(self) -> None:
        """Stop the workers (they finish their tasks first, up to ``stop_grace``) and what reloads
        or repairs them; the control plane and the stores stay up (:meth:`close` ends them)."""
        if self._hot_reloader is not None:
            await self._hot_reloader.close()
        if self._venv_repair is not None:
            await self._venv_repair.close()
        if self._silent_workers is not None:
            await cancel_and_wait(self._silent_workers)
            self._silent_workers = None
        if self._supervisor is not None:
            await self._supervisor.close()
            self._supervisor = self._replicas = None
            self._hot_reloader = None

    async def __aenter__(self) -> Deployment:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- status ------------------------------------------------------------------------------

    def health(self) -> dict[str, object]:
        """The control plane's health, with what the message broker ignored or could not write."""
        health = self.control_plane.health()
        if self._broker is not None:
            late = int(health.get("late_results", 0))  # type: ignore[call-overload]
            health["late_results"] = late + self._broker.late_results
            health["journal_failures"] = self._broker.journal_failures
            health["journal_healthy"] = self._broker.journal_healthy
        health.update(self.backends())
        return health

    def backends(self) -> dict[str, dict[str, object]]:
        """Whether this server reaches the deployment's message queue and state store (each
        ``{"type", "reachable", "where", "unreachable_since", "error", "state"}``)."""
        backends: dict[str, dict[str, object]] = {}
        for key, kind, outage in (
            ("message_queue", self.config.message_queue.type, self.queue_outage),
            ("state_store", self.config.state_store_uri.split(":", 1)[0], self.store_outage),
        ):
            backends[key] = {
                "type": kind,
                "reachable": outage is None,
                "where": None if outage is None else outage.where,
                "unreachable_since": None if outage is None else outage.since,
                "error": None if outage is None else outage.error,
                "state": None if outage is None else outage.state,
            }
        return backends

    @property
    def queue_outage(self) -> Outage | None:
        """The message queue's outage while this server cannot reach it, else None."""
        return None if self._queue is None else self._queue.outage

    @property
    def store_outage(self) -> Outage | None:
        """The state store's outage while this server cannot reach it, else None."""
        return None if self._store is None else self._store.outage

    def services(self) -> list[ServiceStatus]:
        return self.control_plane.registry.statuses()

    async def until(self, condition: Callable[[], bool], timeout: float | None) -> None:
        """Return once ``condition()`` holds, checking it again after every change of a replica or
        service; raise TimeoutError after ``timeout`` s. An exception from ``condition`` ends the wait."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                if condition():
                    return
                await self._changed.wait()

    async def wait_ready(
        self, timeout: float | None = None, *, all_replicas: bool = False
    ) -> list[ServiceStatus]:
        """Wait until every service has a ready replica (with ``all_replicas``: all of them).

        Raises WorkflowLoadError as soon as a service's workers report that its code does not
        load, and TimeoutError (naming the services still down, and why) once a service is not
        ready after ``timeout`` seconds (default: the service's own ``startup-timeout``).
        """
        return await wait_ready(self, timeout, all_replicas=all_replicas)

    async def not_ready_reason(self, service_id: str, waited: float) -> str:
        """Why the service has no ready replica yet (its workers exited, or still import)."""
        if self._replicas is None or self._control_plane is None:
            return "stopped"
        generation = self._control_plane.registry.generation(service_id)
        service = self.config.service(service_id)
        ready = self._control_plane.registry.ready_replica_ids(service_id)
        return await self._replicas.not_ready_reason(service, generation, waited, ready=ready)

    def _on_change(self, kind: str, data: dict[str, Any]) -> None:
        if self._control_plane is not None:
            self._control_plane.changes.emit(kind, data)
        self._changed.set()

    def _on_supervisor_event(self, event: SupervisorEvent) -> None:
        if self._control_plane is None:
            return
        service_id = self._replicas.service_of.get(event.key) if self._replicas else None
        if service_id is None:
            return
        if event.kind == "spawn_failed":
            generation = self._replicas.generation_of(event.key) if self._replicas else None
            error = f"could not start a worker: {event.error}"
            self._control_plane.registry.replica_failed(service_id, event.key, error, generation or 1)
            if self._venv_repair is not None:
                self._venv_repair.check()
        if event.kind in ("exited", "stopped", "gave_up"):
            self._control_plane.registry.replica_exited(
                service_id,
                event.key,
                requested=event.kind == "stopped" or event.replacing,
                restarts=event.restarts,
            )
        # A replacement is said by the worker, a failed start by the supervisor.
        if event.kind == "restarting" and event.exit_code is not None and not event.replacing:
            generation = self._replicas.generation_of(event.key) if self._replicas else None
            serving = self._control_plane.registry.generation(service_id)
            if event.load_error and generation is not None and generation > serving:
                log.info("%s", event.restart_line())  # a reload's new code: its outcome says it
            else:
                self.say_restarting(event)
        self._changed.set()

    def say_restarting(self, event: SupervisorEvent) -> None:
        """A replica exited on its own and starts again (a crash, a kill, code that does not load)."""
        log.warning("%s", event.restart_line())

    # --- hot reload --------------------------------------------------------------------------

    async def reload_service(self, service_id: str, *, ready_timeout: float | None = None) -> ReloadOutcome:
        """Start a new generation of a service's workers and switch to it once it is ready.

        If the new code does not load (or no new replica is ready within ``ready_timeout``,
        default: the service's ``startup-timeout``), the
        new generation is stopped and the old one keeps serving; the error is kept in the
        service's status. Otherwise the old generation stops taking tasks and finishes the ones
        it has (up to ``stop_grace`` s); a task it cannot finish is delivered again to the new one.
        """
        if self._venv_repair is not None:  # the new generation's workers need the venv
            self._venv_repair.check()
            await self._venv_repair.wait()
        return await self._reloader().reload_service(service_id, ready_timeout=ready_timeout)

    async def reconfigure(self, config: DeploymentConfig) -> list[ReloadOutcome]:
        """Apply an edited deployment file: add, remove and reload services as it says.

        Services whose settings did not change keep running untouched. A change that cannot be
        applied live (name, message queue, control plane) raises LlamactlError and changes nothing.
        """
        return await self._reloader().reconfigure(config)

    def _reloader(self) -> HotReloader:
        if self._hot_reloader is None:
            if self._replicas is None:
                raise LlamactlError(f"deployment '{self.name}' is not started: call start() first")
            self._hot_reloader = HotReloader(self, self._replicas)
        return self._hot_reloader

    # --- convenience -------------------------------------------------------------------------

    async def run(
        self,
        service: str | None = None,
        *,
        session_id: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> TaskRecord:
        """Run one task with ``kwargs`` as the workflow's input and wait for it to finish."""
        definition = TaskDefinition(input=json.dumps(kwargs), service_id=service, session_id=session_id)
        return await self.control_plane.run_task(definition, timeout=timeout)
