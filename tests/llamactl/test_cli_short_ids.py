"""Issue #13, point 5: short ids.

Every command that takes a task or session id takes a unique start or end of it; `tasks list`
fits in 100 columns with short ids, the ends of the ids (full ones with --wide or -o json), and
reads only the page it shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from typer.testing import CliRunner

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.ids import shorten
from llamactl.cli.main import app
from llamactl.client import Client
from llamactl.server.ids import new_id
from tests.llamactl.fakes import FakeServer, task_record
from tests.llamactl.serving import Server, write_app

runner = CliRunner()
Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    file = write_app(
        tmp_path_factory.mktemp("short"),
        "short",
        {"echo": "flows:echo_workflow", "hitl": "flows:hitl_workflow", "counter": "flows:counter_workflow"},
    )
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


def test_task_commands_take_the_start_of_an_id(cli: Invoke, client: Client) -> None:
    tasks = client.deployment("short").tasks
    tasks.run({"message": "x"}, task_id="prefix-task-0123456789")
    assert "Status:     completed" in cli("tasks", "show", "prefix-task")[1]
    events = cli("tasks", "events", "prefix-t")[1]
    assert "StopEvent" in events
    code, _, err = cli("tasks", "cancel", "prefix-task-01")
    assert code == ExitCode.CONFLICT and "task prefix-task-0123456789 has already finished" in err


def test_send_event_takes_the_start_of_an_id(cli: Invoke, client: Client) -> None:
    tasks = client.deployment("short").tasks
    tasks.create(service="hitl", task_id="asking-9876543210")
    for event in tasks.events("asking-9876543210"):
        if event.type == "InputRequiredEvent":
            break
    code, _, err = cli("tasks", "send-event", "asking-98", "--json", '{"response": "42"}')
    assert code == 0, err
    assert "Sent HumanResponseEvent to task asking-9876543210" in err
    assert tasks.result("asking-9876543210", timeout=30) is not None


def test_a_task_command_takes_the_end_of_an_id(cli: Invoke, client: Client) -> None:
    tasks = client.deployment("short").tasks
    tasks.run({"message": "x"}, task_id="0123456789-ending-task")
    assert "Status:     completed" in cli("tasks", "show", "ending-task")[1]
    made = tasks.create({"message": "y"})  # a new id: its end is what tables show
    assert made.task_id in cli("tasks", "show", made.task_id[-8:])[1]


def test_session_commands_take_the_end_of_an_id(cli: Invoke) -> None:
    session = json.loads(cli("sessions", "create", "-o", "json")[1])["session_id"]
    start = session[-8:]
    assert cli("run", "-s", "counter", "-i", start) == (0, "1\n", "")
    assert cli("run", "-s", "counter", "--session", start) == (0, "2\n", "")
    assert f"Session: {session}" in cli("sessions", "show", start)[1]
    listed = json.loads(cli("tasks", "list", "-i", start, "-o", "json")[1])
    assert len(listed) == 2 and {t["session_id"] for t in listed} == {session}
    assert cli("sessions", "delete", start) == (0, f"Deleted session {session}\n", "")


def test_an_ambiguous_start_lists_the_candidates(cli: Invoke, client: Client) -> None:
    tasks = client.deployment("short").tasks
    tasks.run({"message": "a"}, task_id="twin-1")
    tasks.run({"message": "b"}, task_id="twin-2")
    code, out, err = cli("tasks", "show", "twin")
    assert (code, out) == (ExitCode.USAGE, "")
    assert "Error: 'twin' is the start or end of several task ids: twin-1, twin-2" in err
    assert "Hint: type more of the id" in err


def test_a_start_that_matches_nothing_is_not_found(cli: Invoke) -> None:
    code, _, err = cli("tasks", "show", "zzz-nothing")
    assert code == ExitCode.NOT_FOUND
    assert "'zzz-nothing' not found" in err


def test_tasks_list_fits_100_columns_with_short_ids(cli: Invoke, client: Client) -> None:
    tasks = client.deployment("short").tasks
    session = client.deployment("short").sessions.create().session_id
    for n in range(3):
        tasks.run({"message": str(n)}, session_id=session)
    code, out, _ = cli("tasks", "list")
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 100, out
    full = json.loads(cli("tasks", "list", "-o", "json")[1])
    newest = full[-1]
    row = out.splitlines()[-1].split()
    assert row[0] == newest["task_id"][-8:] and row[4] == newest["session_id"][-8:]
    wide = cli("tasks", "list", "--wide")[1]
    assert newest["task_id"] in wide and newest["session_id"] in wide


def test_tasks_list_shows_the_newest_and_says_when_there_are_more(cli: Invoke, client: Client) -> None:
    tasks = client.deployment("short").tasks
    for n in range(3):
        tasks.run({"message": f"more {n}"})
    newest = [t.task_id for t in tasks.page(limit=2, newest_first=True).items]
    code, out, err = cli("tasks", "list", "--limit", "2")
    assert code == 0
    rows = out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == [i[-8:] for i in reversed(newest)]  # oldest of them first
    assert "(the newest 2 shown: --limit N or --all for more)" in err
    assert len(json.loads(cli("tasks", "list", "--all", "-o", "json")[1])) >= 6


def test_tasks_list_reads_only_the_page_it_shows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMACTL_DEPLOYMENT", raising=False)
    fake = FakeServer()
    fake.on("GET", "/deployments/", [{"name": "demo"}])
    fake.on("GET", "/deployments/demo/tasks", [task_record(f"t{n}") for n in range(20)])
    fake.install(monkeypatch)
    result = runner.invoke(app, ["tasks", "list"])
    assert result.exit_code == 0, result.stderr
    asked = [r for r in fake.requests if r.url.path == "/deployments/demo/tasks"]
    assert len(asked) == 1
    assert dict(asked[0].url.params) == {"limit": "20", "order": "desc"}


def test_short_ids_are_ends_that_grow_until_they_differ() -> None:
    a = "one-0123456789abcdef"
    b = "two-0123456789abcdef"
    shown = shorten([a, b, "short"])
    assert shown["short"] == "short"
    assert shown[a] != shown[b] and a.endswith(shown[a]) and len(shown[a]) >= 8
    assert shorten(["1234abcdefgh", "9999zzzzzzzz"]) == {
        "1234abcdefgh": "abcdefgh",
        "9999zzzzzzzz": "zzzzzzzz",
    }


def test_server_made_ids_of_one_minute_differ_in_their_short_form() -> None:
    made = [new_id() for _ in range(50)]  # all share their first 8 characters
    assert len({i[:8] for i in made}) == 1
    assert shorten(made) == {i: i[-8:] for i in made}
