"""TaskWatch's two threads (the task's record, its events) agree on what the spinner shows."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from llamactl.cli.run_watch import TaskWatch
from llamactl.client.models import Page
from llamactl.server.types import EventEnvelope, TaskRecord
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
