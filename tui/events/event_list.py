"""The event stream of the task on show: follows the newest event until the user scrolls away."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from llamactl.server.types import EventEnvelope
from llamactl.tui.events.render import render_event
from llamactl.tui.palette import Palette

__all__ = ["EventList"]


class EventList(OptionList):
    """One entry per event; enter expands an event to its JSON.

    In follow mode (the default) the newest event stays in view. Moving up (keys or mouse) leaves
    follow mode and counts what arrives meanwhile ("+N new"); ``f`` or ``end`` returns to it.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "expand", "Expand", id="events.expand"),
        Binding("f", "follow", "Follow", id="events.follow"),
    ]

    DEFAULT_CSS = """
    EventList {
        height: 1fr; border: none; padding: 0; background: $surface;
        text-wrap: nowrap; text-overflow: ellipsis;
    }
    EventList:focus { border: none; }
    """

    class FollowChanged(Message):
        """Follow mode or the count of events that arrived out of view changed."""

        def __init__(self, following: bool, unseen: int) -> None:
            super().__init__()
            self.following = following
            self.unseen = unseen

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._palette = Palette()
        self.following = True
        self.unseen = 0
        """Events that arrived while not following."""
        self._events: dict[int, EventEnvelope] = {}
        self._expanded: set[int] = set()

    @property
    def palette(self) -> Palette:
        return self._palette

    @palette.setter
    def palette(self, palette: Palette) -> None:
        """A new theme: the events on show are drawn again in its colors."""
        if palette == self._palette:
            return
        self._palette = palette
        for index, seq in enumerate(sorted(self._events)):
            self.replace_option_prompt_at_index(
                index, render_event(self._events[seq], palette, expanded=seq in self._expanded)
            )

    # --- content -----------------------------------------------------------------------------------

    def reset(self, envelopes: Iterable[EventEnvelope] = ()) -> None:
        """Show a new task's events from scratch, in follow mode."""
        self._events = {}
        self._expanded = set()
        self.clear_options()
        self.following, self.unseen = True, 0
        self.append(envelopes)
        self._announce()

    def append(self, envelopes: Iterable[EventEnvelope]) -> None:
        fresh = [e for e in envelopes if e.seq not in self._events]
        if not fresh:
            return
        for envelope in fresh:
            self._events[envelope.seq] = envelope
        self.add_options(self._option(e) for e in fresh)
        if self.following:
            self._to_newest()
        else:
            self.unseen += len(fresh)
            self._announce()

    def drop_oldest(self, count: int) -> None:
        """Forget the ``count`` oldest events (the book dropped them to stay under its cap)."""
        if count <= 0:
            return
        oldest = sorted(self._events)[:count]
        for seq in oldest:
            del self._events[seq]
            self._expanded.discard(seq)
        highlighted = self.highlighted
        self.set_options(self._option(self._events[seq]) for seq in sorted(self._events))
        if self.following:
            self._to_newest()
        elif highlighted is not None:
            self.highlighted = max(highlighted - count, 0)

    @property
    def seqs(self) -> list[int]:
        """The seqs shown, in order."""
        return sorted(self._events)

    def _option(self, envelope: EventEnvelope) -> Option:
        expanded = envelope.seq in self._expanded
        return Option(render_event(envelope, self.palette, expanded=expanded), id=f"e{envelope.seq}")

    def _to_newest(self) -> None:
        if self.option_count:
            self.highlighted = self.option_count - 1
            self.scroll_end(animate=False, immediate=True)

    def _announce(self) -> None:
        self.post_message(self.FollowChanged(self.following, self.unseen))

    # --- follow mode -------------------------------------------------------------------------------

    def _set_following(self, following: bool) -> None:
        if following == self.following:
            return
        self.following = following
        if following:
            self.unseen = 0
            self._to_newest()
        self._announce()

    def action_follow(self) -> None:
        """Toggle follow mode (on: jump to the newest event)."""
        self._set_following(not self.following)

    def action_cursor_up(self) -> None:
        self._set_following(False)
        super().action_cursor_up()

    def action_page_up(self) -> None:
        self._set_following(False)
        super().action_page_up()  # type: ignore[no-untyped-call]

    def action_first(self) -> None:
        self._set_following(False)
        super().action_first()

    def action_last(self) -> None:
        super().action_last()
        self._set_following(True)

    def action_cursor_down(self) -> None:
        super().action_cursor_down()
        if self.highlighted == self.option_count - 1:
            self._set_following(True)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._set_following(False)

    # --- expanding ---------------------------------------------------------------------------------

    def action_expand(self) -> None:
        """Show or hide the highlighted event's whole envelope as JSON."""
        index = self.highlighted
        if index is None:
            return
        option = self.get_option_at_index(index)
        if option.id is None:
            return
        seq = int(option.id[1:])
        if seq in self._expanded:
            self._expanded.discard(seq)
        else:
            self._expanded.add(seq)
        self.replace_option_prompt_at_index(
            index, render_event(self._events[seq], self.palette, expanded=seq in self._expanded)
        )
        self.scroll_to_highlight()

    def is_expanded(self, seq: int) -> bool:
        return seq in self._expanded
