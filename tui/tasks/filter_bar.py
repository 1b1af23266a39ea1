"""The ``/`` filter of the tasks table: shown while typing, kept (and shown) while a filter applies."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input

__all__ = ["FilterBar"]


class FilterBar(Input):
    """Filters as you type; enter keeps the filter, escape clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "clear", "Clear filter", id="filter.clear"),
    ]

    DEFAULT_CSS = """
    FilterBar { display: none; height: 1; border: none; padding: 0 1; background: $boost; }
    FilterBar.-active { display: block; }
    FilterBar:focus { border: none; }
    """

    class FilterChanged(Message):
        def __init__(self, text: str) -> None:
            super().__init__()
            self.text = text

    class Done(Message):
        """The user left the filter (enter or escape)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(placeholder="filter: words, status:failed service:echo session:ID", id=id)

    def open(self) -> None:
        self.add_class("-active")
        self.focus()

    def action_clear(self) -> None:
        self.value = ""
        self.remove_class("-active")
        self.post_message(self.Done())

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.FilterChanged(event.value))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if not self.value.strip():
            self.remove_class("-active")
        self.post_message(self.Done())
