"""Waiting until a deployment's services have ready replicas, or saying why they do not."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from llamactl.server.config import DeploymentConfig
from llamactl.server.errors import WorkflowLoadError
from llamactl.server.types import ReplicaState, ServiceStatus

__all__ = ["Waitable", "is_ready", "wait_ready"]


class Waitable(Protocol):
    """What :func:`wait_ready` needs of a deployment."""

    @property
    def name(self) -> str: ...

    @property
    def config(self) -> DeploymentConfig: ...

    def services(self) -> list[ServiceStatus]: ...

    async def until(self, condition: Callable[[], bool], timeout: float | None) -> None: ...

    async def not_ready_reason(self, service_id: str, waited: float) -> str: ...


async def wait_ready(
    deployment: Waitable, timeout: float | None = None, *, all_replicas: bool = False
) -> list[ServiceStatus]:
    """Wait until every service has a ready replica (with ``all_replicas``: all of them).

    Raises WorkflowLoadError as soon as a service's workers report that its code does not
    load, and TimeoutError (naming the services still down, and why) once a service is not
    ready after ``timeout`` seconds (default: the service's own ``startup-timeout``).
    """
    started = time.monotonic()

    def allowed(service_id: str) -> float:
        return deployment.config.service(service_id).startup_timeout if timeout is None else timeout

    def ready() -> bool:
        statuses = deployment.services()
        for status in statuses:
            if not status.ready and status.last_error:
                raise WorkflowLoadError(
                    f"service '{status.service_id}' of deployment '{deployment.name}' "
                    f"did not start: {status.last_error}"
                )
        return all(is_ready(s, all_replicas) for s in statuses)

    while True:
        down = [s.service_id for s in deployment.services() if not is_ready(s, all_replicas)]
        waited = time.monotonic() - started
        if overdue := [sid for sid in down if waited >= allowed(sid)]:
            reasons = [await deployment.not_ready_reason(sid, waited) for sid in overdue]
            raise TimeoutError(
                f"deployment '{deployment.name}': "
                + "; ".join(
                    f"no ready replica after {allowed(sid):.0f}s for {sid} ({reason})"
                    for sid, reason in zip(overdue, reasons, strict=True)
                )
            )
        try:
            await deployment.until(ready, min((allowed(sid) for sid in down), default=0.0) - waited)
        except TimeoutError:
            continue  # a service's time is up: said above
        return deployment.services()


def is_ready(status: ServiceStatus, all_replicas: bool) -> bool:
    """The service is served: a ready replica (``all_replicas``: all it wants), or none wanted here."""
    if status.desired_replicas == 0:
        return True  # served by `llamactl worker` elsewhere: its tasks wait for them, queued
    if not all_replicas:
        return status.ready
    ready = sum(1 for r in status.replicas if r.state is ReplicaState.READY)
    return ready >= status.desired_replicas
