"""The banner shown while the server cannot reach the deployment's message queue: which, since
when, why, and what it means for tasks."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import Static

from llamactl.tui.model.dashboard import QueueOutage

__all__ = ["OutageBanner"]


class OutageBanner(Static):
    """Hidden while the server reaches the queue (the dashboard itself is connected meanwhile)."""

    DEFAULT_CSS = """
    OutageBanner {
        display: none; height: auto; padding: 0 1;
        background: $warning 40%; color: $text; text-style: bold;
    }
    OutageBanner.-shown { display: block; }
    """

    @property
    def shown(self) -> bool:
        return self.has_class("-shown")

    def show(self, outage: QueueOutage | None) -> None:
        """Show ``outage``, or hide the banner when there is none."""
        self.set_class(outage is not None, "-shown")
        if outage is None:
            self.update("")
            return
        if outage.state == "unreachable":
            text = Text(f"⚠ The server cannot reach the message queue {outage.where}")
        else:
            text = Text(f"⚠ The message queue {outage.where} is {outage.state}")
        if outage.since:
            text.append(f" (since {time.strftime('%H:%M:%S', time.localtime(outage.since))})")
        if outage.error:
            text.append(f": {outage.error}")
        text.append(". New tasks are stored and wait; running ones report once it is back.")
        self.update(text)
