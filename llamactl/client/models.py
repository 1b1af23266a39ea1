"""Answers the client parses that have no model in ``llamactl.server.types``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from llamactl.server.types import ServiceStatus, TaskRecord

__all__ = ["DeploymentState", "Page"]

T = TypeVar("T")


@dataclass
class Page(Generic[T]):
    """One page of a listing: its ``items`` and the cursor of the next page (None on the last).

    Example: ``page = tasks.page(limit=20, newest_first=True)``; then
    ``tasks.page(limit=20, newest_first=True, cursor=page.next_cursor)`` while it is not None.
    """

    items: list[T] = field(default_factory=list)
    next_cursor: str | None = None


class DeploymentState(BaseModel):
    """``GET /deployments/{name}/state``: a snapshot for dashboards."""

    model_config = ConfigDict(extra="allow")

    deployment: str
    services: list[ServiceStatus] = Field(default_factory=list)
    sessions: int = 0
    tasks: dict[str, int] = Field(default_factory=dict)
    """Task counts by status (``queued``, ``running``, ...)."""
    recent_tasks: list[TaskRecord] = Field(default_factory=list)
    """The newest tasks, newest first (at most 50)."""
    changes_seq: int = 0
    """The change feed's next position: pass it to ``changes(from_seq=...)`` to follow from here."""
