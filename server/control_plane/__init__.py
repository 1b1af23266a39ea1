"""The control plane: service registry, sessions, tasks, their event logs, and the change feed."""

from llamactl.server.control_plane.control_plane import ControlPlane, ControlPlaneSettings
from llamactl.server.control_plane.registry import ServiceInfo, ServiceRegistry
from llamactl.server.control_plane.retention import RetentionPolicy

__all__ = ["ControlPlane", "ControlPlaneSettings", "RetentionPolicy", "ServiceInfo", "ServiceRegistry"]
