"""The CLI's parsing, output and errors, against a scripted fake server or none at all."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from llamactl import __version__
from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app
from llamactl.cli.run import build_input
from tests.llamactl.fakes import FakeServer, task_record
from tests.llamactl.serving import write_app

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    monkeypatch.delenv("LLAMACTL_DEPLOYMENT", raising=False)
    server = FakeServer()
    server.on("GET", "/deployments/", [{"name": "demo"}])
    server.install(monkeypatch)
    return server


def test_version() -> None:
    assert invoke("--version") == (0, f"llamactl {__version__}\n", "")


@pytest.mark.parametrize(
    "command",
    [
        ["status"],
        ["run", "hi"],
        ["tasks", "list"],
        ["deployments", "list"],
        ["sessions", "create", "-d", "x"],
    ],
)
def test_an_unreachable_server_says_so_with_a_hint(closed_port: int, command: list[str]) -> None:
    url = f"http://127.0.0.1:{closed_port}"
    code, out, err = invoke("--server", url, *command)
    assert code == ExitCode.UNREACHABLE
    assert out == ""
    assert f"Error: no server answers at {url} (connection refused)" in err
    assert "Hint: start a server with `llamactl serve deployment.yml`" in err


def test_the_server_can_come_from_the_environment(closed_port: int) -> None:
    code, _, err = invoke("status", env={"LLAMACTL_SERVER": f"http://127.0.0.1:{closed_port}"})
    assert code == ExitCode.UNREACHABLE
    assert f"127.0.0.1:{closed_port}" in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (
            ["run", "--port", "4611", "hi"],
            "`llamactl --server 127.0.0.1:PORT run ...`, or set LLAMACTL_SERVER",
        ),
        (
            ["tasks", "list", "--server", "x"],
            "`llamactl --server URL tasks list ...`, or set LLAMACTL_SERVER",
        ),
        (["run", "--token", "t"], "The token goes before the command: `llamactl --token TOKEN run ...`"),
    ],
)
def test_a_server_option_after_the_command_says_where_it_goes(args: list[str], says: str) -> None:
    code, _, err = invoke(*args)
    assert code == 2
    option = next(arg for arg in args if arg.startswith("--"))
    assert f"No such option: {option}." in err and says in err, err
    assert "Possible options" not in err  # "--service" for "--server" would only mislead


def test_other_unknown_options_are_refused_as_before() -> None:
    code, _, err = invoke("run", "--prot", "1")
    assert code == 2 and "No such option: --prot" in err and "goes before" not in err


def test_input_is_json_then_message_then_args() -> None:
    got = build_input(
        "hi", [("n", "3"), ("s", "abc"), ("o", '{"x": [1]}'), ("q", '"7"')], '{"n": 1, "keep": true}'
    )
    assert got == {"n": 3, "keep": True, "message": "hi", "s": "abc", "o": {"x": [1]}, "q": "7"}


def test_run_sends_the_input_and_prints_the_result(fake: FakeServer) -> None:
    fake.on("POST", "/deployments/demo/tasks/run", "Message received: hi")
    fake.on("GET", "/deployments/demo/sessions/s1", {"session_id": "s1", "task_ids": [], "state": {}})
    code, out, _ = invoke("run", "hi", "-a", "count", "3", "--arg", "name", "Ada", "-s", "echo", "-i", "s1")
    assert (code, out) == (0, "Message received: hi\n")
    body = json.loads(fake.last("POST", "/deployments/demo/tasks/run").content)
    assert json.loads(body["input"]) == {"message": "hi", "count": 3, "name": "Ada"}
    assert (body["service_id"], body["session_id"]) == ("echo", "s1")


def test_run_prints_non_text_results_as_json(fake: FakeServer) -> None:
    fake.on("POST", "/deployments/demo/tasks/run", {"pid": 1})
    assert invoke("run")[1] == '{"pid": 1}\n'
    assert invoke("run", "-o", "json")[1] == '{"pid": 1}\n'


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-a", "k"], "requires 2 arguments"),
        (["--json", "[1]"], "JSON object"),
        (["--json", "{"], "not JSON"),
    ],
)
def test_bad_run_input_is_a_usage_error(fake: FakeServer, args: list[str], message: str) -> None:
    code, _, err = invoke("run", *args)
    assert code == ExitCode.USAGE
    assert message in err


def test_several_deployments_need_a_choice(fake: FakeServer) -> None:
    fake.on("GET", "/deployments/", [{"name": "b"}, {"name": "a"}])
    code, _, err = invoke("run", "hi")
    assert code == ExitCode.USAGE
    assert "Error: the server runs 2 deployments: a, b" in err
    assert "Hint: choose one with -d NAME" in err


def test_no_deployment_at_all(fake: FakeServer) -> None:
    fake.on("GET", "/deployments/", [])
    code, _, err = invoke("tasks", "list")
    assert code == ExitCode.NOT_FOUND
    assert "llamactl deploy deployment.yml" in err


def test_a_failed_run_exits_with_the_task_error_and_where_to_look(fake: FakeServer) -> None:
    detail = {"detail": "ValueError: no", "task_id": "t9", "status": "failed"}
    fake.on("POST", "/deployments/demo/tasks/run", detail, status=424)
    code, out, err = invoke("run", "x")
    assert (code, out) == (ExitCode.TASK_FAILED, "")
    assert "Error: task failed: ValueError: no" in err
    assert "llamactl tasks show t9 -d demo" in err


def test_a_token_is_sent_and_a_refusal_explained(fake: FakeServer) -> None:
    fake.on("GET", "/status/", {"detail": "a token is required"}, status=401)
    code, _, err = invoke("--token", "abc", "status")
    assert code == ExitCode.UNAUTHORIZED
    assert fake.last("GET", "/status/").headers["authorization"] == "Bearer abc"
    assert "Hint: pass --token TOKEN or set LLAMACTL_API_TOKEN" in err


def test_deploy_errors_have_their_own_codes(fake: FakeServer, tmp_path: Path) -> None:
    file = write_app(tmp_path, "demo", {"echo": "flows:echo_workflow"})
    fake.on("POST", "/deployments/create", {"detail": "deployment 'demo' already exists"}, status=409)
    code, _, err = invoke("deploy", str(file))
    assert code == ExitCode.CONFLICT
    assert "Hint: pass --reload" in err
    invalid = "<uploaded deployment file>:1: invalid deployment file at 'name': no"
    fake.on("POST", "/deployments/create", {"detail": invalid}, status=400)
    code, _, err = invoke("deploy", str(file), "--reload")
    assert code == ExitCode.CONFIG
    assert f"Error: {file}:1: invalid deployment file" in err
    request = fake.last("POST", "/deployments/create")
    assert request.url.params["reload"] == "true"
    assert request.url.params["base_path"] == str(file.parent.resolve())
    assert b"name: demo" in request.content
    not_loaded = "service 'echo' of deployment 'demo' did not start: module 'flows' not found"
    fake.on("POST", "/deployments/create", {"detail": not_loaded}, status=400)
    assert invoke("deploy", str(file))[0] == ExitCode.WORKFLOW_LOAD


def test_task_lists_are_tables_or_json(fake: FakeServer) -> None:
    # newest first, as the CLI asks (order=desc); shown oldest first
    fake.on("GET", "/deployments/demo/tasks", [task_record("t2", status="failed"), task_record("t1")])
    fake.on("GET", "/deployments/demo/sessions/s1", {"session_id": "s1", "task_ids": [], "state": {}})
    code, out, _ = invoke("tasks", "list", "--status", "failed", "-i", "s1")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["TASK", "SERVICE", "STATUS", "ATTEMPTS", "SESSION", "CREATED"]
    assert lines[2].split()[:3] == ["t2", "echo", "failed"]
    assert fake.last("GET", "/deployments/demo/tasks").url.params["status"] == "failed"
    code, out, _ = invoke("tasks", "list", "-o", "json")
    assert [t["task_id"] for t in json.loads(out)] == ["t1", "t2"]
    assert fake.last("GET", "/deployments/demo/tasks").url.params["order"] == "desc"


def test_an_unknown_status_filter_is_refused(fake: FakeServer) -> None:
    code, _, err = invoke("tasks", "list", "--status", "done")
    assert code == ExitCode.USAGE
    assert "use one of queued, running" in err


def test_send_event_builds_the_serialized_event(fake: FakeServer) -> None:
    path = "/deployments/demo/tasks/t1/events"
    fake.on("GET", "/deployments/demo/tasks/t1", task_record("t1", status="running"))
    fake.on("POST", path, lambda r: httpx.Response(200, json=json.loads(r.content)))
    code, _, err = invoke("tasks", "send-event", "t1", "-s", "hitl", "--json", '{"response": "42"}')
    assert code == 0
    assert "Sent HumanResponseEvent to task t1" in err
    sent = json.loads(fake.last("POST", path).content)
    assert sent["service_id"] == "hitl"
    assert json.loads(sent["event_obj_str"]) == {
        "__is_pydantic": True,
        "value": {"response": "42"},
        "qualified_name": "workflows.events.HumanResponseEvent",
    }
    invoke("tasks", "send-event", "t1", "-s", "hitl", "--json", "{}", "--event", "app.flows.Answer")
    assert json.loads(json.loads(fake.last("POST", path).content)["event_obj_str"])["qualified_name"] == (
        "app.flows.Answer"
    )


def test_not_found_names_what_to_list(fake: FakeServer) -> None:
    fake.on("GET", "/deployments/demo/tasks/nope", {"detail": "task 'nope' not found"}, status=404)
    code, _, err = invoke("tasks", "show", "nope")
    assert code == ExitCode.NOT_FOUND
    assert "Error: task 'nope' not found" in err
    assert "Hint: list the tasks with `llamactl tasks list -d demo`" in err


def test_a_message_that_is_a_json_object_gets_a_hint_toward_json(fake: FakeServer) -> None:
    """`llamactl run '{"message": "hi", "steps": 2}'` ran the workflow with that JSON as the text
    of its message (and the default steps), without a word."""
    fake.on("POST", "/deployments/demo/tasks/run", "ok")
    code, _, err = invoke("run", '{"message": "hi", "steps": 2}')
    assert code == 0
    assert "MESSAGE is a JSON object" in err
    assert """use --json '{"message": "hi", "steps": 2}'""" in err
    body = json.loads(fake.last("POST", "/deployments/demo/tasks/run").content)
    assert json.loads(body["input"]) == {"message": '{"message": "hi", "steps": 2}'}  # still sent as asked
    code, _, err = invoke("run", "{not json} hi")
    assert code == 0 and "JSON object" not in err
