"""Topic names and kinds.

Two kinds of topic share one ``publish``:

* **work topics** start with ``work.``: queue semantics. Every message published is delivered
  to exactly one consumer of the topic at a time under a lease, until it is acked (or dead-lettered
  after ``max_attempts``). Messages with the same ``key`` are delivered in publish order, and a
  key's next message is not handed out while an earlier one is leased.
* **stream topics** start with ``stream.``: log semantics. Messages get a gap-free ``seq`` from 0
  per topic; any number of subscribers read from any seq and then follow live.
"""

from __future__ import annotations

__all__ = [
    "STREAM_PREFIX",
    "WORK_PREFIX",
    "control_topic",
    "dead_letter_topic",
    "is_stream_topic",
    "is_work_topic",
    "service_topic",
    "task_input_topic",
    "validate_topic",
]

WORK_PREFIX = "work."
STREAM_PREFIX = "stream."
_DEAD_SUFFIX = ".dead"


def is_work_topic(topic: str) -> bool:
    return topic.startswith(WORK_PREFIX)


def is_stream_topic(topic: str) -> bool:
    return topic.startswith(STREAM_PREFIX)


def validate_topic(topic: str) -> None:
    """Raise ValueError unless ``topic`` is a work or stream topic of printable ASCII."""
    if not (is_work_topic(topic) or is_stream_topic(topic)):
        raise ValueError(f"topic {topic!r} must start with {WORK_PREFIX!r} or {STREAM_PREFIX!r}")
    if not topic.isascii() or not topic.isprintable() or " " in topic:
        raise ValueError(f"topic {topic!r} must be printable ASCII without spaces")


def service_topic(deployment: str, service_id: str) -> str:
    """Work topic on which a service's replicas receive their tasks."""
    return f"{WORK_PREFIX}{deployment}.svc.{service_id}"


def control_topic(deployment: str) -> str:
    """Work topic on which workers report to the control plane."""
    return f"{WORK_PREFIX}{deployment}.control"


def task_input_topic(deployment: str, task_id: str) -> str:
    """Stream topic of the events sent into a running task (and cancel requests)."""
    return f"{STREAM_PREFIX}{deployment}.task.{task_id}.in"


def dead_letter_topic(topic: str) -> str:
    """Work topic that receives a work topic's messages after ``max_attempts`` failed deliveries.

    The dead-lettered copy keeps payload, key and headers, and adds the headers
    ``x-dead-reason`` and ``x-attempts``. A dead-letter topic has no dead-letter topic of its own.
    """
    if not is_work_topic(topic):
        raise ValueError(f"only work topics have a dead-letter topic, not {topic!r}")
    return topic + _DEAD_SUFFIX


def is_dead_letter_topic(topic: str) -> bool:
    return is_work_topic(topic) and topic.endswith(_DEAD_SUFFIX)
