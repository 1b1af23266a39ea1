"""The event log of the task on show: the newest events (bounded), each seq once, and what it waits for."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from llamactl.client.questions import is_input_required
from llamactl.server.types import EventEnvelope

__all__ = [
    "ATTEMPT_MARKER",
    "EventBook",
    "is_attempt_marker",
]

ATTEMPT_MARKER = "llamactl.TaskAttempt"
"""``qualified_name`` of the marker the server logs where a retried task's new attempt starts."""


def is_attempt_marker(envelope: EventEnvelope) -> bool:
    return envelope.qualified_name == ATTEMPT_MARKER or envelope.type == "TaskAttempt"


def _is_human_response(envelope: EventEnvelope) -> bool:
    return envelope.type.endswith("HumanResponseEvent")


class EventBook:
    """Events of one task in seq order; at most ``cap`` (the oldest go first, counted in ``dropped``)."""

    def __init__(self, task_id: str, cap: int) -> None:
        self.task_id = task_id
        self.cap = cap
        self._items: deque[EventEnvelope] = deque()
        self.next_seq = 0
        """The seq to resume from: every event before it has been seen once."""
        self.dropped = 0
        self.ended = False
        self.end_status: str | None = None
        self.answered: set[int] = set()
        """Seqs of InputRequiredEvents answered from the dashboard (the answer is not always logged)."""
        self.attempt = 1
        """The attempt the newest event belongs to."""

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[EventEnvelope]:
        return iter(self._items)

    @property
    def first_seq(self) -> int:
        return self._items[0].seq if self._items else self.next_seq

    def add(self, envelopes: Iterable[EventEnvelope]) -> tuple[list[EventEnvelope], int]:
        """Append the events not seen yet; returns them, and how many old ones were dropped for room."""
        fresh: list[EventEnvelope] = []
        for envelope in envelopes:
            if envelope.seq < self.next_seq:
                continue  # seen already: a stream resumed after a reconnect overlaps
            self.next_seq = envelope.seq + 1
            self.attempt = max(self.attempt, envelope.attempt)
            self._items.append(envelope)
            fresh.append(envelope)
        dropped = 0
        while len(self._items) > self.cap:
            self._items.popleft()
            dropped += 1
        self.dropped += dropped
        return fresh, dropped

    def end(self, status: str | None) -> None:
        self.ended = True
        self.end_status = status

    def waiting_for(self) -> EventEnvelope | None:
        """The InputRequiredEvent the task waits on: the newest one with nothing after it but
        progress events, while the task runs and no answer was sent from here."""
        if self.ended:
            return None
        for envelope in reversed(self._items):
            if _is_human_response(envelope) or is_attempt_marker(envelope):
                return None
            if is_input_required(envelope):
                return None if envelope.seq in self.answered else envelope
        return None
