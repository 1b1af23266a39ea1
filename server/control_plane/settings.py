"""The control plane's limits, as the deployment file sets them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from llamactl.server.control_plane.retention import RetentionPolicy

__all__ = ["ControlPlaneSettings"]


@dataclass(frozen=True)
class ControlPlaneSettings:
    """The control plane's limits (from the deployment file; defaults in README)."""

    timeouts: Mapping[str, float | None] = field(default_factory=dict)
    """Per service: seconds a task may run (None: no limit)."""
    max_queued: Mapping[str, int] = field(default_factory=dict)
    """Per service: tasks waiting at most before new ones are refused (429); default below."""
    default_max_queued: int = 10_000
    wait: float = 300.0
    """Seconds ``run_task`` waits for a task of a service without a timeout."""
    max_sessions: int = 100_000
    """Sessions kept at once; ``create_session`` beyond it raises SessionLimitReached."""
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
