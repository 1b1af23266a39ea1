"""The control plane's limits, read from a deployment file."""

from __future__ import annotations

from llamactl.server.config import DeploymentConfig
from llamactl.server.control_plane import ControlPlaneSettings, RetentionPolicy

__all__ = ["control_plane_settings"]


def control_plane_settings(config: DeploymentConfig) -> ControlPlaneSettings:
    """Timeouts, queue bounds, the default wait and retention of ``config``."""
    cp = config.control_plane
    return ControlPlaneSettings(
        timeouts={s.id: s.timeout for s in config.services.values()},
        max_queued={s.id: s.max_queued for s in config.services.values()},
        wait=cp.wait_timeout,
        max_sessions=cp.max_sessions,
        retention=RetentionPolicy(
            finished_age=cp.finished_task_retention,
            max_finished=cp.max_finished_tasks,
            changes_kept=cp.change_feed_retention,
            every=cp.prune_interval,
        ),
    )
