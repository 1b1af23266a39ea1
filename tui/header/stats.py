"""The top line: server and deployment, connection state, task counters and a tasks/s sparkline."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Sparkline, Static

from llamactl.tui.model.dashboard import DashboardModel
from llamactl.tui.palette import Palette
from llamactl.tui.text_line import TextLine

__all__ = ["StatsBar"]


class StatsBar(Horizontal):
    """``llamactl · demo @ 127.0.0.1:4501 ● live   q 3 r 1 ✓ 120 ✗ 2   ▁▂▅▇ 12.4/s``"""

    DEFAULT_CSS = """
    StatsBar { height: 1; background: $panel; }
    StatsBar > #where { width: auto; padding: 0 1; }
    StatsBar > #counters { width: 1fr; padding: 0 1; }
    StatsBar > Sparkline { width: 24; margin: 0 1; }
    StatsBar > #rate { width: 9; text-align: right; padding-right: 1; }
    StatsBar.-compact > Sparkline { width: 10; }
    """

    def __init__(self, model: DashboardModel, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.model = model
        self.palette = Palette()
        self.url = ""
        self.deployment: str | None = None
        self.connection = "connecting"
        self._compact = False

    def compose(self) -> ComposeResult:
        yield Static(id="where")
        yield TextLine(id="counters")
        yield Sparkline([0.0], summary_function=max, id="throughput")
        yield TextLine(id="rate")

    @property
    def compact(self) -> bool:
        """Narrow terminals: no server address, shorter labels, a shorter sparkline."""
        return self._compact

    @compact.setter
    def compact(self, value: bool) -> None:
        if value != self._compact:
            self._compact = value
            self.set_class(value, "-compact")
            self.show_connection(self.url, self.deployment, self.connection)
            self.show_counts()

    def show_connection(self, url: str, deployment: str | None, state: str) -> None:
        """``state``: ``live``, ``connecting``, ``disconnected`` or ``gone`` (no such deployment)."""
        self.url, self.deployment, self.connection = url, deployment, state
        where = Text("" if self.compact else "llamactl · ", style="bold")
        where.append(f"{deployment or '?'}", style="bold")
        if not self.compact:
            host = url.removeprefix("http://").removeprefix("https://")
            where.append(f" @ {host}", style=self.palette.muted)
        where.append(" ")
        style = self.palette.success if state == "live" else self.palette.warning
        if state in ("disconnected", "gone"):
            style = self.palette.error
        where.append(f"● {state}", style=style)
        self.query_one("#where", Static).update(where)

    def show_counts(self) -> None:
        counts = self.model.counts
        p = self.palette
        text = Text(no_wrap=True, overflow="ellipsis")
        labels = (
            (("queued", "q"), ("running", "r"), ("completed", "done"), ("failed", "fail"))
            if self.compact
            else (("queued", "queued"), ("running", "running"), ("completed", "done"), ("failed", "failed"))
        )
        for name, label in labels:
            if text:
                text.append("  " if not self.compact else " ")
            text.append(f"{label} ", style=p.muted)
            text.append(f"{counts.get(name, 0):,}", style=p.status(name) if counts.get(name) else "")
        self.query_one("#counters", TextLine).show(text)

    def show_throughput(self) -> None:
        now = self.model.now()
        series = self.model.throughput.series(now)
        sparkline = self.query_one(Sparkline)
        if sparkline.data != series:
            sparkline.data = series
        self.query_one("#rate", TextLine).show(f"{self.model.throughput.rate(now):.1f}/s")
