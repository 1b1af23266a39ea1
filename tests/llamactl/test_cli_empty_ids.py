"""An empty task or session id (a script's unset variable: `llamactl tasks show "$TASK"`)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from llamactl.cli.exit_codes import ExitCode
from llamactl.cli.main import app
from tests.llamactl.serving import Server

runner = CliRunner()


@pytest.mark.parametrize(
    "args",
    [
        ["tasks", "show", ""],
        ["tasks", "show", "", "-o", "json"],
        ["tasks", "events", ""],
        ["tasks", "cancel", ""],
        ["tasks", "where", ""],
        ["sessions", "show", ""],
        ["sessions", "delete", " "],
        ["tasks", "list", "-i", ""],
        ["run", "hi", "-i", ""],
    ],
)
def test_an_empty_id_is_a_usage_error(
    demo_server: Server, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """An empty id reached the server as `GET .../tasks/`, whose redirect made the CLI say the
    server "is not a llamactl server" (exit 6); `tasks list -i ""` listed every task as if no
    session had been given, and `run -i ""` ran the task in a new session."""
    monkeypatch.delenv("LLAMACTL_DEPLOYMENT", raising=False)
    result = runner.invoke(app, ["--server", demo_server.url, *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == ExitCode.USAGE, result.stderr
    assert result.stdout == ""
    assert "Error:" in result.stderr and "empty" in result.stderr, result.stderr
    assert "not a llamactl server" not in result.stderr
