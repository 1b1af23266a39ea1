"""Issue #13, point 2: no silent no-op.

An event that cannot be built or delivered is an error for whoever sent it; cancel says what it
did (and waits for a running task to stop); Ctrl-C during `run` names the task that goes on; a
task whose worker crashed shows its real attempts.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app
from llamactl.client import Client
from llamactl.server.types import TaskRecord
from tests.llamactl.serving import Server, llamactl, write_app

runner = CliRunner()
Invoke = Callable[..., tuple[int, str, str]]

CRASHY = '''
import os
from pathlib import Path


async def crash_once(marker: str) -> str:
    """Kills its worker process the first time it runs (no result, no report), then succeeds."""
    flag = Path(marker)
    if not flag.exists():
        flag.write_text("crashed")
        os._exit(1)
    return "second time lucky"
'''


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("noops")
    file = write_app(
        folder,
        "noops",
        {
            "hitl": "flows:hitl_workflow",
            "slow": "funcs:slow",
            "echo": "flows:echo_workflow",
            "crashy": "crashy:crash_once",
        },
    )
    (folder / "src" / "crashy.py").write_text(CRASHY)
    server = Server(file)
    try:
        yield server
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.lines[-30:])


@pytest.fixture
def cli(server: Server, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.delenv("LLAMACTL_DEPLOYMENT", raising=False)

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["--server", server.url, *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def until(
    client: Client, task_id: str, done: Callable[[TaskRecord], bool], timeout: float = 60
) -> TaskRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = client.deployment("noops").tasks.get(task_id)
        if done(record):
            return record
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} still {record.status.value} after {timeout}s")
        time.sleep(0.05)


def waiting_for_input(client: Client) -> str:
    """A human-in-the-loop task that has asked its question and waits."""
    tasks = client.deployment("noops").tasks
    task = tasks.create(service="hitl")
    for event in tasks.events(task.task_id):
        if event.type == "InputRequiredEvent":
            break
    until(client, task.task_id, lambda r: r.status.value == "running")
    return task.task_id


def test_an_event_class_that_does_not_exist_is_an_error(cli: Invoke, client: Client) -> None:
    task_id = waiting_for_input(client)
    code, out, err = cli("tasks", "send-event", task_id, "--event", "workflows.events.Nope", "--json", "{}")
    assert (code, out) == (ExitCode.BAD_REQUEST, "")
    assert f"Error: task '{task_id}' could not take the event workflows.events.Nope" in err
    assert "has no attribute 'Nope'" in err
    assert "Hint: check --event" in err
    assert "Sent" not in err
    # the task still waits for its answer, and takes a good one
    code, _, err = cli("tasks", "send-event", task_id[:13], "--json", '{"response": "42"}')
    assert code == 0, err
    assert until(client, task_id, lambda r: r.status.is_final).result == "the human said 42"


def test_an_event_sent_to_a_function_is_an_error(cli: Invoke, client: Client) -> None:
    task = client.deployment("noops").tasks.create({"seconds": 30}, service="slow")
    until(client, task.task_id, lambda r: r.status.value == "running")
    try:
        code, _, err = cli("tasks", "send-event", task.task_id, "--json", '{"response": "x"}')
        assert code == ExitCode.BAD_REQUEST
        assert "not a workflow: it does not take events" in err
    finally:
        client.deployment("noops").tasks.cancel(task.task_id)


def test_a_delivered_event_is_in_the_task_log(cli: Invoke, client: Client) -> None:
    task_id = waiting_for_input(client)
    code, _, err = cli("tasks", "send-event", task_id, "--json", '{"response": "yes"}')
    assert code == 0 and f"Sent HumanResponseEvent to task {task_id}" in err
    until(client, task_id, lambda r: r.status.is_final)
    lines = cli("tasks", "events", task_id)[1].splitlines()
    assert any(
        line.split()[1:] == ["EventDelivered", "HumanResponseEvent", "reached", "the", "run"]
        for line in lines
    )


def test_cancel_of_a_finished_task_says_it_already_finished(cli: Invoke, client: Client) -> None:
    done = client.deployment("noops").tasks.run({"message": "x"}, service="echo")
    assert done == "Message received: x"
    task_id = client.deployment("noops").tasks.list(status="completed")[-1].task_id
    code, out, err = cli("tasks", "cancel", task_id)
    assert (code, out) == (ExitCode.CONFLICT, "")
    assert f"Error: task {task_id} has already finished (completed): there is nothing to cancel" in err
    assert "no longer takes events" not in err
    assert f"Hint: see how it ended: `llamactl tasks show {task_id} -d noops`" in err


def test_cancel_of_a_running_task_waits_until_it_is_cancelled(cli: Invoke, client: Client) -> None:
    task = client.deployment("noops").tasks.create({"seconds": 60}, service="slow")
    until(client, task.task_id, lambda r: r.status.value == "running")
    code, out, err = cli("tasks", "cancel", task.task_id)
    assert code == 0, err
    assert f"Cancel requested: waiting for task {task.task_id} to stop..." in err
    assert out == f"Task {task.task_id}: cancelled\n"
    # no waiting here: the command returned once it was so
    assert client.deployment("noops").tasks.get(task.task_id).status.value == "cancelled"


def test_cancel_no_wait_returns_once_the_cancel_is_requested(cli: Invoke, client: Client) -> None:
    task = client.deployment("noops").tasks.create({"seconds": 60}, service="slow")
    until(client, task.task_id, lambda r: r.status.value == "running")
    code, out, _ = cli("tasks", "cancel", task.task_id, "--no-wait")
    assert code == 0
    assert out == f"Task {task.task_id}: cancel requested (it is running)\n"
    until(client, task.task_id, lambda r: r.status.value == "cancelled")


def test_ctrl_c_during_run_names_the_task_that_goes_on(server: Server, client: Client) -> None:
    tasks = client.deployment("noops").tasks
    before = {t.task_id for t in tasks.list(status="running")}
    # PYTHONFAULTHANDLER: should the command not end, SIGABRT makes it print where it stands
    # (it once went on for more than 30 s after Ctrl-C in a full suite run, and never alone).
    env = {"PYTHONFAULTHANDLER": "1"}
    with llamactl("--server", server.url, "run", "-s", "slow", "--json", '{"seconds": 60}', env=env) as run:
        deadline = time.monotonic() + 60
        while not (running := {t.task_id for t in tasks.list(status="running")} - before):
            assert time.monotonic() < deadline and run.poll() is None
            time.sleep(0.05)
        run.send_signal(signal.SIGINT)
        try:
            out, err = run.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGABRT)
            out, err = run.communicate(timeout=30)
            raise AssertionError(
                f"still running 30 s after Ctrl-C (task {sorted(running)} seen running); its output:\n"
                f"{out}\nand where it stood (faulthandler):\n{err}"
            ) from None
    (task_id,) = running
    assert run.returncode == ExitCode.INTERRUPTED
    assert out == ""
    assert f"Error: interrupted: task {task_id} goes on without you" in err
    assert f"Hint: follow it with `llamactl tasks events {task_id} -d noops --follow`" in err
    assert "Traceback" not in err
    assert tasks.get(task_id).status.value == "running"
    tasks.cancel(task_id)


def test_a_task_whose_worker_crashed_shows_each_attempt(cli: Invoke, tmp_path: Path) -> None:
    code, out, err = cli("run", "-s", "crashy", "-a", "marker", str(tmp_path / "crashed"))
    assert (code, out) == (0, "second time lucky\n"), err
    listed = json.loads(cli("tasks", "list", "-s", "crashy", "-o", "json")[1])
    task_id = listed[-1]["task_id"]
    shown = cli("tasks", "show", task_id)[1]
    assert "Attempts:   2" in shown
    assert "Started:    -" not in shown
    attempts = [line for line in cli("tasks", "events", task_id)[1].splitlines() if "TaskAttempt" in line]
    assert len(attempts) == 2, attempts
    assert "attempt 1: its worker stopped before it reported anything" in attempts[0]
    assert "attempt 2 started on crashy#1 after attempt 1 ended without a result" in attempts[1]
    assert "Attempt log:" in shown and "attempt 2 started on crashy#1" in shown
