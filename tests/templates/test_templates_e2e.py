"""Every template, end to end: `llamactl init` it, `llamactl validate` it, `llamactl serve` it, run
the command `init` prints (as printed), exercise what the template is for, then Ctrl-C: exit 0 and
no worker left behind."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from llamactl.client import Client
from llamactl.templates import list_templates
from tests.llamactl.serving import REPO, Server
from tests.llamactl.terminal import Terminal

TEMPLATES = ["basic", "streaming", "human-in-the-loop", "multi-service", "functions"]
TASK_LINE = re.compile(r"^Task (\S+) ")


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamactl", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def generate(template: str, folder: Path) -> list[str]:
    """`llamactl init` the template into ``folder``; returns the next commands it printed."""
    done = cli("init", str(folder), "--template", template, "--name", f"my-{template}", "--yes", "--no-git")
    assert done.returncode == 0, done.stderr
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    assert lines[0] == f"cd {folder} && llamactl serve deployment.yml"
    return [line for line in lines[1:] if not line.startswith("#")]


@pytest.fixture(params=TEMPLATES)
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Server, list[str]]]:
    """(template, a running server on the generated deployment, the next commands init printed)."""
    template: str = request.param
    folder = tmp_path / template
    commands = generate(template, folder)
    checked = cli("validate", str(folder / "deployment.yml"))
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.strip() and all(": ok (" in line for line in checked.stdout.splitlines())
    server = Server(folder / "deployment.yml")
    try:
        yield template, server, commands
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.rest())


def run_printed(command: str, server: Server) -> subprocess.CompletedProcess[str]:
    """The command `init` printed, against the test's server."""
    argv = shlex.split(command)
    assert argv[0] == "llamactl"
    return cli("--server", server.url, *argv[1:])


def test_the_list_names_every_template() -> None:
    assert sorted(t.name for t in list_templates()) == sorted(TEMPLATES)


def test_template_runs_end_to_end(served: tuple[str, Server, list[str]]) -> None:
    template, server, commands = served
    exercise = EXERCISES[template]
    with Client(server.url) as client:
        exercise(server, client, commands)


def exercise_basic(server: Server, client: Client, commands: list[str]) -> None:
    assert commands == ['llamactl run --service echo "hi"']
    done = run_printed(commands[0], server)
    assert (done.returncode, done.stdout) == (0, "Message received: hi\n"), done.stderr


def exercise_streaming(server: Server, client: Client, commands: list[str]) -> None:
    done = run_printed(commands[0], server)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == ["Progress"] * 3 + ["StopEvent"]
    assert lines[-1] == "Processed 'hi' in 3 steps"
    tasks = client.deployment("my-streaming").tasks
    task = tasks.create({"message": "x", "steps": 5, "delay": 0}, service="progress")
    steps = [e.value["step"] for e in tasks.events(task.task_id) if e.type == "Progress"]
    assert steps == [1, 2, 3, 4, 5]


def exercise_human_in_the_loop(server: Server, client: Client, commands: list[str]) -> None:
    """The printed command, typed at a terminal as a newcomer would: it asks, the answer is typed."""
    argv = shlex.split(commands[0])
    with Terminal("--server", server.url, *argv[1:]) as terminal:
        terminal.wait_for(r"The workflow asks: May I deploy to production\? Answer yes or no\.")
        terminal.wait_for(r"Your answer: ")
        terminal.type("yes\n")
        terminal.wait_for(r"deploy to production: approved \(the human said 'yes'\)", 30)
        assert terminal.wait(30) == 0
    # and from elsewhere, as the printed comment says
    tasks = client.deployment("my-human-in-the-loop").tasks
    task = tasks.create({"message": "deploy again"})
    assert task.task_id is not None
    next(e for e in tasks.events(task.task_id) if e.type == "InputRequiredEvent")  # it asks
    sent = cli("--server", server.url, "tasks", "send-event", task.task_id, "--json", '{"response": "no"}')
    assert sent.returncode == 0, sent.stderr
    assert tasks.result(task.task_id, timeout=30) is not None


def exercise_multi_service(server: Server, client: Client, commands: list[str]) -> None:
    done = run_printed(commands[0], server)
    assert (done.returncode, done.stdout) == (0, "Message 1 of this session: hi\n"), done.stderr
    deployment = client.deployment("my-multi-service")
    session = deployment.sessions.create().session_id
    turns = [deployment.tasks.run({"message": m}, session_id=session) for m in ("hi", "again", "bye")]
    assert turns == [
        "Message 1 of this session: hi",
        "Message 2 of this session: again; earlier: hi",
        "Message 3 of this session: bye; earlier: hi, again",
    ]
    assert deployment.tasks.run({"message": "hi"}, service="shout") == "HI!"
    assert deployment.tasks.run({"message": "new"}) == "Message 1 of this session: new"


def exercise_functions(server: Server, client: Client, commands: list[str]) -> None:
    done = run_printed(commands[0], server)
    assert (done.returncode, done.stdout) == (0, "Hello, Ada!\n"), done.stderr
    tasks = client.deployment("my-functions").tasks
    assert tasks.run({"a": 2, "b": 3}, service="add") == {"sum": 5}
    task = tasks.create({"start": 3, "delay": 0}, service="countdown")
    values = [e.value for e in tasks.events(task.task_id)]
    assert values[:4] == [
        {"remaining": 3},
        {"remaining": 2},
        {"remaining": 1},
        {"remaining": 0, "message": "Liftoff!"},
    ]
    assert tasks.get(task.task_id).result == {"remaining": 0, "message": "Liftoff!"}


EXERCISES: dict[str, Callable[[Server, Client, list[str]], None]] = {
    "basic": exercise_basic,
    "streaming": exercise_streaming,
    "human-in-the-loop": exercise_human_in_the_loop,
    "multi-service": exercise_multi_service,
    "functions": exercise_functions,
}
