"""`llamactl worker`: its help, and the deployments and services it refuses before starting anything."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app
from tests.llamactl.serving import write_app
from tests.server.mq.conftest import REDIS_URL

runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def shared_app(folder: Path, url: str = REDIS_URL) -> Path:
    """A deployment on a Redis queue (the key prefix is never used: nothing here starts)."""
    file = write_app(folder, "shared", {"func": "funcs:greet", "slow": "funcs:slow"})
    text = file.read_text().replace(
        "services:\n", f"message-queue:\n  type: redis\n  url: {url}\nservices:\n", 1
    )
    file.write_text(text)
    return file


def test_help_says_what_it_runs_and_what_it_needs() -> None:
    code, out, _ = invoke("worker", "--help")
    assert code == 0
    for words in ("--service", "--replicas", "--grace", "--allow-install", "shared message queue", "zeromq"):
        assert words in out, words


def test_a_deployment_on_the_embedded_queue_is_refused(tmp_path: Path) -> None:
    file = write_app(tmp_path, "solo")
    code, _, err = invoke("worker", str(file))
    assert code == ExitCode.CONFIG
    lines = err.splitlines()
    assert lines[0].startswith("Error: deployment 'solo' uses the embedded message queue (zeromq)")
    assert lines[1].startswith("Hint: give the deployment a shared queue, `message-queue: {type: redis")
    assert len(lines) == 2


def test_an_unknown_service_is_refused_with_the_known_ones(tmp_path: Path) -> None:
    code, _, err = invoke("worker", str(shared_app(tmp_path)), "--service", "func", "--service", "nope")
    assert code == ExitCode.NOT_FOUND
    assert err.splitlines()[0] == (
        "Error: Service 'nope' not found in deployment 'shared': known services are func, slow"
    )
    assert err.splitlines()[1].startswith("Hint: pass one of them with --service")


def test_a_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    code, _, err = invoke("worker", str(tmp_path / "nothing.yml"))
    assert code == ExitCode.USAGE
    assert f"Error: no deployment file at {tmp_path / 'nothing.yml'}" in err


def test_replicas_below_one_are_a_usage_error(tmp_path: Path) -> None:
    code, _, err = invoke("worker", str(shared_app(tmp_path)), "--replicas", "0")
    assert code == ExitCode.USAGE
    assert "--replicas" in err


def test_a_queue_url_it_would_refuse_is_a_config_error(tmp_path: Path) -> None:
    """It said "cannot reach the deployment's message queue ... check that it runs" (exit 1)."""
    code, _, err = invoke("worker", str(shared_app(tmp_path, "redis://127.0.0.1:6379/0?Socket_timeout=1")))
    assert code == ExitCode.CONFIG
    assert "Error: redis message queue config: bad url" in err and "llamactl sets 'socket_timeout'" in err
    assert "Hint: fix `message-queue` in" in err


def test_a_queue_that_does_not_answer_stops_it_before_any_worker_starts(
    tmp_path: Path, closed_port: int
) -> None:
    code, _, err = invoke("worker", str(shared_app(tmp_path, f"redis://127.0.0.1:{closed_port}/0")))
    assert code == ExitCode.ERROR
    assert "Error: cannot reach the deployment's message queue" in err
    assert "Hint: check that it runs and that `message-queue`" in err
    assert "up " not in err


def test_a_git_source_is_checked_out_before_any_worker_starts(tmp_path: Path) -> None:
    """`llamactl worker` on another host fetches a git source as `serve` does (here: one that
    cannot be fetched, and nothing checked out before: it stops, naming the file and git's words)."""
    file = shared_app(tmp_path)
    file.write_text(
        file.read_text().replace(
            "source: {type: local, location: src}", "source: {type: git, location: missing-repo}", 1
        )
    )
    code, _, err = invoke("worker", str(file), "--service", "func")
    assert code == ExitCode.CONFIG, err
    assert "invalid deployment file at 'services.func.source.location': could not fetch its git source" in err
    assert f"fatal: repository '{tmp_path / 'missing-repo'}' does not exist" in err
