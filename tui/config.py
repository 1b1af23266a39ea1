"""The dashboard's settings: where the server is, which deployment, and the caps that bound its memory."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DashboardConfig"]


@dataclass(frozen=True)
class DashboardConfig:
    """Everything `llamactl tui` can be told; every field has a default.

    Example::

        DashboardConfig(server="http://127.0.0.1:4501", deployment="demo", max_tasks=5_000)
    """

    server: str | None = None
    """The server's URL; None: ``$LLAMACTL_SERVER``, else ``http://127.0.0.1:4501``."""
    token: str | None = None
    """The bearer token; None: ``$LLAMACTL_API_TOKEN``."""
    deployment: str | None = None
    """The deployment to show; None: the server's only one (or a picker when it runs several)."""
    max_tasks: int = 2_000
    """Tasks kept in memory (the newest; finished ones go first)."""
    max_rows: int = 300
    """Rows the tasks table shows at once (the first ones in its sort order, after the filter)."""
    max_events: int = 2_000
    """Events kept for the task on show (the newest)."""
    max_sessions: int = 1_000
    """Sessions kept in memory (the newest)."""
    tree_sessions: int = 25
    """Sessions the state tree shows with their Context size (the newest, and the selected one)."""
    retry_initial: float = 0.5
    """Seconds before the first reconnect attempt; doubles after each failure..."""
    retry_max: float = 10.0
    """...up to this many seconds."""
    stats_interval: float = 1.0
    """While changes flow, the counters are fetched again at most this often (never when idle)."""
    theme: str | None = None
    """A Textual theme name (``textual-dark``, ``textual-light``, ...); None: Textual's default."""

    def __post_init__(self) -> None:
        for name in ("max_tasks", "max_rows", "max_events", "max_sessions", "tree_sessions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.retry_initial <= 0 or self.retry_max < self.retry_initial:
            raise ValueError(
                "retry_initial must be > 0 and at most retry_max, "
                f"got {self.retry_initial} and {self.retry_max}"
            )
