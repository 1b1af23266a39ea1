"""The terminal a `llamactl serve` runs in closes: its window, a dropped ssh session, `tmux
kill-session`. The kernel sends the server SIGHUP.

Before: SIGHUP's default ended the server at once; its running task was cut off and ran again
(a second attempt) at the next start, where Ctrl-C lets it finish."""

from __future__ import annotations

import signal
from pathlib import Path

from llamactl.client import Client
from llamactl.server.types import TaskStatus
from tests.e2e.waiting import wait_until_blocking
from tests.llamactl.serving import Server, alive, children, write_app
from tests.llamactl.terminal import Terminal

SERVICES = {"greet": "funcs:greet", "slow": "funcs:slow"}
LISTENING = r"Listening on (http://\S+)"


def test_a_closed_terminal_stops_serve_as_ctrl_c_does_letting_the_running_task_finish(
    tmp_path: Path,
) -> None:
    file = write_app(tmp_path / "app", "hangup", SERVICES)
    with Terminal("serve", str(file), "--port", "0", controlling=True, env={"NO_COLOR": "1"}) as terminal:
        url = terminal.wait_for(LISTENING).group(1)
        with Client(url) as client:
            tasks = client.deployment("hangup").tasks
            task = tasks.create({"seconds": 3}, service="slow")
            wait_until_blocking(
                lambda: tasks.get(task.task_id).status == TaskStatus.RUNNING, 30, "the task runs"
            )
        workers = children(terminal.process.pid)
        assert workers
        terminal.hang_up()
        assert terminal.wait(60) == 0
    wait_until_blocking(lambda: not any(alive(pid) for pid in workers), 10, "the workers end with the server")
    again = Server(file)
    try:
        with Client(again.url) as client:
            record = client.deployment("hangup").tasks.get(task.task_id)
            assert (record.status, record.attempts) == (TaskStatus.COMPLETED, 1)
    finally:
        assert again.stop() == 0


def test_under_nohup_a_closed_terminal_leaves_serve_running(tmp_path: Path) -> None:
    file = write_app(tmp_path / "app", "kept", SERVICES)
    log = tmp_path / "nohup.out"  # nohup's: stdout and stderr were the terminal
    with Terminal(
        "serve", str(file), "--port", "0", controlling=True, wrapper=("nohup",), cwd=tmp_path
    ) as terminal:
        wait_until_blocking(
            lambda: log.exists() and "Listening on" in log.read_text(), 90, "the server listens"
        )
        url = next(line for line in log.read_text().splitlines() if "Listening on" in line).split()[-1]
        terminal.hang_up()
        with Client(url) as client:
            assert client.deployment("kept").tasks.run({"name": "after"}, service="greet") == "hello after"
        assert terminal.process.poll() is None
        assert "Stopping" not in log.read_text()
        terminal.process.send_signal(signal.SIGINT)
        assert terminal.wait(60) == 0
