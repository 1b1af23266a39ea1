"""The control plane: service registry, sessions, tasks, their event logs, and the change feed."""

from llamactl.server.control_plane.control_plane import ControlPlane
from llamactl.server.control_plane.registry import ServiceInfo, ServiceRegistry

__all__ = ["ControlPlane", "ServiceInfo", "ServiceRegistry"]
