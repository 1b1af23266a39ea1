"""What in a task's events asks a person something: a workflow's ``InputRequiredEvent``, and its
question, read the same way by `llamactl run` and the dashboard."""

from __future__ import annotations

from llamactl.server.types import EventEnvelope, asks_for_input

__all__ = ["is_input_required", "question_of"]

_QUESTION_KEYS = ("prefix", "prompt", "question", "message")
"""Where an InputRequiredEvent holds its question: ``prefix`` is the workflows convention."""


def is_input_required(envelope: EventEnvelope) -> bool:
    """Whether the workflow asks a human something (``InputRequiredEvent`` or a subclass named so)."""
    return asks_for_input(envelope.type)


def question_of(envelope: EventEnvelope) -> str:
    """The question of an ``InputRequiredEvent``: its ``prefix`` (or ``prompt``, ``question``,
    ``message``), else its fields."""
    value = envelope.value
    if isinstance(value, dict):
        for key in _QUESTION_KEYS:
            text = value.get(key)
            if isinstance(text, str) and text.strip():
                return text.strip()
        return ", ".join(f"{k}={v!r}" for k, v in value.items() if not k.startswith("_")) or "(no prompt)"
    return str(value)
