"""How one event looks in the list: a line, or expanded, the line and its JSON."""

from __future__ import annotations

import json

from rich.console import Group, RenderableType
from rich.json import JSON
from rich.text import Text

from llamactl.client.questions import is_input_required, question_of
from llamactl.server.types import EventEnvelope
from llamactl.tui.model.events import is_attempt_marker
from llamactl.tui.palette import Palette

__all__ = ["event_line", "render_event"]


def _value_summary(value: object, width: int = 200) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def event_line(envelope: EventEnvelope, palette: Palette, *, expanded: bool = False) -> Text:
    """``#seq  [a2]  Type  {value}`` on one line; attempt markers and questions stand out."""
    mark = "▾" if expanded else "▸"
    line = Text(no_wrap=True, overflow="ellipsis", end="")
    line.append(f"{mark} #{envelope.seq:<4}", style=palette.muted)
    if is_attempt_marker(envelope):
        value = envelope.value if isinstance(envelope.value, dict) else {}
        attempt = value.get("attempt", envelope.attempt)
        details = [f"attempt {attempt}"]
        if value.get("replica_id"):
            details.append(f"on {value['replica_id']}")
        if value.get("reason"):
            details.append(str(value["reason"]))
        line.append(f"── {' · '.join(details)} ──", style=f"bold {palette.warning}")
        return line
    if envelope.attempt > 1:
        line.append(f"a{envelope.attempt} ", style=palette.warning)
    if is_input_required(envelope):
        line.append(f"{envelope.type} ", style=f"bold {palette.warning}")
        line.append(f"? {question_of(envelope)}", style=palette.warning)
        return line
    style = f"bold {palette.success}" if envelope.type == "StopEvent" else f"bold {palette.accent}"
    line.append(f"{envelope.type} ", style=style)
    line.append(_value_summary(envelope.value))
    return line


def render_event(envelope: EventEnvelope, palette: Palette, *, expanded: bool) -> RenderableType:
    """The list entry of ``envelope``: its line, plus its whole envelope as JSON when expanded."""
    line = event_line(envelope, palette, expanded=expanded)
    if not expanded:
        return line
    body = envelope.model_dump(mode="json")
    return Group(line, JSON(json.dumps(body, ensure_ascii=False, default=str), indent=2))
