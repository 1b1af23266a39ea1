"""What the control plane and the service workers say to each other over the message queue.

Topics (see :mod:`llamactl.server.mq.topics`):

* ``work.<deployment>.svc.<service>``: the control plane publishes one :class:`TaskMessage`
  per task (``msg_id = "<task_id>:start"``, ``key = session_id`` so the tasks of one session run
  one after another and share Context). The service's replicas compete for them.
* ``work.<deployment>.control``: every worker publishes :class:`WorkerMessage` s here (replica up,
  heartbeat, stopping; task started, event, completed, failed). ``key = task_id`` for task
  messages so one task's events reach the control plane in order; the control plane consumes
  them and writes the state store.
* ``stream.<deployment>.task.<task_id>.in``: the control plane publishes :class:`TaskInput` s
  (events sent in by a human, cancel requests); the worker running the task subscribes from
  seq 0, so nothing sent before it started listening is lost. Whether an event sent in reached
  the run comes back as an event of the task (:data:`EVENT_DELIVERED`, :data:`EVENT_REJECTED`).

Idempotency keys make redelivery harmless: ``<task_id>:start``, ``<task_id>:<attempt>:ev:<n>``,
``<task_id>:final`` (first result wins; a late zombie result is dropped).

A run that waits for a person's answer when its worker stops (a reload, a stop of the server) is
not run again from its start: the worker reports it ``task.suspended`` with its Context as it is at
the question (and acks the delivery with it, in one step), and the control plane hands the task
out again as a *resume*: a start message ``<task_id>:start@<attempt>`` whose :class:`TaskResume`
restores that Context, asks the question again and reads the task's inputs from where that
attempt left them.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from llamactl.server.types import asks_for_input

__all__ = [
    "EVENT_DELIVERED",
    "EVENT_REJECTED",
    "TASK_WHERE",
    "TaskInput",
    "TaskInputKind",
    "TaskMessage",
    "TaskResume",
    "WorkerMessage",
    "WorkerMessageKind",
    "answer_msg_id",
    "event_msg_id",
    "final_msg_id",
    "start_msg_id",
    "suspended_msg_id",
    "task_of_start_msg_id",
    "waits_for_answer_after",
]


class TaskResume(BaseModel):
    """Where a resumed attempt picks a task up: the run an earlier attempt stopped at a question."""

    attempt: int
    """The attempt that asked and was stopped: the resumed one is counted from it (its
    deliveries are ``attempt + 1``, ...), whatever the queue counts for the new message."""
    context: dict[str, Any] | None
    """That run's Context (``Context.to_dict()``) as it waited; None when it was lost (its
    record unreadable): the task then runs from its start, in the session's Context."""
    question: dict[str, Any] | None = None
    """The event that asked (an InputRequiredEvent's envelope): the resumed run streams it
    again first, since the restored run waits without asking."""
    inputs_from: int = 0
    """The seq of the task's first input that run had not read: the resumed run reads from it."""


class TaskMessage(BaseModel):
    """Control plane -> worker: run this task."""

    task_id: str
    session_id: str
    service_id: str
    deployment: str
    input: dict[str, Any] = Field(default_factory=dict)
    """The workflow's run kwargs (the decoded ``TaskDefinition.input``)."""
    context: dict[str, Any] | None = None
    """The session's saved workflow Context (``Context.to_dict()``), None for a new session."""
    timeout: float | None = None
    """Seconds the task may run (the service's ``timeout``); None = no limit."""
    keep_context: bool = True
    """False when nobody will run in the task's session again (``tasks/run`` without a session):
    the worker does not serialize the Context and nothing is stored for it."""
    resume: TaskResume | None = None
    """Set when the task goes on from an earlier attempt's question instead of from its start
    (``context`` is then unused)."""


class WorkerMessageKind(StrEnum):
    REPLICA_UP = "replica.up"
    REPLICA_HEARTBEAT = "replica.heartbeat"
    REPLICA_STOPPING = "replica.stopping"
    REPLICA_FAILED = "replica.failed"
    """The worker could not load its workflow; ``error``/``traceback`` say why. It exits next."""
    TASK_STARTED = "task.started"
    TASK_EVENT = "task.event"
    TASK_ANSWER = "task.answer"
    """The worker's answer to a question asked of a running task (:data:`TASK_WHERE`) in
    ``event``: not one of the task's events (no ``event_index``)."""
    TASK_SUSPENDED = "task.suspended"
    """The run waited for a person's answer when its worker stopped: ``context`` holds its
    Context as it waited, ``event`` the question, ``inputs_from`` the first input it had not
    read. Sent with the delivery's ack; the control plane hands the task out again as a resume."""
    TASK_COMPLETED = "task.completed"
    TASK_FAILED = "task.failed"
    TASK_CANCELLED = "task.cancelled"


class WorkerMessage(BaseModel):
    """Worker -> control plane."""

    kind: WorkerMessageKind
    replica_id: str
    service_id: str
    generation: int = 1
    pid: int | None = None
    host: str | None = None
    in_flight: int = 0
    max_concurrency: int = 1
    concurrency_limit: int | None = None
    """On replica.up and heartbeats: how many tasks the replica starts at once right now, at most
    ``max_concurrency`` (fewer while its tasks compute: see ``services/concurrency.py``)."""
    task_id: str | None = None
    session_id: str | None = None
    attempt: int = 1
    event: dict[str, Any] | None = None
    """For task.event of one event: ``{"value", "type", "qualified_name"}`` (an EventEnvelope
    without seq); for task.suspended: the question the run waited on, as it was streamed."""
    event_index: int | None = None
    """For task.event: the 0-based index within this attempt of its (first) event; for a final
    report, how many events were sent before it (the index of the first of its own ``events``):
    the control plane stores it only after them."""
    events: list[dict[str, Any]] = []
    """For task.event of several events (a run that streamed faster than the queue confirmed),
    without ``event``: those events, from ``event_index`` on. For a final report: the run's last
    events (its StopEvent), sent with it instead of alone."""
    started_at: float | None = None
    """For a final report: when the run started (there may have been no task.started report)."""
    result: Any = None
    """For task.completed: the workflow's result, JSON-encodable."""
    context: dict[str, Any] | None = None
    """For task.completed / task.failed / task.cancelled: the session Context after the run;
    for task.suspended: the run's Context as it waited."""
    inputs_from: int = 0
    """For task.suspended: see :attr:`TaskResume.inputs_from`."""
    resumed: bool = False
    """For task.started: the attempt goes on from an earlier one's question (a :class:`TaskResume`
    whose Context the worker could restore)."""
    error: str | None = None
    traceback: str | None = None
    at: float = 0.0


class TaskInputKind(StrEnum):
    EVENT = "event"
    CANCEL = "cancel"
    WHERE = "where"
    """Where is the run's code now? The worker answers with a :data:`TASK_WHERE` naming the input."""


class TaskInput(BaseModel):
    """Control plane -> the worker running a task: an event sent in, a cancel request, or a
    question of where the run is."""

    kind: TaskInputKind
    event_obj_str: str | None = None
    """For kind=event: ``JsonSerializer().serialize(event)`` of a workflows Event."""
    input_id: str | None = None
    """For kind=event: set when the sender waits to learn whether the event reached the run. The
    worker then streams an :data:`EVENT_DELIVERED` or :data:`EVENT_REJECTED` event naming it.
    For kind=where: its :data:`TASK_WHERE` answer names it."""


EVENT_DELIVERED = "EventDelivered"
"""``type`` of the event a worker streams once an event sent in reached the run: ``value`` is
``{"input_id", "event"}`` (the event's qualified name)."""
EVENT_REJECTED = "EventRejected"
"""``type`` of the event a worker streams when an event sent in could not be built or delivered:
``value`` is ``{"input_id", "event", "error"}``."""
TASK_WHERE = "TaskWhere"
"""``type`` of the event a worker sends (as a :data:`WorkerMessageKind.TASK_ANSWER`) to answer a
where input: ``value`` is ``{"input_id", "where", "stacks"}`` (``where``: ``in fetch (app.py line
12)``, empty when unknown; ``stacks``: each place's stack, or None). It is not one of the task's
events: the control plane keeps the task's latest answer beside its record, not in its log, and
it does not count toward ``max-events``."""


def waits_for_answer_after(waiting: bool, event_type: str) -> bool:
    """Whether a run waits for a person's answer after its next event, of ``event_type``: a
    question starts the wait; an event sent in that did not reach the run (:data:`EVENT_REJECTED`)
    leaves it as it was; anything else (the answer delivered, the run moving on) ends it."""
    return waiting if event_type == EVENT_REJECTED else asks_for_input(event_type)


def start_msg_id(task_id: str, resumed_from: int = 0) -> str:
    """The id of a task's start message; of its resume after attempt ``resumed_from``, if not 0
    (a new id: a queue may keep the first one's id known after its ack, and absorb a second)."""
    return f"{task_id}:start@{resumed_from}" if resumed_from else f"{task_id}:start"


def task_of_start_msg_id(msg_id: str) -> str | None:
    """The task id in a :func:`start_msg_id`, or None if ``msg_id`` is not one."""
    head, sep, tail = msg_id.rpartition(":start")
    if not sep or not head or (tail and not (tail.startswith("@") and tail[1:].isdigit())):
        return None
    return head


def suspended_msg_id(task_id: str, attempt: int) -> str:
    return f"{task_id}:{attempt}:suspended"


def event_msg_id(task_id: str, attempt: int, index: int) -> str:
    return f"{task_id}:{attempt}:ev:{index}"


def answer_msg_id(task_id: str, input_id: str) -> str:
    return f"{task_id}:answer:{input_id}"


def final_msg_id(task_id: str) -> str:
    return f"{task_id}:final"
