"""Issue #13, point 6: colours and status glyphs when the output is a terminal; none when piped
or with NO_COLOR."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamactl.client import Client
from tests.llamactl.serving import REPO, Server, write_app
from tests.llamactl.terminal import ANSI, run_at_terminal

GLYPHS = ("✓", "✗", "○", "●", "⊘")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    file = write_app(
        tmp_path_factory.mktemp("colors"),
        "colors",
        {"echo": "flows:echo_workflow", "boom": "flows:failing_workflow"},
    )
    server = Server(file)
    try:
        with Client(server.url) as client:
            tasks = client.deployment("colors").tasks
            tasks.create({"message": "ok"}, service="echo")
            tasks.create({"message": "no"}, service="boom")
            for task in tasks.list():
                tasks.result(task.task_id, timeout=30)
        yield server
    finally:
        assert server.stop() == 0


def piped(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llamactl", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_statuses_have_colours_and_glyphs_at_a_terminal(server: Server) -> None:
    code, shown = run_at_terminal("--server", server.url, "tasks", "list")
    assert code == 0
    assert "\x1b[32m✓ completed" in shown  # green
    assert "\x1b[31m✗ failed" in shown  # red


def test_piped_output_has_neither(server: Server) -> None:
    done = piped("--server", server.url, "tasks", "list")
    assert done.returncode == 0
    assert not ANSI.search(done.stdout + done.stderr)
    assert not any(glyph in done.stdout for glyph in GLYPHS)
    assert "completed" in done.stdout and "failed" in done.stdout


def test_no_color_turns_both_off_at_a_terminal(server: Server) -> None:
    code, shown = run_at_terminal("--server", server.url, "tasks", "list", env={"NO_COLOR": "1"})
    assert code == 0
    assert not ANSI.search(shown)
    assert not any(glyph in shown for glyph in GLYPHS)


def test_ok_warning_and_error_are_coloured_at_a_terminal(tmp_path: Path) -> None:
    file = write_app(tmp_path, "checked", {"echo": "flows:echo_workflow"})
    code, shown = run_at_terminal("validate", str(file))
    assert code == 0
    assert "echo: \x1b[32m✓ ok" in shown
    file.write_text(file.read_text() + "replica: 2\n")
    code, shown = run_at_terminal("validate", str(file))
    assert code == 0 and "\x1b[33m\x1b[1mWarning:" in shown
    code, shown = run_at_terminal("validate", str(tmp_path / "missing.yml"))
    assert code != 0 and "\x1b[31m\x1b[1mError:" in shown
    done = piped("validate", str(tmp_path / "missing.yml"))
    assert done.stderr.startswith("Error: ") and not ANSI.search(done.stderr)


def test_the_server_status_is_coloured_at_a_terminal(server: Server) -> None:
    code, shown = run_at_terminal("--server", server.url, "status")
    assert code == 0 and "\x1b[32m✓ Healthy" in shown
    assert piped("--server", server.url, "status").stdout.splitlines()[0] == f"Server {server.url}: Healthy"
