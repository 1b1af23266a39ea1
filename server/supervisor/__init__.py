"""Process supervision for worker replicas: spawn, watch, restart with backoff, stop, no orphans."""

from __future__ import annotations

from ._os import death_signal_hook
from .models import (
    EXIT_LOAD_ERROR,
    EXIT_REPLACE,
    EventKind,
    ProcessSpec,
    ReplicaProcess,
    ReplicaState,
    RestartPolicy,
    SupervisorEvent,
)
from .supervisor import Supervisor, prefixed_output

__all__ = [
    "EXIT_LOAD_ERROR",
    "EXIT_REPLACE",
    "EventKind",
    "ProcessSpec",
    "ReplicaProcess",
    "ReplicaState",
    "RestartPolicy",
    "Supervisor",
    "SupervisorEvent",
    "death_signal_hook",
    "prefixed_output",
]
