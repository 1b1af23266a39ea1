"""The form to run a task: which service, in which session, with what input."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Input, Label, Select, Static

from llamactl.tui.dialogs.base import Dialog

__all__ = ["NEW_SESSION", "RunRequest", "RunTaskDialog", "parse_input"]

NEW_SESSION = "__new__"


@dataclass(frozen=True)
class RunRequest:
    """What the form asks for: ``service`` None means the default service, ``session_id`` None a new one."""

    service: str | None
    input: dict[str, Any] = field(default_factory=dict)
    session_id: str | None = None


def parse_input(text: str) -> dict[str, Any]:
    """The task input from what was typed: a JSON object, nothing (``{}``), or a message.

    ``hi`` becomes ``{"message": "hi"}`` as with ``llamactl run "hi"``. Raises ValueError with a
    message that says how to fix malformed JSON.
    """
    text = text.strip()
    if not text:
        return {}
    if not text.startswith("{"):
        return {"message": text}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(
            f'the input is not valid JSON ({exc}): write an object like {{"message": "hi"}}'
        ) from None
    if not isinstance(value, dict):
        raise ValueError(  # noqa: TRY004 (a message for the form, not a programming error)
            'the input must be a JSON object of the workflow\'s arguments, like {"count": 3}'
        )
    return value


class RunTaskDialog(Dialog[RunRequest]):
    """Service, session and input; enter (or ctrl+s) runs it, escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "submit", "Run", id="run.submit"),
    ]

    def __init__(
        self, services: list[str], service: str | None, sessions: list[str], session: str | None
    ) -> None:
        super().__init__()
        self.services = services
        self.service = service
        self.sessions = sessions
        self.session = session

    def compose(self) -> ComposeResult:
        with Vertical(classes="box"):
            yield Static("Run a task", classes="title")
            yield Label("Service")
            yield Select(
                [(s, s) for s in self.services],
                value=self.service if self.service in self.services else Select.NULL,
                prompt="the default service",
                id="service",
            )
            yield Label("Session")
            session_options = [("a new session", NEW_SESSION)] + [(f"session {s}", s) for s in self.sessions]
            yield Select(
                session_options,
                value=self.session if self.session in self.sessions else NEW_SESSION,
                allow_blank=False,
                id="session",
            )
            yield Label("Input")
            yield Input(placeholder='{"message": "hi"}  or just: hi', id="input")
            yield Static("", id="problem", classes="error", markup=False)
            yield Static(
                'A JSON object of the workflow\'s arguments; plain text is sent as {"message": ...}.',
                classes="hint",
                markup=False,
            )
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Run (enter)", id="run", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#input", Input).focus()

    def action_submit(self) -> None:
        try:
            value = parse_input(self.query_one("#input", Input).value)
        except ValueError as exc:
            self.query_one("#problem", Static).update(str(exc))
            return
        service = self.query_one("#service", Select).value
        session = self.query_one("#session", Select).value
        self.dismiss(
            RunRequest(
                service=service if isinstance(service, str) else None,
                input=value,
                session_id=session if isinstance(session, str) and session != NEW_SESSION else None,
            )
        )

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "run":
            self.action_submit()
        else:
            self.dismiss(None)
