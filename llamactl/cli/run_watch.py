"""`llamactl run` at a terminal: a spinner with the task's status and elapsed time, and the
question when a human-in-the-loop workflow waits for input: with a prompt for its answer when a
person can type one here (:mod:`.answer_prompt`), else with the command that answers it.

Two daemon threads feed the spinner while the main thread waits for the result: one follows the
task's event log (questions, retries, answers that arrived), one reads its record for the status.
Both end with the command; nothing they do can fail the run. Off a terminal (a script's `run`)
there is no spinner and no status thread: the question, the command that answers it and a
retry's reason are lines on stderr.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llamactl.cli.answer_prompt import EVENT_DELIVERED, answer_prompt, question_lines
from llamactl.cli.ids import shorten
from llamactl.cli.progress import Spinner, run_in_thread
from llamactl.client.questions import is_input_required, question_of

if TYPE_CHECKING:
    from llamactl.client.sync import Tasks
    from llamactl.server.types import EventEnvelope, TaskRecord

__all__ = ["TaskWatch"]

STATUS_EVERY = 0.5
"""Seconds between two reads of the task's record (only for the spinner)."""
AGAIN_AFTER = 1.0
"""Seconds before a thread tries again a server that did not answer."""


class TaskWatch:
    """``with TaskWatch(tasks, task_id, service, deployment): tasks.result(task_id)``."""

    def __init__(
        self, tasks: Tasks, task_id: str, service: str, deployment: str, *, events_after: float = 0.0
    ) -> None:
        """``events_after``: seconds before the task's events are followed (a run that ends sooner
        costs no stream; the task may not be stored yet when the watch starts)."""
        self._tasks = tasks
        self._events_after = events_after
        self._task_id = task_id
        self._deployment = deployment
        self._done = threading.Event()
        self._asking = False
        self._drawing = threading.Lock()
        self._status = threading.Lock()
        """Held while the spinner's status is chosen and set, by either thread."""
        self.spinner = Spinner(f"Task {shorten([task_id])[task_id]} ({service})", "queued")
        self._prompt = answer_prompt(
            tasks, task_id, service, deployment, pause=self.spinner.stop, resume=self._resume
        )

    def __enter__(self) -> TaskWatch:
        if self.spinner.enabled:
            self.spinner.start()
            run_in_thread(self._follow_status, "run-status")
        run_in_thread(self._follow_events, "run-events")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._prompt is not None:
            self._prompt.close()
        with self._drawing:
            self._done.set()
            self.spinner.stop()

    def print(self, line: str) -> None:
        """A line on stderr: above the prompt while it waits for an answer, else above the spinner."""
        if self._prompt is None or not self._prompt.say(line):
            self.spinner.print(line)

    def _resume(self) -> None:
        with self._drawing:
            if not self._done.is_set():
                self.spinner.start()

    def _follow_status(self) -> None:
        while not self._done.is_set():
            try:
                record = self._tasks.get(self._task_id)
            except Exception:  # the server went away: the main thread says so; look again later
                self._done.wait(AGAIN_AFTER)
                continue
            if not self._asking:
                attempt = f", attempt {record.attempts}" if record.attempts > 1 else ""
                status = f"{record.status.value}{attempt}{self._behind(record)}"
                with self._status:  # a question seen meanwhile wins: its status is the newer
                    if not self._asking:
                        self.spinner.update(status)
            if record.status.is_final:
                return
            self._done.wait(STATUS_EVERY)

    def _behind(self, record: TaskRecord) -> str:
        """For a task queued in a session: the task of the session that runs ahead of it (a
        bare "queued" reads like a stuck queue when that one waits for a person's answer)."""
        if record.status.value != "queued" or record.own_session:
            return ""
        try:
            running = self._tasks.page(session_id=record.session_id, status="running", limit=1).items
        except Exception:
            return ""
        ahead = next((t for t in running if t.task_id != record.task_id), None)
        if ahead is None:
            return ""
        waits = ", which waits for an answer" if ahead.waiting_for_answer else ""
        shown = shorten([ahead.task_id, record.task_id])[ahead.task_id]  # the end: as `tasks` shows it
        return f" behind {shown} of its session{waits}"

    def _follow_events(self) -> None:
        """Follow the task's events until it ends, again from the first one not seen when the
        server goes away and comes back (a restarted server runs the task again: it may ask again)."""
        next_seq = 0
        if self._done.wait(self._events_after):
            return
        while not self._done.is_set():
            try:
                for event in self._tasks.events(self._task_id, from_seq=next_seq):
                    if self._done.is_set():
                        return
                    next_seq = event.seq + 1
                    self._on_event(event)
                return
            except Exception:
                self._done.wait(AGAIN_AFTER)

    def _on_event(self, event: EventEnvelope) -> None:
        if is_input_required(event):
            question = question_of(event)
            with self._status:
                self._asking = True
                self.spinner.update("waiting for an answer")
            if self._prompt is None:
                for line in question_lines(question, self._task_id, self._deployment):
                    self.spinner.print(line)
        elif event.type == EVENT_DELIVERED:
            with self._status:
                self._asking = False
                self.spinner.update("running")
        elif event.type == "TaskAttempt":
            value: Any = event.value if isinstance(event.value, dict) else {}
            how = "Going on" if value.get("resumed_from") else "Retrying"
            self.print(f"{how}: {value.get('reason', 'a new attempt started')}")
        if self._prompt is not None:
            self._prompt.seen(event)
