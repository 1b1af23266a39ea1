"""The ``w`` screen: where a running task's code is, as its worker answered, with every stack."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from llamactl.server.types import TaskWhere

__all__ = ["WhereScreen", "where_line"]


def where_line(answer: TaskWhere) -> str:
    """``Task ID on REPLICA: PLACE`` (the line of its code it waits on, or why it cannot tell)."""
    place = answer.where or "running; its worker cannot tell where"
    return f"Task {answer.task_id} on {answer.replica_id}: {place}"


class WhereScreen(Screen[None]):
    """The answer on a screen of its own (stacks are long: they scroll); escape, q or w closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="where.close"),
        Binding("q", "close", "Close", show=False),
        Binding("w", "close", "Close", show=False),
    ]

    DEFAULT_CSS = """
    WhereScreen { align: center top; }
    WhereScreen > .box { width: 100%; height: 1fr; padding: 0 1; }
    WhereScreen .title { text-style: bold; padding: 1 0; }
    WhereScreen .hint { color: $text-muted; padding-top: 1; }
    """

    def __init__(self, answer: TaskWhere) -> None:
        super().__init__()
        self.answer = answer

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="box"):
            yield Static(where_line(self.answer), classes="title", markup=False)
            stacks = self.answer.stacks or "Its worker sent no stacks."
            yield Static(Text(stacks.rstrip()), id="stacks")
            yield Static("esc, q or w closes; w on the task again asks anew.", classes="hint", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
