"""The banner shown while the server cannot reach (or write to) the deployment's message queue or
state store: which, since when, why, and what it means for tasks."""

from __future__ import annotations

import time
from collections.abc import Sequence

from rich.text import Text
from textual.widgets import Static

from llamactl.tui.model.dashboard import BACKENDS, BackendOutage

__all__ = ["OutageBanner"]

_MEANING = {
    "message_queue": "New tasks are stored and wait; running ones report once it is back.",
    "state_store": (
        "New tasks are refused (503); what running ones report is kept and written once it is back, "
        "and this view shows changes again then."
    ),
}


class OutageBanner(Static):
    """Hidden while the server reaches its backends (the dashboard itself is connected meanwhile)."""

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

    def show(self, outages: Sequence[BackendOutage]) -> None:
        """Show one line per outage, or hide the banner when there is none."""
        self.set_class(bool(outages), "-shown")
        self.update(Text("\n").join(_line(outage) for outage in outages))


def _line(outage: BackendOutage) -> Text:
    what = f"{BACKENDS.get(outage.backend, outage.backend)} {outage.where}"
    if outage.state == "unreachable":
        text = Text(f"⚠ The server cannot reach the {what}")
    else:
        text = Text(f"⚠ The {what} is {outage.state}")
    if outage.since:
        text.append(f" (since {time.strftime('%H:%M:%S', time.localtime(outage.since))})")
    if outage.error:
        text.append(f": {outage.error}")
    text.append(f". {_MEANING.get(outage.backend, '')}".rstrip())
    return text
