"""The events region: which task is on show (status, result, the question it waits on) and its events."""

from __future__ import annotations

import json
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Static

from llamactl.client.questions import question_of
from llamactl.server.types import EventEnvelope, TaskRecord
from llamactl.tui.events.event_list import EventList
from llamactl.tui.model.events import EventBook
from llamactl.tui.model.format import duration, one_line
from llamactl.tui.model.tasks import TaskRow
from llamactl.tui.palette import Palette
from llamactl.tui.text_line import TextLine

__all__ = ["EventsPanel", "TaskHeader"]

NOTHING_SHOWN = "No task on show: pick one in the tasks table, or press r to run one."


class TaskHeader(TextLine):
    """Two lines: the task's identity and status; then its result, error or pending question."""

    DEFAULT_CSS = """
    TaskHeader { height: 2; padding: 0 1; background: $boost; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(NOTHING_SHOWN, id=id)
        self.palette = Palette()

    def show_task(
        self, row: TaskRow | None, record: TaskRecord | None, book: EventBook | None, now: float
    ) -> None:
        if row is None or book is None:
            super().show(NOTHING_SHOWN)
            return
        p = self.palette
        first = Text(no_wrap=True, overflow="ellipsis")
        first.append(f"{row.status.value} ", style=p.status(row.status.value))
        first.append(row.service_id, style=f"bold {p.accent}")
        if row.attempts > 1:
            first.append(f" · attempt {row.attempts}", style=p.warning)
        if row.replica_id:
            first.append(f" · on {row.replica_id}", style=p.muted)
        took = row.duration(now)
        if took is not None:
            first.append(f" · {duration(took)}", style=p.muted)
        first.append(f" · {row.task_id}", style="bold")
        second = Text(no_wrap=True, overflow="ellipsis")
        waiting = book.waiting_for()
        if waiting is not None and not row.status.is_final:
            second.append("⌨ waiting for a human: ", style=f"bold {p.warning}")
            second.append(question_of(waiting), style=p.warning)
            second.append("  (a: answer)", style=p.muted)
        elif row.status.value == "completed":
            result = record.result if record is not None and record.task_id == row.task_id else None
            second.append("→ result: ", style=f"bold {p.success}")
            second.append(one_line(_result_text(result), 300) if result is not None else "…")
        elif row.error:
            second.append("✗ ", style=f"bold {p.error}")
            second.append(one_line(row.error, 300), style=p.error)
        else:
            second.append(f"session {row.session_id}", style=p.muted)
        both = Text("\n").join([first, second])
        both.no_wrap, both.overflow = True, "ellipsis"
        super().show(both)


def _result_text(result: object) -> str:
    return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)


class EventsPanel(Vertical):
    """The task on show and its event stream; see :class:`EventList` for follow mode."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "app.answer", "Answer", id="events.answer"),
    ]

    DEFAULT_CSS = """
    EventsPanel { height: 1fr; }
    EventsPanel > #unseen {
        display: none; dock: bottom; height: 1; padding: 0 1;
        background: $warning 30%; color: $text; text-style: bold;
    }
    EventsPanel > #unseen.-shown { display: block; }
    """

    def compose(self) -> ComposeResult:
        yield TaskHeader(id="task-header")
        yield EventList(id="event-list")
        yield Static("", id="unseen")

    @property
    def header(self) -> TaskHeader:
        return self.query_one(TaskHeader)

    @property
    def events(self) -> EventList:
        return self.query_one(EventList)

    def start(self, book: EventBook) -> None:
        """A new task is on show: its events so far (usually none yet)."""
        self.events.reset(book)

    def add(self, fresh: list[EventEnvelope], dropped: int) -> None:
        # Appended first: a batch bigger than the cap drops some of its own events, not only
        # those shown before it.
        self.events.append(fresh)
        self.events.drop_oldest(dropped)

    def on_event_list_follow_changed(self, event: EventList.FollowChanged) -> None:
        event.stop()
        marker = self.query_one("#unseen", Static)
        marker.set_class(not event.following and event.unseen > 0, "-shown")
        marker.update(f"+{event.unseen} new · f: follow")
