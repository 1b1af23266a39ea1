"""Which service runs a task, and when.

* **Service**: the task's ``service_id``, else the deployment's default service. An unknown
  service or no service at all is the caller's mistake and says so.
* **When**: the tasks of one session share a workflow Context, so they run one after another
  in the order they were created; a task is handed out only once every earlier task of its
  session has finished. Tasks of different sessions run in parallel.
* **Replica**: the message queue hands each task to a replica that has asked for work
  (credit-based delivery: a replica asks for as many tasks as it has free slots), so the
  replica with spare capacity gets it; a replica that is draining (reload, shutdown) stops asking.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from llamactl.server.errors import InvalidRequest, ServiceNotFound
from llamactl.server.mq import topics
from llamactl.server.types import TaskRecord, TaskStatus

__all__ = ["Orchestrator", "Route"]


@dataclass(frozen=True, slots=True)
class Route:
    service_id: str
    topic: str


class Orchestrator:
    def __init__(self, deployment: str, services: Iterable[str], default_service: str | None) -> None:
        self.deployment = deployment
        self._services = list(services)
        self.default_service = default_service

    def set_services(self, services: Iterable[str], default_service: str | None) -> None:
        self._services = list(services)
        self.default_service = default_service

    def route(self, service_id: str | None) -> Route:
        """The service and topic for a task that asks for ``service_id`` (None: the default)."""
        chosen = service_id or self.default_service
        if chosen is None:
            raise InvalidRequest(
                f"The task names no service and deployment '{self.deployment}' has no default service: "
                f"pass one of {', '.join(self._services) or '(none)'} as service_id"
            )
        if chosen not in self._services:
            raise ServiceNotFound(chosen, self.deployment, self._services)
        return Route(service_id=chosen, topic=topics.service_topic(self.deployment, chosen))

    @staticmethod
    def next_in_session(tasks: Sequence[TaskRecord], dispatched: set[str]) -> TaskRecord | None:
        """The task of a session to hand out now, if any.

        ``tasks`` are the session's tasks in creation order; ``dispatched`` the ids already handed
        out. None while a handed-out task is unfinished, or when nothing waits.
        """
        for task in tasks:
            if task.status.is_final:
                continue
            if task.task_id in dispatched:
                return None
            if task.status is TaskStatus.QUEUED:
                return task
        return None
