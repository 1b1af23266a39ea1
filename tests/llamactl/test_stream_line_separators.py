"""Event streams whose events hold characters that Python's str.splitlines() breaks at (U+2028
LINE SEPARATOR, U+0085 NEXT LINE...), which JSON leaves as they are and SSE does not end a line at."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from llamactl.cli.main import app
from llamactl.client import AsyncClient, Client
from llamactl.client._streams import lines_of
from tests.llamactl.serving import Server

MESSAGE = "one\u2028two\x85three\u2029four"
"""Text as a model or a pasted document can hold it."""

runner = CliRunner()


def test_the_clients_read_events_that_hold_line_separators(demo_server: Server) -> None:
    """httpx's iter_lines() cut such an event's `data:` line in two, and the client said the
    server "is not a llamactl server: its stream ... is not what a llamactl server sends"."""
    with Client(demo_server.url) as client:
        tasks = client.deployment("demo").tasks
        task = tasks.create({"message": MESSAGE}, service="echo")
        assert task.task_id is not None
        events = list(tasks.events(task.task_id))
        raw = list(tasks.events(task.task_id, raw=True))
    assert MESSAGE in json.dumps(events[-1].value, ensure_ascii=False)
    assert MESSAGE in json.dumps(raw[-1], ensure_ascii=False)


async def test_the_async_client_reads_them_too(demo_server: Server) -> None:
    async with AsyncClient(demo_server.url) as client:
        tasks = client.deployment("demo").tasks
        task = await tasks.create({"message": MESSAGE}, service="echo")
        assert task.task_id is not None
        events = [event async for event in tasks.events(task.task_id)]
    assert MESSAGE in json.dumps(events[-1].value, ensure_ascii=False)


def test_run_stream_prints_them(demo_server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --stream` exited 6 after the task's id, and printed no event."""
    monkeypatch.delenv("LLAMACTL_DEPLOYMENT", raising=False)
    result = runner.invoke(app, ["--server", demo_server.url, "run", "--stream", "-o", "json", MESSAGE])
    assert result.exit_code == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.split("\n") if line.startswith("{")]
    assert any(MESSAGE in json.dumps(line, ensure_ascii=False) for line in lines), result.stdout


@pytest.mark.parametrize(
    "pieces",
    [
        ["a\u2028b\r\n", "\r\nc\x85d\n"],
        ["a\u2028b\r", "\n\r", "\nc\x85d\n"],
        ["a\u2028", "b\r\n\r", "\nc", "\x85d\n"],
    ],
)
def test_lines_end_at_cr_lf_lf_or_cr_alone_across_pieces(pieces: list[str]) -> None:
    assert list(lines_of(pieces)) == ["a\u2028b", "", "c\x85d"]
    assert list(lines_of(["x\ry\n", "z"])) == ["x", "y", "z"]
