"""The worker processes of a deployment's services, started, swapped and stopped by generation.

A service's replicas are ``<service>#<n>`` in generation 1 and ``<service>#<n>@g<generation>``
after reloads, so two generations can run side by side while one takes over from the other. A
server whose state store others share names them ``<service>#<host>-<pid>-<n>`` (as `llamactl
worker` does): the servers share their replicas' records, keyed by id.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable, Collection
from dataclasses import dataclass

from llamactl.server.config import ServiceConfig
from llamactl.server.control_plane import ServiceInfo
from llamactl.server.stack_dumps import STACKS_SIGNAL
from llamactl.server.supervisor import ProcessSpec, RestartPolicy, Supervisor

__all__ = [
    "ReloadOutcome",
    "ReplicaNaming",
    "ServiceReplicas",
    "host_label",
    "local_replica_id",
    "service_info",
    "shared_replica_naming",
]

log = logging.getLogger(__name__)

Launch = Callable[[ServiceConfig, str, int], ProcessSpec]
ReplicaNaming = Callable[[str, int, int], str]
"""(service id, index from 1, generation) -> replica id."""

_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_-]+")


def host_label(hostname: str | None = None) -> str:
    """This host's short name, reduced to what a replica id may hold (``A-Z a-z 0-9 _ -``)."""
    short = (hostname if hostname is not None else socket.gethostname()).split(".")[0]
    return _NOT_IN_ID.sub("-", short).strip("-")[:40] or "host"


def local_replica_id(service_id: str, index: int, generation: int) -> str:
    """``<service>#<n>``, with ``@g<generation>`` after a reload: the ids `llamactl serve` gives."""
    return f"{service_id}#{index}" if generation == 1 else f"{service_id}#{index}@g{generation}"


def shared_replica_naming(prefix: str) -> ReplicaNaming:
    """``<service>#<prefix>-<n>``, with ``@g<generation>`` after a reload: the ids of a server
    whose state store others share (``prefix``: its host and pid). Each server would otherwise
    call its first worker ``#1``, and the servers' mirrored records of their replicas, keyed by
    id, would merge two workers into one."""

    def naming(service_id: str, index: int, generation: int) -> str:
        replica_id = f"{service_id}#{prefix}-{index}"
        return replica_id if generation == 1 else f"{replica_id}@g{generation}"

    return naming


def service_info(service: ServiceConfig, generation: int = 1) -> ServiceInfo:
    """What the control plane's registry keeps of a service's configuration."""
    return ServiceInfo(service.id, service.name, service.replicas, generation=generation)


@dataclass(frozen=True)
class ReloadOutcome:
    """What a reload of one service came to."""

    service_id: str
    generation: int
    ok: bool
    seconds: float
    error: str | None = None

    def describe(self) -> str:
        """One line for the server log: the service, the generation, the time or the error."""
        took = f"{self.seconds * 1000:.0f} ms"
        if self.ok:
            return f"reloaded {self.service_id} (generation {self.generation}) in {took}"
        first_line = (self.error or "unknown error").splitlines()[0]
        return (
            f"reload of {self.service_id} (generation {self.generation}) failed after {took}: "
            f"{first_line}; still serving the previous generation"
        )


class ServiceReplicas:
    """Starts and stops each service's worker processes, by generation, under a Supervisor.

    ``naming`` gives each replica its id (the supervisor's key too): ``<service>#<n>`` by default.
    """

    def __init__(
        self, supervisor: Supervisor, launch: Launch, naming: ReplicaNaming = local_replica_id
    ) -> None:
        self._supervisor = supervisor
        self._launch = launch
        self._naming = naming
        self._keys: dict[str, dict[int, list[str]]] = {}
        self.service_of: dict[str, str] = {}
        """supervisor key (= replica id) -> service id"""

    def keys(self, service_id: str, generation: int) -> list[str]:
        return list(self._keys.get(service_id, {}).get(generation, []))

    def generation_of(self, key: str) -> int | None:
        """The generation of the replica ``key`` (None: not one of ours any more)."""
        for generation, keys in self._keys.get(self.service_of.get(key, ""), {}).items():
            if key in keys:
                return generation
        return None

    def generations(self, service_id: str) -> list[int]:
        return sorted(self._keys.get(service_id, {}))

    def exit_codes(self, service_id: str, generation: int) -> list[int]:
        """The last exit codes of the generation's workers that exited (none: all still up)."""
        processes = self._supervisor.replicas()
        views = [processes[key] for key in self.keys(service_id, generation) if key in processes]
        return [view.last_exit_code for view in views if view.last_exit_code is not None]

    async def not_ready_reason(
        self, service: ServiceConfig, generation: int, waited: float, *, ready: Collection[str] = ()
    ) -> str:
        """Why the generation's workers (but those in ``ready``) are not ready yet: they exited,
        or they are still importing.

        Workers still importing are asked for their stacks first (``stack_dumps``): the lines
        they print come through the server's output before the reason, and show where the
        import is stuck.
        """
        if exits := self.exit_codes(service.id, generation):
            return f"its workers exited (last exit code {exits[-1]}): the server's output above says why"
        # every worker is still up: still in its import (it reports ready right after)
        keys = [key for key in self.keys(service.id, generation) if key not in ready]
        shown = await self._print_stacks(service, keys, waited)
        return (
            f"still importing {service.import_path}"
            + (" (where: the stack its worker printed above)" if shown else "")
            + ": does something there loop, block, or wait for a server at import time? If its "
            "code takes that long to load, raise `startup-timeout` for the service in the "
            f"deployment file (now {service.startup_timeout:g} s)"
        )

    async def _print_stacks(self, service: ServiceConfig, keys: list[str], waited: float) -> bool:
        """Have these workers print their stacks (into the server's output); True once one did."""
        processes = self._supervisor.replicas()
        keys = [key for key in keys if key in processes and processes[key].pid is not None]
        if not keys:
            return False
        log.warning(
            "%s %s of service %s still importing %s after %.0f s; %s, most recent call first:",
            "worker" if len(keys) == 1 else "workers",
            ", ".join(keys),
            service.id,
            service.import_path,
            waited,
            "its stack" if len(keys) == 1 else "their stacks",
        )
        answers = await asyncio.gather(*(self._supervisor.ask(key, STACKS_SIGNAL) for key in keys))
        return any(answers)

    async def start(self, service: ServiceConfig, generation: int, count: int | None = None) -> list[str]:
        """Start ``count`` (default: the service's ``replicas``) worker processes of ``generation``."""
        keys: list[str] = []
        for index in range(1, (service.replicas if count is None else count) + 1):
            key = self._naming(service.id, index, generation)
            self.service_of[key] = service.id
            await self._supervisor.start_replica(key, self._launch(service, key, generation), RestartPolicy())
            keys.append(key)
        self._keys.setdefault(service.id, {})[generation] = keys
        return keys

    async def stop(self, service_id: str, generation: int, grace: float | None = None) -> None:
        """Stop one generation: its workers finish their tasks (up to ``grace`` s), then exit."""
        keys = self._keys.get(service_id, {}).pop(generation, [])
        await asyncio.gather(*(self._supervisor.stop_replica(key, grace) for key in keys))
        for key in keys:
            self.service_of.pop(key, None)

    async def stop_service(self, service_id: str, grace: float | None = None) -> None:
        for generation in self.generations(service_id):
            await self.stop(service_id, generation, grace)
        self._keys.pop(service_id, None)
