"""Runs deployments: wires config, state store, message queue, control plane and worker replicas."""

from llamactl.server.deployment.runtime import Deployment

__all__ = ["Deployment"]
