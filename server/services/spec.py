"""WorkerSpec: everything a worker process needs to know, handed over by whoever starts it.

The supervisor writes it as JSON into the ``LLAMACTL_WORKER_SPEC`` environment variable of the
child (``python -m llamactl.server.services``); ``llamactl worker`` on another host builds the same thing.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["WORKER_SPEC_ENV", "WorkerSpec"]

WORKER_SPEC_ENV = "LLAMACTL_WORKER_SPEC"


class WorkerSpec(BaseModel):
    deployment: str
    service_id: str
    replica_id: str
    generation: int = 1
    source_dir: str
    """Absolute folder the import path is relative to: the service's source folder, or the
    deployment folder for Llama Deploy files whose path repeats the source folder
    (``source: src`` with ``path: src/workflow:wf``); see ``DeploymentConfig.import_root``."""
    import_path: str
    """``module:attr``, ``pkg.module:attr`` or ``sub/dir/module:attr`` (sub/dir is put on sys.path)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment (the service's ``env`` then ``env-files``, already merged)."""
    max_concurrency: int = 8
    timeout: float | None = None
    max_result_size: int = 128 * 1024**2
    """Bytes a report of a task (its result with its Context, or one event) may take, encoded."""
    max_events: int = 100_000
    """Events one run of a task may stream."""
    max_memory: int | None = None
    """Bytes of memory past which the worker takes no new task and is replaced (None: no limit)."""
    lease: float = 30.0
    heartbeat_interval: float = 1.0
    """How often the worker reports ``replica.heartbeat`` (with its in-flight count) to the control
    plane. Liveness of the connection itself is the message queue's business (its own, cheaper
    heartbeats), so this can be sparse."""
    mq: dict[str, Any]
    """Client configuration for :func:`llamactl.server.mq.factory.connect_queue`."""
    parent_pid: int | None = None
    """Exit when this process goes away (no orphans even if the server is SIGKILLed)."""

    def to_env(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_env(cls) -> WorkerSpec:
        """Read the spec and take it out of the environment: it holds the broker's keys, which the
        user code this process runs (and its children) has no business seeing."""
        raw = os.environ.pop(WORKER_SPEC_ENV, None)
        if not raw:
            raise SystemExit(f"{WORKER_SPEC_ENV} is not set: workers are started by `llamactl serve`")
        return cls.model_validate_json(raw)
