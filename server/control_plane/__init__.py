"""The control plane: service registry, sessions, tasks, their event logs, and the change feed."""

from llamactl.server.control_plane.control_plane import ControlPlane
from llamactl.server.control_plane.registry import ServiceInfo, ServiceRegistry
from llamactl.server.control_plane.retention import RetentionPolicy
from llamactl.server.control_plane.settings import ControlPlaneSettings

__all__ = ["ControlPlane", "ControlPlaneSettings", "RetentionPolicy", "ServiceInfo", "ServiceRegistry"]
