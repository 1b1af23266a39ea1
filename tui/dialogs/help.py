"""The ``?`` screen: every key of the dashboard, by region, built from the widgets' own bindings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.widgets import Static

from llamactl.tui.dialogs.base import Dialog

__all__ = ["HelpScreen", "bindings_of", "key_label"]

Section = tuple[str, Sequence[Binding]]


def bindings_of(owner: type) -> list[Binding]:
    """The ``Binding`` s a class declares itself (not those it inherits)."""
    found: list[Binding] = []
    for item in owner.__dict__.get("BINDINGS", []):
        if isinstance(item, Binding):
            found.append(item)
    return found


def key_label(binding: Binding) -> str:
    key = binding.key_display or binding.key
    return {"slash": "/", "question_mark": "?", "escape": "esc"}.get(key, key)


class HelpScreen(Dialog[None]):
    """Keys by region; escape, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "cancel", "Close", show=False),
        Binding("question_mark", "cancel", "Close", show=False, key_display="?"),
    ]

    DEFAULT_CSS = """
    HelpScreen > .box { width: 84; height: 90%; }
    HelpScreen VerticalScroll { height: 1fr; }
    """

    def __init__(self, sections: Sequence[Section]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="box"):
            yield Static("Keys", classes="title")
            yield Static(self._table(), id="keys")
            yield Static(
                "Also: arrows, page up/down, home/end move in lists; tab and shift+tab move between "
                "regions; ctrl+p opens the command palette (every action, and the theme).",
                classes="hint",
                markup=False,
            )

    def _table(self) -> Table:
        table = Table(show_header=False, box=None, padding=(0, 1), expand=True)
        table.add_column("key", style="bold", width=10, no_wrap=True)
        table.add_column("what", ratio=1)
        for title, bindings in self.sections:
            table.add_row(Text(title, style="bold underline"), "")
            for binding in bindings:
                table.add_row(key_label(binding), Text(binding.tooltip or binding.description))
            table.add_row("", "")
        return table
