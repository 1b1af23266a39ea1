"""Colors for statuses and states, taken from the app's theme so light and dark themes both read well."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from rich.text import Text

__all__ = ["Palette", "Themed"]


class Themed(Protocol):
    @property
    def theme_variables(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class Palette:
    """Rich styles for the dashboard's states (hex colors of the theme in use)."""

    success: str = "green"
    warning: str = "yellow"
    error: str = "red"
    accent: str = "cyan"
    muted: str = "dim"

    @classmethod
    def of(cls, app: Themed) -> Palette:
        colors = app.theme_variables
        return cls(
            success=colors.get("success", cls.success),
            warning=colors.get("warning", cls.warning),
            error=colors.get("error", cls.error),
            accent=colors.get("primary", cls.accent),
        )

    def status(self, status: str) -> str:
        """The style of a task status (``queued``, ``running``, ``completed``, ``failed``, ``cancelled``;
        ``asking``: running, waiting for a person's answer)."""
        return {
            "queued": self.warning,
            "running": f"bold {self.accent}",
            "asking": f"bold {self.warning}",
            "completed": self.success,
            "failed": f"bold {self.error}",
            "cancelled": self.muted,
        }.get(status, "")

    def service_state(self, state: str) -> str:
        """The style of a service state (``up``, ``degraded``, ``starting``, ``remote``, ``down``)."""
        return {
            "up": self.success,
            "degraded": self.warning,
            "starting": self.warning,
            "remote": self.warning,
            "down": f"bold {self.error}",
        }.get(state, "")

    def text(self, value: str, kind: str) -> Text:
        return Text(value, style=self.status(kind))
