"""`llamactl serve` itself (start, refuse, stop on SIGINT) and `deploy` / `deployments` on an empty server."""

from __future__ import annotations

import json
import shlex
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app
from tests.llamactl.serving import Server, llamactl, reaped, write_app

runner = CliRunner()
Invoke = Callable[..., tuple[int, str, str]]


@pytest.fixture(scope="module")
def empty_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # `deploy` may load only from under the server's roots: the tests' tmp_path folders are below this one.
    server = Server(extra=["--deployments-root", str(tmp_path_factory.getbasetemp())])
    try:
        yield server
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.lines)


@pytest.fixture
def cli(empty_server: Server, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    monkeypatch.delenv("LLAMACTL_DEPLOYMENT", raising=False)

    def invoke(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["--server", empty_server.url, *args])
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    return invoke


def test_a_server_started_with_no_deployment_says_how_to_add_one(empty_server: Server) -> None:
    def hint(text: str) -> bool:
        return text.startswith("No deployment yet")

    seen = next(filter(hint, empty_server.stderr.so_far()), None)
    line = seen or empty_server.stderr.wait_for(hint, 10)
    assert "`llamactl deploy deployment.yml`" in line and "`llamactl init`" in line


def test_deploy_reload_list_show_and_delete(cli: Invoke, tmp_path: Path, empty_server: Server) -> None:
    assert cli("status")[1].splitlines()[1] == "Deployments: none"
    code, _, err = cli("run", "hi")
    assert code == ExitCode.NOT_FOUND
    assert "Error: the server runs no deployment" in err

    first = write_app(tmp_path / "one", "one", {"echo": "flows:echo_workflow"})
    code, out, err = cli("deploy", str(first))
    assert (code, out) == (0, "Deployed one\n"), err
    assert err.startswith(f"Deploying {first}")
    assert cli("run", "hi") == (0, "Message received: hi\n", "")
    empty_server.note_workers()

    code, _, err = cli("deploy", str(first))
    assert code == ExitCode.CONFLICT
    assert "Hint: pass --reload to replace the running deployment" in err
    code, out, _ = cli("deploy", str(first), "--reload", "-o", "json")
    assert (code, json.loads(out)) == (0, {"name": "one"})
    assert cli("run", "-d", "one", "again") == (0, "Message received: again\n", "")
    empty_server.note_workers()

    second = write_app(tmp_path / "two", "two", {"greet": "funcs:greet"})
    assert cli("deploy", str(second))[0] == 0
    empty_server.note_workers()
    assert cli("deployments", "list") == (0, "one\ntwo\n", "")
    code, _, err = cli("run", "hi")
    assert code == ExitCode.USAGE
    assert "the server runs 2 deployments: one, two" in err
    assert cli("run", "-d", "two", "-a", "name", "Ada") == (0, "hello Ada\n", "")
    assert "greet" in cli("deployments", "show", "two")[1]

    assert cli("deployments", "delete", "two") == (0, "Deleted two\n", "Stopping two...\n")
    assert cli("deployments", "delete", "one", "-o", "json")[1] == '{\n  "name": "one"\n}\n'
    assert cli("deployments", "list") == (0, "", "")
    # serve said each deployment's coming and going as rows (the deletes said nothing before, and
    # a deployment deployed later had no `ready` row)
    empty_server.stderr.wait_for(lambda line: line.split()[:3] == ["one", "deleted", "its"], 10)
    rows = [line.split() for line in empty_server.stderr.lines]
    assert ["two", "ready", "1", "service"] in rows
    for name in ("one", "two"):
        assert [name, "deleting", "its", "running", "tasks", "finish", "first"] in rows
        assert [name, "deleted", "its", "workers", "stopped"] in rows


def test_a_task_sent_to_a_deployment_being_deleted_is_told_so(
    cli: Invoke, tmp_path: Path, empty_server: Server
) -> None:
    """It got the generic 503 hint ("the server is busy, starting or stopping: try again in a
    moment"), which no wait mends: the deployment is gone once its running tasks finish."""
    file = write_app(tmp_path / "leaving", "leaving", {"slow": "funcs:slow"})
    assert cli("deploy", str(file))[0] == 0
    empty_server.note_workers()
    base = f"{empty_server.url}/deployments/leaving/tasks"
    with reaped(llamactl("--server", empty_server.url, "run", "-d", "leaving", "-a", "seconds", "4")) as run:
        deadline = time.monotonic() + 20
        while not any(t["status"] == "running" for t in httpx.get(base).json()):
            assert run.poll() is None and time.monotonic() < deadline, "the task did not start"
            time.sleep(0.05)
        with reaped(llamactl("--server", empty_server.url, "deployments", "delete", "leaving")) as delete:
            while (answer := cli("run", "-d", "leaving", "-a", "seconds", "0"))[0] == 0:
                assert time.monotonic() < deadline, "the deployment never refused a task"
            code, _, err = answer
            assert code == ExitCode.CONFLICT, err
            assert err.splitlines() == [
                "Error: deployment 'leaving' is being deleted: it takes no new tasks",
                "Hint: its running tasks finish, then it is gone: deploy it again"
                " (`llamactl deploy deployment.yml`) to send it tasks",
            ]
            assert delete.wait(30) == 0, delete.stderr.read() if delete.stderr else ""
        assert run.wait(10) == 0 and run.stdout is not None and run.stdout.read() == "done\n"


def test_deploy_from_outside_the_server_s_folders_names_the_option_for_that_folder(cli: Invoke) -> None:
    """The hint was the same for every refusal: `--deployments-root DIR` for "the folder of the
    file", and `--allow-install`, which has nothing to do with where a file is."""
    with tempfile.TemporaryDirectory(prefix="llamactl-outside-") as outside:  # not under the root
        file = write_app(Path(outside) / "far", "far", {"echo": "flows:echo_workflow"})
        code, _, err = cli("deploy", str(file))
    assert code == ExitCode.FORBIDDEN
    assert f"base_path {file.parent.resolve()} is outside the folders this server may load" in err
    folder = shlex.quote(str(file.parent.resolve()))
    assert f"Hint: start the server with `llamactl serve --deployments-root {folder}`" in err, err
    assert "allow-install" not in err


def test_a_bad_deployment_file_is_a_config_error(cli: Invoke, tmp_path: Path) -> None:
    bad = tmp_path / "deployment.yml"
    bad.write_text("name: bad\nservices:\n  echo:\n    source: {type: lokal, location: src}\n    path: a:b\n")
    code, _, err = cli("deploy", str(bad))
    assert code == ExitCode.CONFIG
    assert "lokal" in err
    assert "Hint: fix the file" in err


def test_deploy_needs_an_existing_file(cli: Invoke, tmp_path: Path) -> None:
    code, _, err = cli("deploy", str(tmp_path / "missing.yml"))
    assert code == ExitCode.USAGE
    assert "does not exist" in err


def test_serve_refuses_a_bad_file_with_the_config_exit_code(tmp_path: Path) -> None:
    bad = tmp_path / "deployment.yml"
    bad.write_text("name: bad\nservices:\n  echo:\n    source: {type: lokal, location: src}\n    path: a:b\n")
    with llamactl("serve", str(bad), "--port", "0") as process:
        out, err = process.communicate(timeout=60)
    assert process.returncode == ExitCode.CONFIG, err
    assert "Error: " in err and "deployment.yml:4" in err
    assert "Hint: fix the file" in err
    assert out == ""


def test_serve_on_a_taken_port_says_so(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        with llamactl("serve", "--port", port) as process:
            _, err = process.communicate(timeout=60)
    assert process.returncode == ExitCode.ERROR, err
    assert f"Error: cannot listen on 127.0.0.1:{port}: Address already in use: pick another --port" in err


def test_serve_refuses_a_public_address_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLAMACTL_API_TOKEN", raising=False)
    with llamactl("serve", "--host", "0.0.0.0", "--port", "0") as process:
        _, err = process.communicate(timeout=60)
    assert process.returncode == ExitCode.ERROR
    assert "without a token" in err


def test_sigint_stops_the_server_cleanly_and_leaves_no_worker(tmp_path: Path) -> None:
    server = Server(write_app(tmp_path, "solo", {"echo": "flows:echo_workflow", "greet": "funcs:greet"}))
    workers = server.note_workers()
    assert len(workers) >= 2
    with llamactl("--server", server.url, "run", "-d", "solo", "-s", "greet") as run:
        out, _ = run.communicate(timeout=60)
    assert out == "hello world\n"
    assert server.stop() == 0
    assert any("Stopping" in line for line in server.stderr.lines)


def test_the_listening_line_comes_after_the_deployments_are_ready(tmp_path: Path) -> None:
    server = Server(write_app(tmp_path, "early", {"echo": "flows:echo_workflow"}))
    try:
        before = server.stderr.lines[
            : next(i for i, line in enumerate(server.stderr.lines) if "Listening" in line)
        ]
        assert any(line.split()[:3] == ["early", "ready", "1"] for line in before), before
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--max-body-size", "lots"], ExitCode.USAGE, "--max-body-size 'lots' is not a size"),
        (["--allow-origin", "*"], ExitCode.ERROR, "neither * nor null"),
        (["--allowed-host", "*"], ExitCode.ERROR, "DNS rebinding"),
        (["--deployments-root", "/no/such/folder"], ExitCode.ERROR, "is not a folder"),
    ],
)
def test_serve_refuses_unsafe_or_malformed_access_options(
    args: list[str], code: ExitCode, needle: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLAMACTL_API_TOKEN", raising=False)
    result = runner.invoke(app, ["serve", "--port", "0", *args])
    assert result.exit_code == code, result.output
    assert needle in result.stderr
