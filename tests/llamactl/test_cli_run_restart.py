"""`llamactl run` across a server that is killed and started again while its task runs."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from llamactl.client import Client
from tests.llamactl.serving import REPO, Lines, Server, llamactl, reaped, write_app
from tests.llamactl.terminal import Terminal, plain


def _killed(server: Server) -> None:
    server.process.kill()
    server.process.wait()
    server.stderr.rest()
    assert server.process.stderr is not None
    server.process.stderr.close()


@contextlib.contextmanager
def _started_again(file: Path, port: str) -> Iterator[Server]:
    """The server started again on the port of the one before, stopped when the block ends."""
    second = Server(file, extra=["--port", port])
    try:
        yield second
    finally:
        second.stop()


def _until_running(server: Server, deployment: str, count: int) -> None:
    """Wait (60 s at most) until ``count`` tasks of the deployment run."""
    with Client(server.url) as client:
        tasks = client.deployment(deployment).tasks
        deadline = time.monotonic() + 60
        while len(tasks.list(status="running")) < count:
            assert time.monotonic() < deadline, "the tasks never started"
            time.sleep(0.05)


def test_run_waits_for_a_restarted_server_and_prints_the_result(tmp_path: Path) -> None:
    """`run` said the server "is not a llamactl server: it does not answer HTTP" (exit 6) when the
    server it was waiting on was killed, though its task, stored, ran again once it was back."""
    file = write_app(tmp_path / "app", "restart", {"slow": "funcs:slow"})
    first = Server(file)
    port = first.url.rsplit(":", 1)[1]
    try:
        with reaped(llamactl("--server", first.url, "run", "-s", "slow", "-a", "seconds", "2")) as run:
            _until_running(first, "restart", 1)
            _killed(first)
            with _started_again(file, port):
                out, err = run.communicate(timeout=120)
    finally:
        if first.process.poll() is None:
            _killed(first)
    assert run.returncode == 0, err
    assert out.strip() == "done"
    assert "goes on when the server is back: waiting for it" in err, err
    assert "not a llamactl server" not in err


def test_run_waits_for_a_deployment_that_is_still_starting(tmp_path: Path) -> None:
    """`run` sent while the deployment's service still loaded its code (a newcomer's second
    terminal, quicker than a slow import) failed with "is starting: try again in a moment"."""
    file = write_app(tmp_path / "app", "slowstart", {"late": "late:echo"})
    marker = tmp_path / "importing"
    (tmp_path / "app" / "src" / "late.py").write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(3)\n\n\n"
        "async def echo(message: str) -> str:\n    return message\n"
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", str(port)]
    with reaped(subprocess.Popen(argv, cwd=REPO, stderr=subprocess.DEVNULL)) as serve:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and serve.poll() is None
            time.sleep(0.05)
        with reaped(llamactl("--server", f"127.0.0.1:{port}", "run", "hi")) as run:
            out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert out.strip() == "hi"
        assert "deployment 'slowstart' is starting: waiting for it" in err
        serve.send_signal(signal.SIGINT)
        assert serve.wait(30) == 0


def test_streamed_events_are_followed_again_once_the_server_is_back(tmp_path: Path) -> None:
    """`run --stream` and `tasks events --follow` failed ("stream lost and not resumable:
    Connection refused", exit 1) a few seconds after their server was killed, though the task
    went on once a server was back."""
    file = write_app(tmp_path / "app", "restream", {"ticks": "funcs:ticks"})
    first = Server(file)
    port = first.url.rsplit(":", 1)[1]
    try:
        argv = ["--server", first.url, "run", "--stream", "-a", "n", "40", "-a", "every", "0.1"]
        with reaped(llamactl(*argv)) as run:
            out, err = Lines(run.stdout), Lines(run.stderr)
            out.wait_for(lambda line: '"i": 3' in line, 60)
            task_id = err.so_far()[0].split()[1]  # "Task <id> (service ...)"
            follow = ["--server", first.url, "tasks", "events", task_id, "--follow"]
            with reaped(llamactl(*follow)) as follower:
                out2, err2 = Lines(follower.stdout), Lines(follower.stderr)
                out2.wait_for(lambda line: '"i": 3' in line, 60)
                _killed(first)
                # The server stays away longer than a stream's own reconnects (about 3 s) last.
                deadline = time.monotonic() + 30
                for proc, lines in ((run, err), (follower, err2)):
                    while proc.poll() is None and not any("to come back" in x for x in lines.so_far()):
                        assert time.monotonic() < deadline, lines.so_far()
                        time.sleep(0.05)
                with _started_again(file, port):
                    assert run.wait(120) == 0, err.rest()
                    assert follower.wait(120) == 0, err2.rest()
    finally:
        if first.process.poll() is None:
            _killed(first)
    for printed, said in ((out.rest(), err.rest()), (out2.rest(), err2.rest())):
        assert any("waiting for it to come back" in line for line in said), said
        seqs = [int(line.split()[0]) for line in printed if line[:3].strip().isdigit()]
        assert seqs == sorted(set(seqs)), "every event once, in order"
        assert any("TaskAttempt" in line for line in printed)  # the task ran again on the new server
    assert out.lines[-1].strip() == '{"i": 40, "done": true}', out.lines[-3:]


def test_run_at_a_terminal_asks_again_after_a_restart_and_sends_the_answer_typed(tmp_path: Path) -> None:
    """The server killed while `run` prompted for a workflow's answer: once a server is back, the
    task runs again and asks again, and `run` shows that question with its prompt. Before, `run`
    went back to a bare wait: the second question never showed, and it waited for nobody."""
    file = write_app(tmp_path / "app", "askagain", {"hitl": "flows:hitl_workflow"})
    first = Server(file)
    port = first.url.rsplit(":", 1)[1]
    try:
        with Terminal("--server", first.url, "run", "-s", "hitl") as terminal:
            terminal.wait_for(r"Your answer: ")
            _killed(first)
            terminal.wait_for(r"goes on when the server is back: waiting for it")
            with _started_again(file, port):
                asked_twice = r"(?s)(The workflow asks: What is the answer\?.*){2}Your answer: "
                terminal.wait_for(asked_twice, 60)
                assert "Your answer: The workflow" not in plain(terminal.output)  # each on a line
                terminal.type("42\n")
                terminal.wait_for(r"Sent\.")
                assert terminal.wait(60) == 0
                assert "the human said 42" in plain(terminal.output)
    finally:
        if first.process.poll() is None:
            _killed(first)


def _stopped(server: Server) -> None:
    """SIGTERM, as a supervisor's restart or Ctrl-C sends: it lets its running tasks finish."""
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(60) == 0
    server.stderr.rest()
    assert server.process.stderr is not None
    server.process.stderr.close()


def test_run_and_a_stream_wait_across_a_server_stopped_and_started_again(tmp_path: Path) -> None:
    """A server stopped in order (Ctrl-C and up-arrow, `systemctl restart`) answered its waiters
    "the server is stopping" at once, and `run` gave up (exit 6), where a killed one was waited
    for; the task had even finished during the stop. `run` and `run --stream` wait for it now."""
    file = write_app(tmp_path / "app", "again", {"slow": "funcs:slow", "ticks": "funcs:ticks"})
    first = Server(file)
    port = first.url.rsplit(":", 1)[1]
    try:
        waiting = llamactl("--server", first.url, "run", "-s", "slow", "-a", "seconds", "2")
        ticks = ["-s", "ticks", "-a", "n", "30", "-a", "every", "0.1"]
        with (
            reaped(waiting) as run,
            reaped(llamactl("--server", first.url, "run", "--stream", *ticks)) as streaming,
        ):
            out, err = Lines(streaming.stdout), Lines(streaming.stderr)
            out.wait_for(lambda line: '"i": 3' in line, 60)
            _until_running(first, "again", 2)
            _stopped(first)
            with _started_again(file, port):
                printed, said = run.communicate(timeout=120)
                assert streaming.wait(120) == 0, err.rest()
    finally:
        if first.process.poll() is None:
            _killed(first)
    assert run.returncode == 0, said
    assert printed.strip() == "done"
    assert "the server is stopping; task" in said and "waiting for it" in said, said
    assert any("the server is stopping; task" in line for line in err.rest()), err.lines
    shown = out.rest()
    seqs = [int(line.split()[0]) for line in shown if line[:3].strip().isdigit()]
    assert seqs == sorted(set(seqs)), "every event once, in order"
    assert shown[-1].strip() == '{"i": 30, "done": true}', shown[-3:]
