"""One-line questions: open a task by id, answer a task that waits for a human."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Static

from llamactl.tui.dialogs.base import Dialog

__all__ = ["AnswerDialog", "OpenTaskDialog"]


class _LineDialog(Dialog[str]):
    title_text = ""
    hint_text = ""
    placeholder = ""

    def __init__(self, question: str = "") -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(classes="box"):
            yield Static(self.title_text, classes="title", markup=False)
            if self.question:
                yield Static(self.question, id="question", markup=False)
            yield Input(placeholder=self.placeholder, id="line")
            yield Static("", id="problem", classes="error", markup=False)
            yield Static(self.hint_text, classes="hint", markup=False)

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        value = event.value.strip()
        if not value:
            self.query_one("#problem", Static).update("Type something first (escape cancels).")
            return
        self.dismiss(value)


class AnswerDialog(_LineDialog):
    """Shows the workflow's question; the answer goes back as a ``HumanResponseEvent``."""

    title_text = "The task waits for a human"
    hint_text = "enter: send the answer (as HumanResponseEvent(response=...)) · escape: cancel"
    placeholder = "your answer"


class OpenTaskDialog(_LineDialog):
    """Asks for a task id (or the start or end of one the dashboard knows)."""

    title_text = "Open a task"
    hint_text = "enter: show its record and events · escape: cancel"
    placeholder = "task id"
