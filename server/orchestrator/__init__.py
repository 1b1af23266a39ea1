"""Decides which service (and through the queue's credit, which replica) takes a task, and when."""

from server.orchestrator.orchestrator import Orchestrator, Route

__all__ = ["Orchestrator", "Route"]
