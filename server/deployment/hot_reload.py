"""Hot reload of a running deployment: swap a service's workers for a new generation, and apply
an edited deployment file. Used by :class:`~llamactl.server.deployment.runtime.Deployment`."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from llamactl.server.config import DeploymentConfig, ServiceConfig
from llamactl.server.deployment.git_sources import check_out_git_sources
from llamactl.server.deployment.launch import worker_spec
from llamactl.server.deployment.replicas import ReloadOutcome, ServiceReplicas, service_info
from llamactl.server.deployment.settings import control_plane_settings
from llamactl.server.errors import LlamactlError

if TYPE_CHECKING:
    from llamactl.server.deployment.runtime import Deployment

__all__ = ["HotReloader"]

log = logging.getLogger(__name__)


class HotReloader:
    """Generation swaps and reconfiguration for one deployment (one swap per service at a time)."""

    def __init__(self, deployment: Deployment, replicas: ServiceReplicas) -> None:
        self._deployment = deployment
        self._replicas = replicas
        self._locks: dict[str, asyncio.Lock] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Wait for old generations still finishing their tasks (each bounded by ``stop_grace``)."""
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)

    async def reload_service(self, service_id: str, *, ready_timeout: float | None = None) -> ReloadOutcome:
        """See :meth:`Deployment.reload_service`."""
        registry = self._deployment.control_plane.registry
        lock = self._locks.setdefault(service_id, asyncio.Lock())
        async with lock:
            service = self._deployment.config.service(service_id)
            old = registry.generation(service_id)
            new = max([old, *self._replicas.generations(service_id)]) + 1
            started = time.monotonic()
            await self._replicas.start(service, new)
            timeout = service.startup_timeout if ready_timeout is None else ready_timeout
            error = await self._wait_generation(service, new, timeout)
            took = time.monotonic() - started
            if error is not None:
                keys = self._replicas.keys(service_id, new)
                await self._replicas.stop(service_id, new, grace=1.0)
                for key in keys:
                    registry.forget_replica(service_id, key)
                if registry.has_service(service_id):
                    registry.reload_failed(service_id, new, error, time.time(), took)
                return ReloadOutcome(service_id, new, ok=False, seconds=took, error=error)
            registry.reloaded(service_info(service, generation=new), time.time(), time.monotonic() - started)
            # The old generation is told to stop at once; finishing its running tasks happens in
            # the background, so a long task there cannot hold up the next reload (of any
            # service). The reload is reported only once the old replicas take no new tasks:
            # from then on, every new task runs the new code.
            retired = [g for g in self._replicas.generations(service_id) if g != new]
            old_keys = [key for g in retired for key in self._replicas.keys(service_id, g)]
            for generation in retired:
                retiring = asyncio.create_task(self._retire(service_id, generation))
                self._retiring.add(retiring)
                retiring.add_done_callback(self._retiring.discard)
            await self._wait_not_taking(service_id, old_keys, timeout=10.0)
            return ReloadOutcome(service_id, new, ok=True, seconds=time.monotonic() - started)

    async def _retire(self, service_id: str, generation: int) -> None:
        keys = self._replicas.keys(service_id, generation)
        try:
            await self._replicas.stop(service_id, generation, grace=self._deployment.stop_grace)
        except Exception:
            log.exception("stopping generation %d of %s failed", generation, service_id)
        for key in keys:
            self._deployment.control_plane.registry.forget_replica(service_id, key)

    async def _wait_not_taking(self, service_id: str, replica_ids: list[str], timeout: float) -> None:
        """Wait until none of ``replica_ids`` takes new tasks (draining, stopped or gone)."""
        registry = self._deployment.control_plane.registry
        try:
            await self._deployment.until(lambda: not registry.taking_tasks(service_id, replica_ids), timeout)
        except TimeoutError:
            log.warning("%s: the old workers did not confirm they stopped within %.0fs", service_id, timeout)

    async def _wait_generation(self, service: ServiceConfig, generation: int, timeout: float) -> str | None:
        """None once all replicas of the generation are ready; else the error that stopped them."""
        registry = self._deployment.control_plane.registry
        service_id, replicas = service.id, service.replicas
        failure: list[str] = []

        def settled() -> bool:
            if not registry.has_service(service_id):  # reloads run side by side with file edits
                failure.append("the service was removed from the deployment file while it reloaded")
                return True
            ready, error = registry.generation_state(service_id, generation)
            if error is not None:
                failure.append(error)
            return error is not None or ready >= replicas

        try:
            await self._deployment.until(settled, timeout)
        except TimeoutError:
            ready = registry.ready_replica_ids(service_id)
            why = await self._replicas.not_ready_reason(service, generation, timeout, ready=ready)
            return f"no replica of the new code was ready after {timeout:.0f}s ({why})"
        return failure[0] if failure else None

    async def reconfigure(self, config: DeploymentConfig) -> list[ReloadOutcome]:
        """See :meth:`Deployment.reconfigure`."""
        old = self._deployment.config
        if config.name != old.name:
            raise LlamactlError(
                f"the deployment's name changed from '{old.name}' to '{config.name}': "
                "a running deployment cannot be renamed; restart `llamactl serve` to apply it"
            )
        for part in ("message_queue", "control_plane"):
            if getattr(config, part) != getattr(old, part):
                raise LlamactlError(
                    f"the '{part.replace('_', '-')}' section changed: restart `llamactl serve` to apply it"
                )
        # A new service's git source, or one whose source moved, is fetched; the others keep theirs.
        moved = [
            sid
            for sid, s in config.services.items()
            if sid not in old.services or old.services[sid].source != s.source
        ]
        await check_out_git_sources(
            config, say=self._deployment.notice, tell=self._deployment.tell, only=moved
        )
        new_env = {sid: config.service_env(sid) for sid in config.services}  # a bad env file stops here
        added = [s for s in config.services if s not in old.services]
        changed = [
            sid
            for sid, service in config.services.items()
            if sid not in added and (service != old.services[sid] or new_env[sid] != _env_or_none(old, sid))
        ]
        for service_id in (*added, *changed):
            # What its workers start with (its folder, its path) stops the file here, not halfway.
            if config.services[service_id].replicas:
                worker_spec(config, config.services[service_id], service_id, mq=self._deployment.queue_config)
        cp = self._deployment.control_plane
        self._deployment.config = config
        cp.orchestrator.set_services(list(config.services), config.default_service_id)
        cp.reconfigure(control_plane_settings(config))
        name = config.name
        removed = [s for s in old.services if s not in config.services]
        for service_id in removed:
            await self._replicas.stop_service(service_id, grace=self._deployment.stop_grace)
            cp.registry.remove_service(service_id)
            # Its workers have finished what they held: what is left waits for nobody.
            failed = await cp.service_removed(service_id)
            self._deployment.tell(
                f"{name}/{service_id}: removed from the deployment file, its workers stopped"
                + (f"; {failed} queued task(s) of it failed" if failed else "")
            )
        for service_id in added:
            service = config.services[service_id]
            cp.registry.add_service(service_info(service))
            await cp.service_added_again(service_id)
            await self._replicas.start(service, generation=1)
        if not (removed or added or changed):
            self._deployment.tell(f"{name}: applied, no service had to restart")
        # Side by side: one service's imports (or its hang, until the ready timeout) wait for no other's.
        return list(await asyncio.gather(*(self.reload_service(service_id) for service_id in changed)))


def _env_or_none(config: DeploymentConfig, service_id: str) -> dict[str, str] | None:
    try:
        return config.service_env(service_id)
    except LlamactlError:
        return None
