"""How a service's worker process is launched: its WorkerSpec and the supervisor's ProcessSpec.

Shared by ``llamactl serve`` (:class:`~llamactl.server.deployment.runtime.Deployment`) and
``llamactl worker`` (:class:`~llamactl.server.deployment.remote_workers.RemoteWorkers`), so a
worker on another host runs exactly as one beside the server does.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from llamactl.server.config import DeploymentConfig, ServiceConfig
from llamactl.server.errors import WorkflowLoadError
from llamactl.server.services.command import SERVER_SECRETS, START_ENV, worker_command
from llamactl.server.services.spec import WORKER_SPEC_ENV, WorkerSpec
from llamactl.server.supervisor import ProcessSpec

__all__ = ["QUEUE_HEARTBEAT", "REPORT_INTERVAL", "SERVER_SECRETS", "worker_process", "worker_spec"]

QUEUE_HEARTBEAT = 1.0
"""Seconds between the message queue's heartbeats (a dead worker is noticed after about 3)."""
REPORT_INTERVAL = 5.0
"""Seconds between a worker's status reports to the control plane (gone after 3 missed ones)."""


def worker_spec(
    config: DeploymentConfig,
    service: ServiceConfig,
    replica_id: str,
    generation: int = 1,
    *,
    mq: dict[str, Any],
    report_interval: float = REPORT_INTERVAL,
) -> WorkerSpec:
    """What one worker of ``service`` needs: its code, env, limits and how to reach the queue.

    Raises:
        WorkflowLoadError: the service has no ``path``.
    """
    return WorkerSpec(
        deployment=config.name,
        service_id=service.id,
        replica_id=replica_id,
        generation=generation,
        source_dir=str(config.import_root(service.id)),
        import_path=_require_import_path(service),
        env=config.service_env(service.id),
        max_concurrency=service.max_concurrency,
        timeout=service.timeout,
        max_result_size=service.max_result_size,
        max_events=service.max_events,
        max_memory=service.max_memory,
        lease=config.message_queue.lease,
        heartbeat_interval=report_interval,
        mq=mq,
        parent_pid=os.getpid(),
    )


def worker_process(spec: WorkerSpec, *, name: str, python: Path | None = None) -> ProcessSpec:
    """The command that runs ``spec`` (``python -P -m llamactl.server.services``) in its source folder.

    ``python``: the deployment venv's interpreter when it has python-dependencies, else ours.
    """
    return ProcessSpec(
        name=name,
        argv=worker_command(python),
        env={WORKER_SPEC_ENV: spec.to_env(), **START_ENV},
        cwd=Path(spec.source_dir),
        hidden_env=SERVER_SECRETS,
    )


def _require_import_path(service: ServiceConfig) -> str:
    if not service.import_path:
        raise WorkflowLoadError(
            f"service '{service.id}' has no `path` (or `import-path`): set it to module:attr, "
            "e.g. `path: workflow:echo_workflow`"
        )
    return service.import_path
