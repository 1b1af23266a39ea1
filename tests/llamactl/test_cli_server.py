"""Every client command of the CLI against a real `llamactl serve` (the `demo` deployment)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator

import pytest
from typer.testing import CliRunner

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app
from llamactl.client import AsyncClient, Client
from llamactl.server.types import TaskRecord, TaskStatus
from tests.llamactl.serving import Lines, Server, llamactl

runner = CliRunner()


@pytest.fixture
def cli(demo_server: Server, monkeypatch: pytest.MonkeyPatch) -> Callable[..., tuple[int, str, str]]:
    monkeypatch.delenv("LLAMACTL_DEPLOYMENT", raising=False)

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["--server", demo_server.url, *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    return invoke


@pytest.fixture
def client(demo_server: Server) -> Iterator[Client]:
    with Client(demo_server.url) as c:
        yield c


def wait_for_task(
    client: Client, task_id: str, done: Callable[[TaskRecord], bool], timeout: float = 30
) -> TaskRecord:
    deadline = time.monotonic() + timeout
    while True:
        record = client.deployment("demo").tasks.get(task_id)
        if done(record):
            return record
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} still {record.status.value} after {timeout}s")
        time.sleep(0.05)


def test_status(cli: Callable[..., tuple[int, str, str]], demo_server: Server) -> None:
    code, out, _ = cli("status")
    assert code == 0
    assert out.splitlines() == [f"Server {demo_server.url}: Healthy", "Deployments: demo"]
    code, out, _ = cli("status", "-o", "json")
    assert json.loads(out)["deployments"] == ["demo"]


def test_deployments_list_and_show(cli: Callable[..., tuple[int, str, str]]) -> None:
    assert cli("deployments", "list") == (0, "demo\n", "")
    assert json.loads(cli("deployments", "list", "-o", "json")[1]) == [{"name": "demo"}]
    code, out, _ = cli("deployments", "show", "demo")
    assert code == 0
    assert "Deployment: demo" in out
    assert any(line.split()[:2] == ["hitl", "Hitl"] for line in out.splitlines())
    assert any(line.split()[:4] == ["hitl", "Hitl", "ready", "1/1"] for line in out.splitlines())
    replicas = out[out.index("\nReplicas:\n") :].splitlines()
    assert replicas[2].split()[:2] == ["REPLICA", "STATE"], out
    assert any(line.split()[:2] == ["hitl#1", "ready"] for line in replicas), out
    state = json.loads(cli("deployments", "show", "demo", "-o", "json")[1])
    assert {s["service_id"] for s in state["services"]} >= {"echo", "stream", "hitl", "slow"}
    assert state["deployment"] == "demo"


def test_run_a_message_on_the_only_deployment(cli: Callable[..., tuple[int, str, str]]) -> None:
    assert cli("run", "hi") == (0, "Message received: hi\n", "")


def test_run_args_are_json_when_they_parse(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = cli(
        "run", "-s", "kinds", "-a", "n", "3", "-a", "s", "abc", "-a", "o", '{"x": 1}', "-o", "json"
    )
    assert code == 0
    assert json.loads(out) == {"n": "int", "s": "str", "o": "dict"}


def test_run_detach_prints_the_task_id_and_returns_before_the_task_ends(
    cli: Callable[..., tuple[int, str, str]], client: Client
) -> None:
    """There was no way to send a task from the command line without waiting for it (a script
    starting several, a long task to look at later) other than Ctrl-C after it was sent."""
    code, out, err = cli("run", "-d", "demo", "-s", "slow", "-a", "seconds", "2", "--detach")
    assert code == 0, err
    task_id = out.strip()
    assert client.deployment("demo").tasks.get(task_id).status.is_final is False  # not waited for
    assert f"`llamactl tasks events {task_id} -d demo --follow`" in err
    done = wait_for_task(client, task_id, lambda r: r.status.is_final)
    assert done.status is TaskStatus.COMPLETED
    code, out, _ = cli("run", "-d", "demo", "-s", "counter", "--detach", "-o", "json")
    assert code == 0 and json.loads(out)["service_id"] == "counter"
    code, _, err = cli("run", "-d", "demo", "--detach", "--stream", "hi")
    assert code == ExitCode.USAGE and "--detach returns at once: it cannot --stream too" in err


def test_run_json_input(cli: Callable[..., tuple[int, str, str]]) -> None:
    assert cli("run", "-d", "demo", "-s", "func", "--json", '{"name": "Ada", "times": 2}') == (
        0,
        "hello Ada hello Ada\n",
        "",
    )


def test_sessions_and_runs_in_a_session(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, _ = cli("sessions", "create", "-o", "json")
    assert code == 0
    session = json.loads(out)["session_id"]
    assert [cli("run", "-s", "counter", "-i", session)[1] for _ in range(2)] == ["1\n", "2\n"]
    assert cli("run", "-s", "counter", "--session", session, "-o", "json")[1] == "3\n"
    shown = json.loads(cli("sessions", "show", session, "-o", "json")[1])
    assert len(shown["task_ids"]) == 3
    assert f"Session: {session}" in cli("sessions", "show", session)[1]
    listed = cli("sessions", "list", "--wide")[1].splitlines()
    assert any(line.split() == [session, "3", shown["task_ids"][-1]] for line in listed), listed
    tasks = json.loads(cli("tasks", "list", "-i", session, "-o", "json")[1])
    assert sorted(t["task_id"] for t in tasks) == sorted(shown["task_ids"])
    assert cli("sessions", "delete", session) == (0, f"Deleted session {session}\n", "")
    code, _, err = cli("sessions", "show", session)
    assert code == ExitCode.NOT_FOUND
    assert "Hint: list the sessions with `llamactl sessions list -d demo`" in err


def test_sessions_list_shows_the_newest_with_short_ids(cli: Callable[..., tuple[int, str, str]]) -> None:
    """It showed the oldest 1,000 sessions (the API's first page), full ids, and said nothing of
    the rest: the sessions a user had just made were not in it once a deployment had more."""
    older, newer = (json.loads(cli("sessions", "create", "-o", "json")[1])["session_id"] for _ in range(2))
    code, out, err = cli("sessions", "list", "-n", "1")
    assert code == 0
    assert out.splitlines()[1:] == [f"{newer[-8:]}  0      -"], out
    assert "(the newest 1 shown: --limit N or --all for more)" in err
    listed = [line.split()[0] for line in cli("sessions", "list")[1].splitlines()[1:]]
    assert listed[-2:] == [older[-8:], newer[-8:]]  # the newest last, as `tasks list` shows them
    every = json.loads(cli("sessions", "list", "--all", "-o", "json")[1])
    assert [s["session_id"] for s in every][-2:] == [older, newer]
    assert cli("sessions", "show", newer[-8:])[1].startswith(f"Session: {newer}\n")


def test_a_task_run_without_a_session_shows_its_session_as_its_own(
    cli: Callable[..., tuple[int, str, str]], client: Client
) -> None:
    """`tasks/run` naming no session gives the task one of its own, which no listing has: the
    task's record says so, rather than show an id that `sessions show` does not know."""
    task_id = f"own-{time.time_ns()}"
    assert client.deployment("demo").tasks.run({}, service="counter", task_id=task_id) == 1
    record = json.loads(cli("tasks", "show", task_id, "-o", "json")[1])
    assert record["own_session"] is True and record["session_id"]
    shown = cli("tasks", "show", task_id)[1]
    assert "Session:    its own (made for this run alone: not listed, keeps no Context)" in shown
    listed = cli("tasks", "list", "--wide", "-s", "counter")[1].splitlines()
    assert next(line for line in listed if line.startswith(task_id)).split()[4] == "(own)"
    assert record["session_id"] not in "\n".join(listed)
    made = client.deployment("demo").sessions.create().session_id
    client.deployment("demo").tasks.run({}, service="counter", session_id=made, task_id=f"{task_id}-2")
    assert json.loads(cli("tasks", "show", f"{task_id}-2", "-o", "json")[1])["own_session"] is False


def test_run_stream_prints_events_then_the_result(cli: Callable[..., tuple[int, str, str]]) -> None:
    code, out, err = cli("run", "-s", "stream", "-a", "count", "3", "--stream")
    assert code == 0, err
    lines = out.splitlines()
    assert [line.split()[:2] for line in lines[:3]] == [
        ["0", "Progress"],
        ["1", "Progress"],
        ["2", "Progress"],
    ]
    assert lines[3].split()[1] == "StopEvent"
    assert lines[-1] == "3"
    assert err.startswith("Task ")
    code, out, _ = cli("run", "-s", "stream", "-a", "count", "2", "--stream", "-o", "json")
    *events, result = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events] == [0, 1, 2]
    assert events[0]["value"] == {"n": 0}
    assert result == 2


def test_a_failing_task(cli: Callable[..., tuple[int, str, str]], client: Client) -> None:
    code, out, err = cli("run", "-s", "boom", "x")
    assert (code, out) == (ExitCode.TASK_FAILED, "")
    assert "Error: task failed: ValueError: cannot handle 'x'" in err
    code, _, err = cli("run", "-s", "boom", "y", "--stream")
    assert code == ExitCode.TASK_FAILED
    task_id = err.split()[1]
    assert f"Error: task {task_id} failed: ValueError: cannot handle 'y'" in err
    code, out, _ = cli("tasks", "show", task_id)
    assert "Status:     failed" in out
    assert "Traceback:" in out


def test_tasks_show_and_events(cli: Callable[..., tuple[int, str, str]], client: Client) -> None:
    task = client.deployment("demo").tasks.create({"count": 2}, service="stream")
    record = wait_for_task(client, task.task_id, lambda r: r.status.is_final)
    shown = json.loads(cli("tasks", "show", task.task_id, "-o", "json")[1])
    assert shown["status"] == "completed" and shown["result"] == 2
    assert "Result:     2" in cli("tasks", "show", task.task_id)[1]
    code, out, _ = cli("tasks", "events", task.task_id)
    assert code == 0
    assert [line.split()[1] for line in out.splitlines()] == ["Progress", "Progress", "StopEvent"]
    code, out, _ = cli("tasks", "events", task.task_id, "--from", "1", "-o", "json")
    assert [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2]
    listed = cli("tasks", "list", "--status", "completed")[1]
    assert record.task_id[-8:] in listed


def test_human_in_the_loop_through_the_cli(cli: Callable[..., tuple[int, str, str]], client: Client) -> None:
    task = client.deployment("demo").tasks.create(service="hitl")
    args = ("--server", client.base_url, "tasks", "events", task.task_id, "-d", "demo", "--follow")
    with llamactl(*args) as follower:
        try:
            assert follower.stdout is not None
            out = Lines(follower.stdout)
            out.wait_for(lambda line: "InputRequiredEvent" in line, 30)
            wait_for_task(client, task.task_id, lambda r: r.waiting_for_answer)
            behind = client.deployment("demo").tasks.create(service="hitl", session_id=task.session_id)
            code, _, err = cli("tasks", "where", behind.task_id)
            assert code == ExitCode.CONFLICT, err
            assert f"waits for task '{task.task_id}' of its session to end, which waits for a person's" in err
            client.deployment("demo").tasks.cancel(behind.task_id)
            row = next(
                line for line in cli("tasks", "list", "--wide")[1].splitlines() if task.task_id in line
            )
            assert row.split()[2] == "asking", row
            asking = json.loads(cli("tasks", "list", "--status", "asking", "-o", "json")[1])
            assert [t["task_id"] for t in asking] == [task.task_id]
            shown = cli("tasks", "show", task.task_id)[1]
            assert "Status:     running, waiting for a person's answer" in shown, shown
            assert "Asks:       What is the answer?" in shown, shown
            assert f"Answer:     llamactl tasks send-event {task.task_id} -d demo --json" in shown, shown
            # Fields a HumanResponseEvent's reader does not look in: refused, the task still asks.
            code, _, err = cli("tasks", "send-event", task.task_id, "--json", '{"answer": "42"}')
            assert code == ExitCode.USAGE, err
            assert """an answer goes in "response": --json '{"response": ...}'""" in err, err
            assert client.deployment("demo").tasks.get(task.task_id).waiting_for_answer
            code, _, err = cli("tasks", "send-event", task.task_id, "--json", '{"response": "42"}')
            assert code == 0, err
            out.wait_for(lambda line: "StopEvent" in line, 30)
            assert follower.wait(30) == 0
        finally:
            if follower.poll() is None:
                follower.kill()
            follower.wait()
            out.rest()
    assert json.loads(cli("tasks", "show", task.task_id, "-o", "json")[1])["result"] == "the human said 42"
    code, _, err = cli("tasks", "send-event", task.task_id, "--json", '{"response": "late"}')
    assert code == ExitCode.CONFLICT
    assert "has already finished (completed)" in err
    assert f"Hint: see how it ended: `llamactl tasks show {task.task_id} -d demo`" in err


def test_cancel(cli: Callable[..., tuple[int, str, str]], client: Client) -> None:
    task = client.deployment("demo").tasks.create({"seconds": 60}, service="slow")
    wait_for_task(client, task.task_id, lambda r: r.status.value == "running")
    code, out, _ = cli("tasks", "cancel", task.task_id)
    assert code == 0
    assert out.startswith(f"Task {task.task_id}: ")
    wait_for_task(client, task.task_id, lambda r: r.status.value == "cancelled")
    code, _, err = cli("tasks", "cancel", task.task_id, "-o", "json")
    assert code == ExitCode.CONFLICT
    assert "already finished" in err


@pytest.mark.parametrize(
    "args",
    [
        ["run", "-d", "nope", "hi"],
        ["run", "-s", "nope", "hi"],
        ["run", "-i", "no-such-session", "hi"],
        ["tasks", "show", "no-such-task"],
        ["tasks", "events", "no-such-task"],
        ["tasks", "cancel", "no-such-task"],
        ["sessions", "show", "no-such-session"],
        ["sessions", "delete", "no-such-session"],
        ["deployments", "show", "nope"],
        ["deployments", "delete", "nope"],
    ],
    ids=" ".join,
)
def test_unknown_names_exit_not_found_with_a_hint(
    cli: Callable[..., tuple[int, str, str]], args: list[str]
) -> None:
    code, out, err = cli(*args)
    assert code == ExitCode.NOT_FOUND, err
    assert out == ""
    error = next(line for line in err.splitlines() if line.startswith("Error: "))
    assert "\nHint: " in err or "`llamactl " in error, "tells what to do"


def test_where_names_the_line_a_running_task_waits_on_then_its_stack(
    cli: Callable[..., tuple[int, str, str]], client: Client, demo_server: Server
) -> None:
    tasks = client.deployment("demo").tasks
    task = tasks.create({"seconds": 60}, service="slow")
    try:
        wait_for_task(client, task.task_id, lambda r: r.status.value == "running")
        code, out, err = cli("tasks", "where", task.task_id, "-d", "demo")
        assert code == 0, err
        first, _, stacks = out.partition("\n\n")
        assert re.fullmatch(rf"Task {task.task_id} on slow#1: in slow \(funcs\.py line \d+\)\n?", first), out
        assert stacks.startswith("Where it is now (most recent call last):\n"), out
        assert "await asyncio.sleep(float(seconds))" in stacks

        code, out, _ = cli("tasks", "where", task.task_id, "-d", "demo", "-o", "json")
        assert code == 0 and json.loads(out)["where"].startswith("in slow (funcs.py line ")
        assert tasks.where(task.task_id).replica_id == "slow#1"

        async def through_the_async_client() -> str:
            async with AsyncClient(demo_server.url) as aclient:
                return (await aclient.deployment("demo").tasks.where(task.task_id)).where

        assert asyncio.run(through_the_async_client()).startswith("in slow (funcs.py line ")
    finally:
        tasks.cancel(task.task_id)
    wait_for_task(client, task.task_id, lambda r: r.status.is_final)
    code, _, err = cli("tasks", "where", task.task_id, "-d", "demo")
    assert code == ExitCode.CONFLICT
    assert "has ended (cancelled): its code runs nowhere to look at" in err
    assert f"llamactl tasks show {task.task_id} -d demo" in err
