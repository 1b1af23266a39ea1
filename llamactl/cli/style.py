"""Colours and status glyphs, only for a person at a terminal.

Text goes out plain when the stream is not a terminal (a pipe, a file, a test), when ``NO_COLOR``
is set (https://no-color.org) or when ``TERM=dumb``: scripts and ``grep`` never see escape codes
or glyphs. Cheap to import: no rich here (it would cost ``llamactl --help`` ~70 ms).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import TextIO

import typer

__all__ = ["Styled", "error_label", "ok", "plain_terminal", "status", "styled", "use_color", "warning_label"]

_STATUS_LOOK: dict[str, tuple[str, str]] = {
    "queued": ("○", "bright_black"),
    "running": ("●", "cyan"),
    "asking": ("?", "yellow"),
    "completed": ("✓", "green"),
    "failed": ("✗", "red"),
    "cancelled": ("⊘", "yellow"),
    "ready": ("✓", "green"),
    "starting": ("○", "bright_black"),
    "draining": ("◐", "yellow"),
    "stopped": ("○", "bright_black"),
    "crashed": ("✗", "red"),
}


def plain_terminal() -> bool:
    """True when the user asked for no colour (``NO_COLOR``) or the terminal cannot show it."""
    return bool(os.environ.get("NO_COLOR")) or os.environ.get("TERM") == "dumb"


def use_color(stream: TextIO | None = None) -> bool:
    """Whether to colour what goes to ``stream`` (stdout by default): a terminal, no NO_COLOR."""
    target = stream if stream is not None else sys.stdout
    if plain_terminal():
        return False
    try:
        return target.isatty()
    except (AttributeError, ValueError):
        return False


@dataclass(frozen=True)
class Styled:
    """Text with the style it gets at a terminal; ``len()`` and alignment use the plain text."""

    text: str
    fg: str | None = None
    bold: bool = False
    glyph: str | None = None

    @property
    def plain(self) -> str:
        return self.text

    def width(self, color: bool) -> int:
        return len(self.text) + (len(self.glyph) + 1 if color and self.glyph else 0)

    def render(self, color: bool) -> str:
        if not color:
            return self.text
        shown = f"{self.glyph} {self.text}" if self.glyph else self.text
        if self.fg is None and not self.bold:
            return shown
        return typer.style(shown, fg=self.fg, bold=self.bold or None)


def styled(text: str, fg: str | None = None, *, bold: bool = False, glyph: str | None = None) -> Styled:
    return Styled(text, fg, bold, glyph)


def status(value: str) -> Styled:
    """A task, replica or service status: its glyph and colour at a terminal, the word alone elsewhere."""
    glyph, fg = _STATUS_LOOK.get(value, (None, None))
    return Styled(value, fg, False, glyph)


def ok(text: str = "ok") -> Styled:
    return Styled(text, "green", False, "✓")


def warning_label() -> Styled:
    return Styled("Warning:", "yellow", True)


def error_label() -> Styled:
    return Styled("Error:", "red", True)
