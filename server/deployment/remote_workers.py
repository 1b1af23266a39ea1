"""A deployment's service workers on a host of their own, against the deployment's shared queue.

What ``llamactl worker deployment.yml`` runs: the same worker processes `llamactl serve` starts
(:mod:`.launch`), under a :class:`~llamactl.server.supervisor.Supervisor` that restarts those that
crash (and kills those stopped too long: :class:`.silent_workers.StoppedWorkers`), but no API
server, control plane or state store. Workers take their tasks from the deployment's message
queue (every task carries its session's Context) and report back on its control topic, so any
`llamactl serve` of the deployment sees them as replicas::

    workers = RemoteWorkers(config, replicas={"echo": 2})
    await workers.start()
    await workers.wait_ready()
    ...
    await workers.close()  # running tasks finish first (up to stop_grace seconds)

Replica ids are ``<service>#<host>-<pid>-<n>`` (this host's short name, this process's pid), so
they never collide with another host's, nor with the ``<service>#<n>`` of `llamactl serve`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from llamactl.server.aio import cancel_and_wait
from llamactl.server.config import DeploymentConfig, ServiceConfig
from llamactl.server.deployment.dependencies import install_python_dependencies
from llamactl.server.deployment.git_sources import check_out_git_sources
from llamactl.server.deployment.launch import QUEUE_HEARTBEAT, REPORT_INTERVAL, worker_process, worker_spec
from llamactl.server.deployment.queue_config import external_queue_config
from llamactl.server.deployment.replicas import ServiceReplicas, host_label
from llamactl.server.deployment.silent_workers import StoppedWorkers, silent_limit
from llamactl.server.deployment.venv_repair import VenvRepair
from llamactl.server.errors import QueueNotShared, ServiceNotFound, WorkflowLoadError
from llamactl.server.mq.factory import connect_queue
from llamactl.server.stack_dumps import STACKS_SIGNAL
from llamactl.server.supervisor import ProcessSpec, Supervisor, SupervisorEvent

__all__ = ["RemoteWorkers", "choose_replicas", "host_label", "queue_location"]

log = logging.getLogger(__name__)

EventCallback = Callable[[str], None]
OutputCallback = Callable[[str, str], None]

_WORKER_UP = re.compile(r"^\S+ \S+ \[[^\]]+\] INFO llamactl\.server\.services: up: ")
"""The line a worker logs once it has loaded its code and told the control plane it is up."""
_WORKER_ERROR = re.compile(r"^\S+ \S+ \[[^\]]+\] ERROR \S+: (?P<error>.+)$")


def choose_replicas(
    config: DeploymentConfig, services: Sequence[str] = (), replicas: int | None = None
) -> dict[str, int]:
    """How many workers of which services to run: ``services`` (default: all of the file), each
    with ``replicas`` workers (default: the file's ``replicas``, at least 1, since a service left to
    remote workers says ``replicas: 0``).

    Raises:
        ServiceNotFound: a service the file does not have.
        ValueError: ``replicas`` below 1.
    """
    if replicas is not None and replicas < 1:
        raise ValueError(f"replicas must be at least 1, got {replicas}")
    for service_id in services:
        if service_id not in config.services:
            raise ServiceNotFound(service_id, config.name, list(config.services))
    chosen = list(dict.fromkeys(services)) or list(config.services)
    return {
        sid: replicas if replicas is not None else max(1, config.services[sid].replicas) for sid in chosen
    }


def queue_location(mq: Mapping[str, Any]) -> str:
    """Where the queue is, without credentials (for the person running the workers)."""
    if mq.get("type") == "redis":
        from llamactl.server.mq.redis.config import RedisQueueConfig  # noqa: PLC0415  (loads redis)

        return f"{RedisQueueConfig.from_mapping(mq).where} (prefix '{mq.get('prefix')}')"
    return str(mq.get("type"))


class RemoteWorkers:
    """Runs ``replicas`` (service id -> count) workers of ``config`` on this host until closed.

    Args:
        on_event: gets one sentence per replica that comes up or is restarted, in the shape
            `llamactl serve` reports its services (``demo/echo#box-41-1 (Echo) is up: pid 42``).
        worker_output: gets each line a worker writes, as ``(name, line)``.
        stop_grace: seconds :meth:`close` lets running tasks finish before killing a worker.
        allow_install: install the services' python-dependencies into the deployment's
            ``.llamactl/venv`` on this host, as `serve --allow-install` does; without it a service
            that lists any is refused (they must be installed here already).
    """

    def __init__(
        self,
        config: DeploymentConfig,
        replicas: Mapping[str, int],
        *,
        on_event: EventCallback | None = None,
        worker_output: OutputCallback | None = None,
        stop_grace: float = 30.0,
        allow_install: bool = False,
        host: str | None = None,
        queue_heartbeat: float = QUEUE_HEARTBEAT,
        report_interval: float = REPORT_INTERVAL,
    ) -> None:
        if config.message_queue.type == "zeromq":
            raise QueueNotShared(config.name)
        self.config = config
        self.replicas = dict(replicas)
        self.stop_grace = stop_grace
        self.queue_config = external_queue_config(config, heartbeat_interval=queue_heartbeat)
        self._on_event = on_event or (lambda line: log.info("%s", line))
        self._worker_output = worker_output
        self._allow_install = allow_install
        self._prefix = f"{host_label(host)}-{os.getpid()}"
        self._report_interval = report_interval
        self._python: Path | None = None
        self._venv_repair: VenvRepair | None = None
        self._supervisor: Supervisor | None = None
        self._service_replicas: ServiceReplicas | None = None
        self._stopped_workers: asyncio.Task[None] | None = None
        self._up: set[str] = set()
        self._load_errors: dict[str, str] = {}
        self._last_error: dict[str, str] = {}
        self._changed = asyncio.Event()

    def replica_id(self, service_id: str, index: int, generation: int = 1) -> str:
        """``<service>#<host>-<pid>-<n>``: unique across hosts and runs."""
        return f"{service_id}#{self._prefix}-{index}"

    @property
    def replica_ids(self) -> list[str]:
        """Every replica this runs, by service in the order given."""
        return [self.replica_id(sid, n) for sid, count in self.replicas.items() for n in range(1, count + 1)]

    def pids(self) -> dict[str, int]:
        """The pid of each replica's worker process right now (replicas between two runs are left out)."""
        if self._supervisor is None:
            return {}
        return {key: view.pid for key, view in self._supervisor.replicas().items() if view.pid is not None}

    async def start(self) -> None:
        """Install what is allowed, check the queue answers, then start every worker.

        Raises:
            DeploymentConfigError: python-dependencies without ``allow_install``, or a bad entry.
            MessageQueueError: the queue does not answer (or its config is wrong).
            WorkflowLoadError: a service has no ``path``.
        """
        chosen = {sid: self.config.service(sid) for sid in self.replicas}
        try:
            subset = self.config.model_copy(update={"services": chosen})
            await check_out_git_sources(subset, say=self._on_event, tell=self._on_event)
            self._python = await install_python_dependencies(subset, allow_install=self._allow_install)
            if self._python is not None:
                self._venv_repair = VenvRepair(
                    self._python, lambda: subset, allow_install=self._allow_install
                )
            probe = connect_queue(self.queue_config)
            await probe.start()
            await probe.close()
            self._supervisor = Supervisor(
                on_event=self._on_supervisor_event,
                stop_grace=self.stop_grace,
                output=self._output,
                before_restart=None if self._venv_repair is None else self._venv_repair.wait,
                last_words=STACKS_SIGNAL,
            )
            self._service_replicas = ServiceReplicas(self._supervisor, self._launch, self.replica_id)
            stopped = StoppedWorkers(
                self.config.name,
                supervisor=self._supervisor,
                limit=silent_limit(self.config.message_queue.lease),
            )
            self._stopped_workers = asyncio.create_task(stopped.run(), name="stopped-workers")
            for sid, service in chosen.items():
                await self._service_replicas.start(service, generation=1, count=self.replicas[sid])
        except BaseException:
            await self.close()
            raise

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Return once every worker has loaded its code and announced itself.

        Raises:
            WorkflowLoadError: a worker's code did not load before it ever came up.
            TimeoutError: not all of them were up within ``timeout`` seconds (default: the
                longest ``startup-timeout`` of their services).
        """
        if timeout is None:
            timeout = max(self.config.service(sid).startup_timeout for sid in self.replicas)
        wanted = set(self.replica_ids)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    self._changed.clear()
                    if self._load_errors:
                        key, error = next(iter(self._load_errors.items()))
                        raise WorkflowLoadError(f"{self.config.name}/{key} did not start: {error}")
                    if wanted <= self._up:
                        return
                    await self._changed.wait()
        except TimeoutError:
            down = sorted(wanted - self._up)
            reasons = [
                f"{sid}: {await self._not_ready_reason(sid, timeout, self._up)}"
                for sid in dict.fromkeys(key.split("#", 1)[0] for key in down)
            ]
            raise TimeoutError(
                f"no worker up after {timeout:.0f}s for {', '.join(down)} ({'; '.join(reasons)})"
            ) from None

    async def _not_ready_reason(self, service_id: str, waited: float, up: set[str]) -> str:
        if self._service_replicas is None:
            return "stopped"
        service = self.config.service(service_id)
        return await self._service_replicas.not_ready_reason(service, 1, waited, ready=up)

    async def close(self) -> None:
        """Stop every worker: running tasks finish first (up to ``stop_grace``), then they exit."""
        if self._venv_repair is not None:
            await self._venv_repair.close()
        if self._stopped_workers is not None:
            await cancel_and_wait(self._stopped_workers)
            self._stopped_workers = None
        if self._supervisor is not None:
            await self._supervisor.close()
        self._supervisor = self._service_replicas = None

    # --- the workers ---------------------------------------------------------------------------

    def _launch(self, service: ServiceConfig, replica_id: str, generation: int) -> ProcessSpec:
        spec = worker_spec(
            self.config,
            service,
            replica_id,
            generation,
            mq=self.queue_config,
            report_interval=self._report_interval,
        )
        return worker_process(spec, name=self._name(replica_id), python=self._python)

    def _name(self, replica_id: str) -> str:
        return f"{self.config.name}/{replica_id}"

    def _output(self, name: str, line: str) -> None:
        key = name.removeprefix(f"{self.config.name}/")
        if _WORKER_UP.match(line):
            self._up.add(key)
            self._changed.set()
            service = self.config.services[key.split("#", 1)[0]]
            pid = self.pids().get(key)
            self._on_event(f"{name} ({service.name}) is up: pid {pid}")
        elif match := _WORKER_ERROR.match(line):
            self._last_error[key] = match["error"]
        if self._worker_output is not None:
            self._worker_output(name, line)

    def _on_supervisor_event(self, event: SupervisorEvent) -> None:
        if event.kind == "exited":
            came_up = event.key in self._up
            self._up.discard(event.key)
            if event.load_error and not came_up and event.restarts == 0:
                error = self._last_error.get(event.key, "its code does not load")
                self._load_errors.setdefault(event.key, error)
            self._changed.set()
        elif event.kind == "spawn_failed":
            if self._venv_repair is not None:
                self._venv_repair.check()
        elif event.kind == "restarting":
            self._on_event(event.restart_line())
