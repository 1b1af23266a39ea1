"""The banner shown while the server cannot be reached: why, when the next attempt is, how to retry now."""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.text import Text
from textual.timer import Timer
from textual.widgets import Static

__all__ = ["ConnectionBanner"]


class ConnectionBanner(Static):
    """Hidden while connected. While not, it counts down to the next attempt (a local clock only).

    ``clock`` is the wall clock (a fixed one in screenshots).
    """

    DEFAULT_CSS = """
    ConnectionBanner {
        display: none; height: auto; padding: 0 1;
        background: $error 40%; color: $text; text-style: bold;
    }
    ConnectionBanner.-shown { display: block; }
    """

    def __init__(self, clock: Callable[[], float] = time.time, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.clock = clock
        self.url = ""
        self.reason = ""
        self.retry_at = 0.0
        self.attempt = 0
        self.stale_since: float | None = None
        self.gone = False
        self.ever_connected = False
        """The feed has been live at least once (before, nothing shown is stale: nothing is shown)."""
        self._ticker: Timer | None = None

    @property
    def shown(self) -> bool:
        return self.has_class("-shown")

    def disconnected(
        self, url: str, reason: str, retry_in: float, attempt: int, *, gone: bool = False
    ) -> None:
        """``gone``: the server answers, but not for the deployment on show."""
        self.url, self.reason, self.attempt, self.gone = url, reason, attempt, gone
        self.retry_at = self.clock() + retry_in
        if self.stale_since is None and self.ever_connected:
            self.stale_since = self.clock()
        self.add_class("-shown")
        self._render_text()
        if self._ticker is None:
            self._ticker = self.set_interval(1.0, self._render_text)

    def connected(self) -> None:
        self.ever_connected = True
        self.remove_class("-shown")
        self.stale_since = None
        if self._ticker is not None:
            self._ticker.stop()
            self._ticker = None

    def _render_text(self) -> None:
        left = max(self.retry_at - self.clock(), 0.0)
        if self.gone:
            text = Text(f"⚠ {self.url}: {self.reason}. ")
            text.append(f"Looking again in {left:.0f}s; ctrl+r: now. ")
        else:
            lost = "disconnected from" if self.ever_connected else "cannot reach"
            text = Text(f"⚠ {lost} {self.url}: {self.reason}. ")
            text.append(f"Retrying in {left:.0f}s (attempt {self.attempt}); ctrl+r: retry now. ")
        if self.stale_since is not None:
            since = time.strftime("%H:%M:%S", time.localtime(self.stale_since))
            text.append(f"Data shown is stale (as of {since}).")
        self.update(text)
