"""The ``?`` screen: every key of the dashboard, by region, built from the widgets' own bindings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

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


class HelpScreen(Screen[None]):
    """Keys by region, on a screen of its own (drawing nothing behind it keeps it quick to open);
    escape, q or ? closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="help.close"),
        Binding("q", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False, key_display="?"),
    ]

    DEFAULT_CSS = """
    HelpScreen { align: center top; }
    HelpScreen > .box { width: 84; max-width: 100%; height: 1fr; padding: 0 1; }
    HelpScreen .title { text-style: bold; padding: 1 0; }
    HelpScreen .hint { color: $text-muted; padding-top: 1; }
    """

    def __init__(self, sections: Sequence[Section]) -> None:
        super().__init__()
        self.sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="box"):
            yield Static("Keys of the dashboard", classes="title")
            yield Static(self._text(), id="keys")
            yield Static(
                "Also: arrows, page up/down, home/end move in lists; tab and shift+tab move between "
                "regions; ctrl+p opens the command palette (every action, and the theme).",
                classes="hint",
                markup=False,
            )

    def action_close(self) -> None:
        self.dismiss(None)

    def _text(self) -> Text:
        # Plain aligned text, not a Rich Table: it renders several times faster, so ? opens at once.
        text = Text()
        for title, bindings in self.sections:
            text.append(f"{title}\n", style="bold underline")
            for binding in bindings:
                text.append(f"  {key_label(binding):<10}", style="bold")
                text.append(f"{binding.tooltip or binding.description}\n")
            text.append("\n")
        text.rstrip()
        return text
