"""AnswerPrompt's turns on a real pseudo-terminal (`run`'s part is in test_cli_progress.py): an
answer that cannot be sent says why and asks again; a line typed after the question was
answered elsewhere is not sent, nor taken for the next question's answer; an end of input
leaves the command that answers."""

from __future__ import annotations

import contextlib
import os
import pty
from collections.abc import Iterator

import pytest

from llamactl.cli.answer_prompt import AnswerPrompt
from tests.e2e.waiting import wait_until_blocking

HINT = 'llamactl tasks send-event T -d d --json \'{"response": "..."}\''


class Sink:
    def __init__(self, failures: int = 0) -> None:
        self.sent: list[str] = []
        self.failures = failures
        self.resumed = 0

    def send(self, line: str) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("the server did not answer")
        self.sent.append(line)


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal: (the end the prompt reads, the end typed into)."""
    typed, read = pty.openpty()
    yield read, typed
    for fd in (read, typed):
        with contextlib.suppress(OSError):
            os.close(fd)


def _prompt(sink: Sink, read: int) -> AnswerPrompt:
    def resume() -> None:
        sink.resumed += 1

    return AnswerPrompt(sink.send, hint=HINT, resume=resume, fd=read)


def test_an_answer_not_sent_says_why_and_is_asked_again(
    terminal: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    read, write = terminal
    sink = Sink(failures=1)
    prompt = _prompt(sink, read)
    prompt.ask("Deploy?")
    os.write(write, b"yes\n")
    wait_until_blocking(lambda: "Not sent: the server did not answer" in capsys.readouterr().err, 10)
    os.write(write, b"  yes  \n")
    wait_until_blocking(lambda: sink.sent == ["yes"], 10)
    assert sink.resumed == 1
    prompt.answered()  # its own answer arriving: nothing more is said
    prompt.close()
    assert "Answered elsewhere" not in capsys.readouterr().err


def test_lines_typed_after_an_answer_from_elsewhere_are_not_sent(
    terminal: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    read, write = terminal
    sink = Sink()
    prompt = _prompt(sink, read)
    prompt.ask("Deploy?")
    prompt.answered()
    assert "Answered elsewhere." in capsys.readouterr().err and sink.resumed == 1
    os.write(write, b"late\n")  # typed before the next question shows: not its answer
    prompt.ask("And the database?")
    os.write(write, b"no\n")
    wait_until_blocking(lambda: sink.sent == ["no"], 10)
    prompt.close()


def test_the_end_of_input_leaves_the_command_that_answers(
    terminal: tuple[int, int], capsys: pytest.CaptureFixture[str]
) -> None:
    read, write = terminal
    sink = Sink()
    prompt = _prompt(sink, read)
    prompt.ask("Deploy?")
    os.write(write, b"\x04")  # Ctrl-D
    wait_until_blocking(lambda: sink.resumed == 1, 10)
    assert f"Not answered here; answer with: {HINT}" in capsys.readouterr().err
    prompt.ask("And the database?")  # no prompt any more: the command comes with the question
    shown = capsys.readouterr().err
    assert f"answer with: {HINT}" in shown and "Your answer" not in shown
    assert sink.resumed == 2  # the spinner is back at once: nothing to type here
    prompt.close()
    assert sink.sent == []
