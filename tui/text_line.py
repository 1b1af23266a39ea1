"""A widget for text that changes often: redrawn in place, never relaid out (its size is fixed by CSS)."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

__all__ = ["TextLine"]


class TextLine(Widget):
    """Shows a Rich ``Text``; :meth:`show` repaints only when the text changed.

    ``Static.update`` lays the whole screen out again on every call, which costs a frame's worth
    of work several times a second on a busy dashboard.
    """

    DEFAULT_CSS = """
    TextLine { height: 1; }
    """

    def __init__(self, text: Text | str = "", *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self._text = Text(text) if isinstance(text, str) else text

    @property
    def text(self) -> Text:
        return self._text

    def show(self, text: Text | str) -> None:
        value = Text(text) if isinstance(text, str) else text
        if value != self._text:
            self._text = value
            self.refresh()

    def render(self) -> Text:
        return self._text
