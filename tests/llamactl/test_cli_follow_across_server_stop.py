"""`tasks events --follow` and `run --stream` across a server stopped in order and started again."""

from __future__ import annotations

import signal
from pathlib import Path

from llamactl.client import Client
from tests.llamactl.serving import Lines, Server, llamactl, reaped, write_app


def _seqs(printed: list[str]) -> list[int]:
    return [int(line.split()[0]) for line in printed if line[:3].strip().isdigit()]


def _stopped(server: Server) -> None:
    """SIGTERM, as a supervisor's restart sends: it lets the running task finish, then exits."""
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    server.stderr.rest()
    assert server.process.stderr is not None
    server.process.stderr.close()


def test_a_followed_stream_goes_on_after_the_server_is_stopped_and_started_again(tmp_path: Path) -> None:
    """A server stopped in order (SIGTERM, Ctrl-C) ends its event streams without their `end`
    frame: `tasks events --follow` took that for the end of the task and exited 0 after the
    events printed so far, and `run --stream` printed none of the later ones, though the task
    went on (the server let it finish) and its log held them all."""
    file = write_app(tmp_path / "app", "stopfollow", {"ticks": "funcs:ticks"})
    first = Server(file)
    port = first.url.rsplit(":", 1)[1]
    second: Server | None = None
    try:
        with Client(first.url) as client:
            task = client.deployment("stopfollow").tasks.create({"n": 30, "every": 0.1}, service="ticks")
        assert task.task_id is not None
        follow = ["--server", first.url, "tasks", "events", task.task_id, "--follow"]
        stream = [
            "--server",
            first.url,
            "run",
            "--stream",
            "-s",
            "ticks",
            "-a",
            "n",
            "30",
            "-a",
            "every",
            "0.1",
        ]
        with reaped(llamactl(*follow)) as follower, reaped(llamactl(*stream)) as run:
            followed, streamed = Lines(follower.stdout), Lines(run.stdout)
            followed.wait_for(lambda line: '"i": 3' in line, 60)
            streamed.wait_for(lambda line: '"i": 3' in line, 60)
            _stopped(first)
            second = Server(file, extra=["--port", port])
            follower_said, run_said = Lines(follower.stderr), Lines(run.stderr)
            assert follower.wait(120) == 0, follower_said.rest()
            assert run.wait(120) == 0, run_said.rest()
            for printed in (followed.rest(), streamed.rest()):
                assert _seqs(printed) == list(range(31)), printed  # every tick once, in order
    finally:
        for server in (first, second):
            if server is not None and server.process.poll() is None:
                server.stop()
