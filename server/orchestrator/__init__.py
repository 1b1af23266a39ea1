"""Decides which service (and through the queue's credit, which replica) takes a task, and when."""

from llamactl.server.orchestrator.orchestrator import Orchestrator, Route

__all__ = ["Orchestrator", "Route"]
