"""TaskWatch's two threads (the task's record, its events) agree on what the spinner shows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from llamactl.cli.run_watch import TaskWatch
from llamactl.client.models import Page
from llamactl.server.ids import new_id
from llamactl.server.types import EventEnvelope, TaskRecord, TaskStatus
from tests.e2e.waiting import wait_until_blocking

QUESTION = EventEnvelope(
    value={"prefix": "What is the answer?"},
    type="InputRequiredEvent",
    qualified_name="workflows.events.InputRequiredEvent",
    seq=0,
)


class SlowListing:
    """The task's record says queued (in a session), its log asks a question, and the listing of
    the session's running task answers only once the question has been seen."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.done = threading.Event()
        self.reads = 0

    def get(self, task_id: str) -> TaskRecord:
        self.reads += 1
        return TaskRecord(task_id=task_id, deployment="d", service_id="hitl", session_id="s1")

    def page(self, **_: Any) -> Page[TaskRecord]:
        self.asked.wait(10)
        return Page(items=[], next_cursor=None)

    def events(self, task_id: str, *, from_seq: int = 0) -> Iterator[EventEnvelope]:
        yield QUESTION
        self.done.wait(10)


def test_a_question_seen_while_the_status_is_read_is_not_overwritten_by_it() -> None:
    """Before, the record's status read before the question (queued) was set after it, and the
    spinner showed `queued` for as long as the task waited (seen in CI)."""
    tasks = SlowListing()
    watch = TaskWatch(tasks, "t1", "hitl", "d")  # type: ignore[arg-type]
    watch.spinner.enabled = True
    with watch:
        wait_until_blocking(lambda: watch.spinner.status == "waiting for an answer", 10)
        tasks.asked.set()
        wait_until_blocking(lambda: tasks.reads >= 2, 10)  # the first read's update is done
        assert watch.spinner.status == "waiting for an answer"
        tasks.done.set()


class Ahead:
    """A session whose running task is ``ahead``: the one a queued task waits behind."""

    def __init__(self, ahead: TaskRecord) -> None:
        self.ahead = ahead

    def page(self, **_: Any) -> Page[TaskRecord]:
        return Page(items=[self.ahead], next_cursor=None)


def test_the_spinner_and_the_task_ahead_are_named_by_the_ends_of_their_ids() -> None:
    """Before, `run` named tasks by the start of their ids: for the server's UUIDv7 ids, the time
    they were made, the same for every task of the same minute (so the task ahead had the same
    name as the one waiting for it), and not what `llamactl tasks` shows or a command resolves."""
    first, second = new_id(), new_id()  # made in the same millisecond or the next: the same start
    assert first[:8] == second[:8]
    tasks = Ahead(_record(first, TaskStatus.RUNNING))
    labels = [TaskWatch(tasks, i, "echo", "d").spinner.text for i in (first, second)]  # type: ignore[arg-type]
    assert labels == [f"Task {first[-8:]} (echo)", f"Task {second[-8:]} (echo)"]

    watch = TaskWatch(tasks, second, "echo", "d")  # type: ignore[arg-type]
    assert watch._behind(_record(second, TaskStatus.QUEUED)) == f" behind {first[-8:]} of its session"


def _record(task_id: str, status: TaskStatus) -> TaskRecord:
    return TaskRecord(task_id=task_id, deployment="d", service_id="echo", session_id="s1", status=status)
