"""What every dialog shares: a centered box, escape to cancel."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from textual.binding import Binding, BindingType
from textual.screen import ModalScreen

__all__ = ["Dialog"]

T = TypeVar("T")


class Dialog(ModalScreen[T]):
    """A modal box in the middle of the screen; escape dismisses it with None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="dialog.cancel"),
    ]

    DEFAULT_CSS = """
    Dialog { align: center middle; }
    Dialog > .box {
        width: 72; max-width: 95%; height: auto; max-height: 90%;
        border: thick $primary; background: $surface; padding: 0 1;
    }
    Dialog .title { text-style: bold; padding: 0 0 1 0; }
    Dialog .hint { color: $text-muted; }
    Dialog .error { color: $error; }
    Dialog .buttons { height: auto; align: right middle; padding-top: 1; }
    Dialog .buttons Button { margin-left: 1; }
    """

    def action_cancel(self) -> None:
        self.dismiss(None)
