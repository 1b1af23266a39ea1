"""Issue #13, point 3: feedback on long work, on stderr, only at a terminal.

`run` shows a spinner with the task's status and elapsed time (and the question, with the
command that answers it, when a human-in-the-loop task waits); `deploy` shows its services
coming up; `serve` says how many tasks its shutdown still waits for.
"""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamactl.client import Client
from tests.llamactl.serving import REPO, Lines, Server, llamactl, reaped, write_app
from tests.llamactl.terminal import Terminal, plain

SERVICES = {"echo": "flows:echo_workflow", "hitl": "flows:hitl_workflow", "slow": "funcs:slow"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    file = write_app(tmp_path_factory.mktemp("progress"), "progress", SERVICES)
    server = Server(file, extra=["--deployments-root", str(tmp_path_factory.getbasetemp())])
    try:
        yield server
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.lines[-30:])


def running(client: Client, deployment: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(client.deployment(deployment).tasks.list(status="running")) < count:
        assert time.monotonic() < deadline, "the tasks did not start"
        time.sleep(0.05)


def test_run_at_a_terminal_shows_the_status_and_the_elapsed_time(server: Server) -> None:
    with Terminal("--server", server.url, "run", "-s", "slow", "--json", '{"seconds": 3}') as terminal:
        terminal.wait_for(r"Task [0-9a-f]{8} \(slow\): running \(\d+\.\ds\)")
        assert terminal.wait() == 0
        assert plain(terminal.output).rstrip().endswith("done")


def _answer_with(server: Server, command: str, answer: str) -> None:
    """Run ``command`` as printed, with ``answer`` in place of the dots."""
    argv = shlex.split(command.replace("...", answer))
    answered = subprocess.run(
        [sys.executable, "-m", *argv[:1], "--server", server.url, *argv[1:]],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert answered.returncode == 0, answered.stderr


SEND_EVENT = r"(llamactl tasks send-event \S+ -d progress --json '\{\S+ \S+\}')"


def test_run_at_a_terminal_asks_the_question_and_sends_the_answer_typed(server: Server) -> None:
    with Terminal("--server", server.url, "run", "-s", "hitl") as terminal:
        terminal.wait_for(r"The workflow asks: What is the answer\?\s+\(or answer from elsewhere: ")
        terminal.wait_for(r"Your answer: ")
        terminal.type("\n")  # an empty line sends nothing: it asks again
        terminal.wait_for(r"Your answer: \s+Your answer: ")
        terminal.type("42\n")
        terminal.wait_for(r"Sent\.")
        assert terminal.wait() == 0
        assert "the human said 42" in plain(terminal.output)


def test_run_of_a_task_queued_in_a_session_names_the_task_ahead_and_that_it_asks(server: Server) -> None:
    """A bare "queued" read like a stuck queue when the session's running task waited for a
    person's answer."""
    with Client(server.url) as client:
        app = client.deployment("progress")
        session = app.sessions.create().session_id
        ahead = app.tasks.create(service="hitl", session_id=session)
        deadline = time.monotonic() + 60
        while not app.tasks.get(ahead.task_id).waiting_for_answer:
            assert time.monotonic() < deadline, "the task ahead did not ask"
            time.sleep(0.05)
        with Terminal("--server", server.url, "run", "-s", "echo", "-i", session, "hi") as terminal:
            terminal.wait_for(
                rf"queued behind {ahead.task_id[-8:]} of its session, which waits for an answer"
            )
            app.tasks.send_event(ahead.task_id, {"response": "42"})
            assert terminal.wait() == 0
            assert "Message received: hi" in plain(terminal.output)


def test_a_question_answered_elsewhere_takes_the_prompt_away(server: Server) -> None:
    with Terminal("--server", server.url, "run", "-s", "hitl") as terminal:
        command = terminal.wait_for(rf"or answer from elsewhere: {SEND_EVENT}\)")[1]
        terminal.wait_for(r"Your answer: ")
        _answer_with(server, command, "42")
        assert terminal.wait() == 0
        shown = plain(terminal.output)
    assert "the human said 42" in shown
    assert not re.search(r"Your answer: [^\n]*the human said", shown), shown  # not on the prompt's line


def test_ctrl_d_at_the_prompt_leaves_the_command_that_answers(server: Server) -> None:
    with Terminal("--server", server.url, "run", "-s", "hitl") as terminal:
        terminal.wait_for(r"Your answer: ")
        terminal.type("\x04")
        command = terminal.wait_for(rf"Not answered here; answer with: {SEND_EVENT}")[1]
        terminal.wait_for(r"waiting for an answer \(\d+\.\ds\)")  # the spinner is back
        _answer_with(server, command, "42")
        assert terminal.wait() == 0
        assert "the human said 42" in plain(terminal.output)


def test_run_stream_at_a_terminal_sends_the_answer_typed_too(server: Server) -> None:
    with Terminal("--server", server.url, "run", "--stream", "-s", "hitl") as terminal:
        terminal.wait_for(r"InputRequiredEvent")
        terminal.wait_for(r"Your answer: ")
        terminal.type("42\n")
        terminal.wait_for(r"EventDelivered")
        assert terminal.wait() == 0
        assert "the human said 42" in plain(terminal.output)


def test_with_stdin_not_a_terminal_run_shows_the_command_that_answers(server: Server) -> None:
    """No one can type the answer here (a pipe in stdin): the question comes with the command."""
    with Terminal(
        "--server", server.url, "run", "-s", "hitl", wrapper=("sh", "-c", 'exec "$@" < /dev/null', "-")
    ) as terminal:
        terminal.wait_for(r"The workflow asks: What is the answer\?")
        command = terminal.wait_for(rf"answer with: {SEND_EVENT}")[1]
        terminal.wait_for(r"waiting for an answer \(\d+\.\ds\)")
        assert "Your answer" not in plain(terminal.output)
        _answer_with(server, command, "42")
        assert terminal.wait() == 0
        assert "the human said 42" in plain(terminal.output)


def test_run_off_a_terminal_draws_nothing(server: Server) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llamactl", "--server", server.url, "run", "-s", "slow", "-a", "seconds", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "done\n", "")


def test_run_off_a_terminal_says_what_the_workflow_asks_and_how_to_answer(server: Server) -> None:
    """A script's `run` (its output to a file or pipe) still says what the task waits for."""
    process = llamactl("--server", server.url, "run", "-s", "hitl")
    with reaped(process):
        stderr = Lines(process.stderr)
        stderr.wait_for(lambda line: line == "The workflow asks: What is the answer?", 60)
        command = stderr.wait_for(lambda line: "answer with: " in line, 10).partition("answer with: ")[2]
        assert re.fullmatch(SEND_EVENT, command), command
        _answer_with(server, command, "42")
        assert process.wait(60) == 0
        assert process.stdout is not None and process.stdout.read() == "the human said 42\n"
    assert not any("waiting for" in line for line in stderr.lines)  # no spinner's status off a terminal


def test_run_stream_off_a_terminal_says_how_to_answer_too(server: Server) -> None:
    process = llamactl("--server", server.url, "run", "-s", "hitl", "--stream")
    with reaped(process):
        stderr = Lines(process.stderr)
        stderr.wait_for(lambda line: line == "The workflow asks: What is the answer?", 60)
        command = stderr.wait_for(lambda line: "answer with: " in line, 10).partition("answer with: ")[2]
        _answer_with(server, command, "42")
        assert process.wait(60) == 0
        assert process.stdout is not None
        out = process.stdout.read().splitlines()
    assert "InputRequiredEvent" in out[0] and out[-1] == "the human said 42", out


def test_deploy_at_a_terminal_shows_its_services_coming_up(server: Server, tmp_path: Path) -> None:
    file = write_app(tmp_path, "second", {"echo": "flows:echo_workflow", "greet": "funcs:greet"})
    with Terminal("--server", server.url, "deploy", str(file)) as terminal:
        terminal.wait_for(r"Deploying second: starting 2 services \(echo, greet\) \(\d+\.\ds\)")
        assert terminal.wait(120) == 0
        shown = plain(terminal.output)
    assert re.search(r"echo\s+✓ ready\s+1/1 replicas", shown), shown
    assert re.search(r"greet\s+✓ ready\s+1/1 replicas", shown), shown
    assert "Deployed second" in shown
    with Client(server.url) as client:
        client.deployments.delete("second")


def test_the_serve_drain_says_how_many_tasks_it_still_waits_for(tmp_path: Path) -> None:
    server = Server(write_app(tmp_path, "drain", {"slow": "funcs:slow"}))
    try:
        with Client(server.url) as client:
            tasks = client.deployment("drain").tasks
            tasks.create({"seconds": 2}, service="slow")
            tasks.create({"seconds": 4}, service="slow")
            running(client, "drain", 2)
        server.process.send_signal(signal.SIGINT)
        server.stderr.wait_for(
            lambda line: line == "Stopping: waiting for 2 running tasks, Ctrl-C again to stop now", 30
        )
        server.stderr.wait_for(
            lambda line: line == "Stopping: waiting for 1 running task, Ctrl-C again to stop now", 30
        )
        server.stderr.wait_for(lambda line: line == "Stopping: no task left running", 30)
        assert server.process.wait(60) == 0
        assert server.stderr.rest()[-1] == "Stopped."
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
        assert server.process.stderr is not None
        server.process.stderr.close()


def test_the_serve_drain_at_a_terminal_is_one_line_redrawn(tmp_path: Path) -> None:
    file = write_app(tmp_path, "drawn", {"slow": "funcs:slow"})
    with Terminal("serve", str(file), "--port", "0") as terminal:
        url = terminal.wait_for(r"Listening on (http://\S+)", 120)[1]
        with Client(url) as client:
            client.deployment("drawn").tasks.create({"seconds": 3}, service="slow")
            running(client, "drawn", 1)
        terminal.process.send_signal(signal.SIGINT)
        terminal.wait_for(r"Stopping: waiting for 1 running task, Ctrl-C again to stop now \(\d+\.\ds\)")
        assert terminal.wait(60) == 0
        shown = plain(terminal.output)
    assert "Stopped." in shown


def test_run_says_when_a_reload_lets_the_task_go_on_from_its_question(tmp_path: Path) -> None:
    """`serve --watch`: the workflow's source is edited while `run` waits for the answer; the
    task goes on from its question on the new code, and `run` says so, asks again, and prints
    the result of the answer sent."""
    file = write_app(tmp_path / "app", "reloads", {"hitl": "flows:hitl_workflow"})
    server = Server(file, extra=["--watch"])
    try:
        process = llamactl("--server", server.url, "run", "-s", "hitl")
        with reaped(process):
            stderr = Lines(process.stderr)
            stderr.wait_for(lambda line: line == "The workflow asks: What is the answer?", 60)
            source = tmp_path / "app" / "src" / "flows.py"
            source.write_text(source.read_text() + "\n# edited\n")
            going_on = stderr.wait_for(lambda line: line.startswith(("Going on: ", "Retrying: ")), 60)
            assert "going on from the question attempt 1 asked" in going_on, going_on
            assert going_on.startswith("Going on: attempt 2 started on hitl#1@g2"), going_on
            stderr.wait_for(lambda line: line == "The workflow asks: What is the answer?", 30)
            command = stderr.wait_for(lambda line: "answer with: " in line, 10).partition("answer with: ")[2]
            _answer_with(server, command, "42")
            assert process.wait(60) == 0
            assert process.stdout is not None and process.stdout.read() == "the human said 42\n"
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.lines[-30:])
