"""`llamactl run` at a terminal: the answer to a workflow's question, typed where the question shows.

When a human-in-the-loop workflow asks (an ``InputRequiredEvent``) and a person is at the
terminal (stdin and stderr both one), `run` prompts for the answer and sends the line typed as
the workflow's ``HumanResponseEvent`` (``{"response": <the line>}``), as ``llamactl tasks
send-event`` would. The question may still be answered elsewhere (the dashboard, another
terminal): the prompt then gives way. An empty line sends nothing and asks again; Ctrl-D stops
asking here (the printed command answers it then).

The line is read from file descriptor 0 with ``os.read`` in a daemon thread that waits with
``select`` and a timeout, not through ``sys.stdin``: a thread blocked inside ``sys.stdin`` holds
its buffer's lock, and the interpreter's exit would then abort on it.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import sys
import termios
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from llamactl.cli.progress import interactive_stderr, run_in_thread
from llamactl.client.questions import is_input_required, question_of

if TYPE_CHECKING:
    from llamactl.client.sync import Tasks
    from llamactl.server.types import EventEnvelope

__all__ = [
    "EVENT_DELIVERED",
    "AnswerPrompt",
    "answer_command",
    "answer_prompt",
    "person_at_terminal",
    "question_lines",
]

EVENT_DELIVERED = "EventDelivered"

_POLL = 0.2
"""Seconds between two looks at whether the prompt still has a question to answer."""


def answer_command(task_id: str, deployment: str) -> str:
    """The command that answers a task's question from another terminal."""
    answer = json.dumps({"response": "..."})
    return f"llamactl tasks send-event {task_id} -d {deployment} --json '{answer}'"


def question_lines(question: str, task_id: str, deployment: str) -> list[str]:
    """What `run` says of a question where nobody can type its answer: it, and the command."""
    return [f"The workflow asks: {question}", f"  answer with: {answer_command(task_id, deployment)}"]


def answer_prompt(
    tasks: Tasks,
    task_id: str,
    service: str,
    deployment: str,
    *,
    pause: Callable[[], None] = lambda: None,
    resume: Callable[[], None] = lambda: None,
) -> AnswerPrompt | None:
    """A prompt for the answers to the task's questions, when a person is at this terminal."""
    if not person_at_terminal():
        return None
    return AnswerPrompt(
        lambda line: tasks.send_event(task_id, {"response": line}, service_id=service),
        hint=answer_command(task_id, deployment),
        pause=pause,
        resume=resume,
    )


def person_at_terminal() -> bool:
    """Someone can answer here: stdin is a terminal and so is stderr (outside CI)."""
    try:
        return os.isatty(0) and interactive_stderr()
    except (AttributeError, ValueError):
        return False


class AnswerPrompt:
    """``prompt.ask(question)`` on each question; ``prompt.answered()`` when any answer arrived.

    Args:
        send: sends an answer into the task (raises with a message the person can act on).
        hint: the command that answers from elsewhere, shown with the prompt.
        pause: called before the prompt takes the terminal (the spinner stops drawing).
        resume: called once the question is answered, here or elsewhere.
        fd: where the answers are typed (stdin).
    """

    def __init__(
        self,
        send: Callable[[str], object],
        *,
        hint: str,
        pause: Callable[[], None] = lambda: None,
        resume: Callable[[], None] = lambda: None,
        fd: int = 0,
    ) -> None:
        self._send = send
        self._fd = fd
        self._hint = hint
        self._pause = pause
        self._resume = resume
        self._lock = threading.Lock()
        self._asking = threading.Event()
        self._closed = threading.Event()
        self._sending = False
        self._given_up = False
        self._pending = b""
        """What was typed of the answer's line so far."""
        self._questions = 0
        """Questions shown so far: what is read while one waits is its answer, not the next one's."""
        self._reader: threading.Thread | None = None

    def seen(self, event: EventEnvelope) -> None:
        """One of the task's events: a question is asked, a delivered event answered it."""
        if is_input_required(event):
            self.ask(question_of(event))
        elif event.type == EVENT_DELIVERED:
            self.answered()

    def ask(self, question: str) -> None:
        """Show ``question`` and read its answer from the terminal (unless Ctrl-D ended that)."""
        with self._lock:
            if self._closed.is_set():
                return
            self._pause()
            if self._asking.is_set():  # asked again (a new attempt): off the prompt's line first
                _err("")
            _err(f"The workflow asks: {question}")
            if self._given_up:
                _err(f"  answer with: {self._hint}")
                self._resume()
                return
            _err(f"  (or answer from elsewhere: {self._hint})")
            _discard_typed(self._fd)  # typed before this question was shown: not its answer
            self._pending = b""
            self._questions += 1
            _prompt()
            self._asking.set()
            if self._reader is None:
                self._reader = run_in_thread(self._read_answers, "run-answer")

    def say(self, line: str) -> bool:
        """Write ``line`` above the prompt while it waits for the answer (the prompt is shown
        again under it); False, writing nothing, when it does not wait."""
        with self._lock:
            if not self._asking.is_set():
                return False
            _err("")
            _err(line)
            _prompt()
            return True

    def answered(self) -> None:
        """An answer reached the task: from this prompt, or from elsewhere (then the prompt goes)."""
        with self._lock:
            if self._sending or not self._asking.is_set():
                return
            self._asking.clear()
            _err("")
            _err("  Answered elsewhere.")
            self._resume()

    def close(self) -> None:
        """Stop reading (the task ended); the reader thread ends within a fraction of a second."""
        with self._lock:
            self._closed.set()
            if self._asking.is_set():  # the task ended first: what follows is not the answer
                self._asking.clear()
                _err("")

    def _read_answers(self) -> None:
        while not self._closed.is_set():
            if not self._asking.wait(_POLL):
                continue
            question = self._questions
            try:
                if not select.select([self._fd], [], [], _POLL)[0]:
                    continue
            except (OSError, ValueError):
                self._give_up()
                return
            with self._lock:
                # Read only for the question that still waits: what was typed before a newer
                # one showed was dropped when it did (under this lock, so the read never waits).
                if not self._asking.is_set() or question != self._questions:
                    continue
                try:
                    chunk = os.read(self._fd, 4096)
                except OSError:
                    chunk = b""
                if chunk:
                    *lines, self._pending = (self._pending + chunk).split(b"\n")
            if not chunk:  # Ctrl-D, or the terminal went away
                self._give_up()
                return
            for line in lines:
                self._answer(line.decode("utf-8", "replace").strip())

    def _answer(self, line: str) -> None:
        with self._lock:
            if not self._asking.is_set():
                return  # typed after the question was answered elsewhere
            if not line:
                _prompt()
                return
            self._sending = True
        try:
            self._send(line)
        except Exception as exc:  # the person reads why, and may type again
            with self._lock:
                self._sending = False
                _err(f"  Not sent: {exc}")
                if self._asking.is_set():
                    _prompt()
            return
        with self._lock:
            self._sending = False
            self._asking.clear()
            _err("  Sent.")
            self._resume()

    def _give_up(self) -> None:
        with self._lock:
            self._given_up = True
            if self._asking.is_set():
                self._asking.clear()
                _err("")
                _err(f"  Not answered here; answer with: {self._hint}")
                self._resume()


def _discard_typed(fd: int) -> None:
    """Drop what was typed at the terminal ``fd`` and not read yet (flushed, not read away: a read
    of an input that another read emptied would wait)."""
    with contextlib.suppress(OSError):
        if os.isatty(fd):
            termios.tcflush(fd, termios.TCIFLUSH)


def _prompt() -> None:
    typer.echo("  Your answer: ", nl=False, err=True)
    sys.stderr.flush()


def _err(line: str) -> None:
    typer.echo(line, err=True)
