"""`llamactl serve` where things around it go wrong: whoever read its output went away, its
output goes to a disk that fills, it starts with its standard descriptors closed, its
deployment folder is read-only, its limit on open files is low, its address is not this
machine's. It serves on, or says clearly why it cannot, and a signal stops it.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llamactl.cli.exit_codes import ExitCode
from llamactl.client import Client
from tests.faults import small_disk
from tests.llamactl.serving import LISTENING, REPO, Lines, alive, children, reaped, write_app

LOUD = """
async def loud(lines: int = 2000) -> str:
    for n in range(lines):
        print(f"line {n}: a workflow that prints far more than a pipe holds")
    return "said"
"""


def test_a_server_whose_reader_went_away_keeps_serving_and_stops_on_sigterm(tmp_path: Path) -> None:
    """Whoever read `serve`'s output is gone (a `| tee` killed, a log collector restarted), so
    every write gets EPIPE: the server still takes its workers' prints off their pipes (a worker
    whose pipe nobody reads blocks), still answers, and SIGTERM still stops it."""
    file = write_app(tmp_path, "orphan", {"loud": "loud:loud"})
    (tmp_path / "src" / "loud.py").write_text(LOUD)
    argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0", "--access-log"]
    popen = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with reaped(popen) as process:
        assert process.stdout is not None
        url = next((m.group(1) for line in process.stdout if (m := LISTENING.search(line))), None)
        assert url is not None, "the server did not start"
        process.stdout.close()  # the reader goes away
        with Client(url, timeout=60) as client:
            for _ in range(4):  # 4 x ~120 KB of prints: more than the pipes hold
                assert client.deployment("orphan").tasks.run({"lines": 2000}, service="loud") == "said"
        workers = children(process.pid)
        assert workers
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert not [pid for pid in workers if alive(pid)]


def test_a_server_logging_to_a_full_disk_keeps_serving_and_logs_again_once_there_is_room(
    tmp_path: Path,
) -> None:
    """`serve --access-log 2> file` on a disk that fills (a real tmpfs): the lines that do not fit
    are lost, the requests are not; once there is room the log goes on."""
    file = write_app(tmp_path / "app", "logged", {"func": "funcs:greet"})
    with small_disk(tmp_path / "logs", "1m") as disk:
        log = disk.path / "serve.log"
        argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0", "--access-log"]
        with log.open("w") as sink:
            popen = subprocess.Popen(argv, cwd=REPO, stdout=sink, stderr=sink, text=True)
        with reaped(popen) as process:
            deadline = time.monotonic() + 90
            while not (found := LISTENING.search(log.read_text())):
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            filled = disk.fill()
            at_fill = log.stat().st_size
            with Client(found.group(1), timeout=60) as client:
                tasks = client.deployment("logged").tasks
                for n in range(100):  # ~8 KB of access log: more than a page's slack holds
                    assert tasks.run({"name": f"n{n}"}, service="func") == f"hello n{n}"
                when_full = log.stat().st_size
                print(
                    f"injected: filled the log's disk ({filled} bytes); 100 runs answered, "
                    f"the log grew {when_full - at_fill} bytes meanwhile"
                )
                assert when_full - at_fill <= 4096  # what the last page had room for; the rest was refused
                disk.free()
                deadline = time.monotonic() + 30
                while b"/tasks/run" not in log.read_bytes()[when_full:]:
                    assert time.monotonic() < deadline, "no access-log line once the disk had room"
                    assert tasks.run({"name": "room"}, service="func") == "hello room"
                    time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(30) == 0


def test_serve_started_with_stdin_and_stdout_closed_serves_and_stops(tmp_path: Path) -> None:
    """`llamactl serve <&- >&-` (some daemonizers close them): a socket would get fd 0 or 1,
    and libuv aborts the process when it closes one; uvicorn's log setup wants a sys.stdout."""
    file = write_app(tmp_path, "closed", {"func": "funcs:greet"})
    serve = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]
    argv = ["sh", "-c", 'exec "$@" <&- >&-', "sh", *serve]  # exec: the pid is the server's
    popen = subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, text=True)
    with reaped(popen) as process:
        assert process.stderr is not None
        stderr = Lines(process.stderr)
        found = LISTENING.search(stderr.wait_for(lambda line: LISTENING.search(line) is not None, 90))
        assert found is not None
        with Client(found.group(1), timeout=60) as client:
            for n in range(20):  # sockets opened and closed
                assert (
                    client.deployment("closed").tasks.run({"name": f"n{n}"}, service="func") == f"hello n{n}"
                )
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert stderr.rest()[-1] == "Stopped."


def test_ctrl_c_while_a_service_is_still_loading_stops_at_once(tmp_path: Path) -> None:
    """A service whose import hangs: `serve` says it is still loading (it said nothing for the
    two minutes of the start timeout), and Ctrl-C waited out that whole timeout."""
    file = write_app(tmp_path, "stuck", {"hangs": "hangs:fn"})
    marker = tmp_path / "importing"
    (tmp_path / "src" / "hangs.py").write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(600)\n\n\n"
        "async def fn() -> str:\n    return 'never'\n"
    )
    argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]
    with reaped(subprocess.Popen(argv, cwd=REPO, stderr=subprocess.PIPE, text=True)) as process:
        assert process.stderr is not None
        stderr = Lines(process.stderr)
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and process.poll() is None, stderr.so_far()
            time.sleep(0.05)
        loading = stderr.wait_for(lambda line: line.startswith("stuck/hangs"), 30)
        assert loading.split()[1] == "loading" and "importing hangs:fn" in loading, loading
        assert "it has 120 s, its startup-timeout" in loading, loading
        workers = children(process.pid)
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert stderr.rest()[-1] == "Stopped."
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in workers if alive(pid)]


def failed_start(folder: Path, fault: str, *, state_elsewhere: bool = False) -> str:
    """Serve a deployment in ``folder`` (a real tmpfs) made ``fault`` ("read-only" or "full")
    before the start; assert it exits 1 with no traceback; return its stderr.
    ``state_elsewhere``: the state store in memory, so only the broker's journal wants the disk."""
    with small_disk(folder, "4m") as disk:
        file = write_app(disk.path, "frozen", {"func": "funcs:greet"})
        if state_elsewhere:
            file.write_text(file.read_text() + "control-plane:\n  state_store_uri: memory://\n")
        if fault == "read-only":
            disk.read_only()
        else:
            disk.fill()
        argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]
        done = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_serve_of_a_read_only_deployment_folder_says_why_it_cannot_start(tmp_path: Path) -> None:
    """The state store cannot be made there; serve says so and what to do, and says nothing of
    stopping."""
    stderr = failed_start(tmp_path / "ro", "read-only")
    assert "cannot open the SQLite state store" in stderr and "Read-only file system" in stderr
    assert "make its folder writable" in stderr and "Stopping" not in stderr


def test_serve_of_a_read_only_folder_with_its_state_elsewhere_names_the_message_journal(
    tmp_path: Path,
) -> None:
    """The embedded broker's journal still wants the folder: the error names the journal and the
    way out, not the port."""
    stderr = failed_start(tmp_path / "ro", "read-only", state_elsewhere=True)
    assert "cannot open the message journal" in stderr and "Read-only file system" in stderr
    assert "make its folder writable" in stderr and "port" not in stderr


def test_serve_of_a_folder_on_a_full_disk_says_to_free_space(tmp_path: Path) -> None:
    stderr = failed_start(tmp_path / "full", "full")
    assert "cannot open the SQLite state store" in stderr and "full" in stderr
    assert "free some space on its disk" in stderr


def test_serve_with_its_journal_on_a_full_disk_says_to_free_space(tmp_path: Path) -> None:
    stderr = failed_start(tmp_path / "full", "full", state_elsewhere=True)
    assert "cannot open the message journal" in stderr and "full" in stderr
    assert "free some space on its disk" in stderr


def _serve_under(soft: int, hard: int, file: Path) -> list[str]:
    """`llamactl serve FILE` started under these limits on open files, as by a shell's `ulimit`
    or a service manager's LimitNOFILE (exec: the pid is the server's)."""
    limits = f'ulimit -Sn {soft} && ulimit -Hn {hard} && exec "$@"'
    return ["sh", "-c", limits, "sh", sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]


def test_serve_under_a_low_soft_open_file_limit_raises_it_and_takes_every_connection(tmp_path: Path) -> None:
    """Soft limit 64 under a hard 4,096 (shells and service managers often start programs so):
    100 clients connected at once are all answered, not reset when the 64th descriptor is taken."""
    file = write_app(tmp_path, "many", {"func": "funcs:greet"})
    popen = subprocess.Popen(_serve_under(64, 4096, file), cwd=REPO, stderr=subprocess.PIPE, text=True)
    with reaped(popen) as process:
        assert process.stderr is not None
        stderr = Lines(process.stderr)
        found = LISTENING.search(stderr.wait_for(lambda line: LISTENING.search(line) is not None, 90))
        assert found is not None
        limits = Path(f"/proc/{process.pid}/limits").read_text()
        assert re.search(r"Max open files\s+4096\s+4096", limits), limits
        host, port = found.group(1).removeprefix("http://").split(":")
        connections = [socket.create_connection((host, int(port)), timeout=30) for _ in range(100)]
        try:
            for connection in connections:
                connection.sendall(f"GET /status/ HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            for connection in connections:
                assert connection.recv(64).startswith(b"HTTP/1.1 200"), "a connection was not answered"
        finally:
            for connection in connections:
                connection.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


@pytest.mark.parametrize("limit", [30, 40])
def test_serve_under_a_hard_open_file_limit_too_low_says_how_to_raise_it(tmp_path: Path, limit: int) -> None:
    """`ulimit -n 30` (soft and hard): libzmq aborted the process (`Too many open files
    (src/epoll.cpp:38)`); at 40 the port was blamed ("pick another --port")."""
    file = write_app(tmp_path, "cramped", {"func": "funcs:greet"})
    argv = _serve_under(limit, limit, file)
    done = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"Error: this process may open only {limit} files (`ulimit -n`)" in done.stderr
    assert "ulimit -n 4096" in done.stderr and "port" not in done.stderr


def test_serve_on_an_address_not_of_this_machine_says_to_pick_one_that_is(tmp_path: Path) -> None:
    """192.0.2.1 (a documentation address, on no machine): the port was blamed."""
    file = write_app(tmp_path, "elsewhere", {"func": "funcs:greet"})
    argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--host", "192.0.2.1", "--token", "t0ken"]
    done = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "Error: cannot listen on 192.0.2.1:" in done.stderr
    assert "--host must be an address of this machine" in done.stderr and "--port" not in done.stderr


def test_serve_of_a_damaged_state_store_says_to_restore_or_move_it(tmp_path: Path) -> None:
    """A state file that is not SQLite (a torn copy, a bad sector): the error said "make its
    folder writable"."""
    file = write_app(tmp_path, "torn", {"func": "funcs:greet"})
    (tmp_path / ".llamactl").mkdir()
    (tmp_path / ".llamactl" / "state.sqlite").write_bytes(bytes(range(256)) * 64)
    argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]
    done = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot open the SQLite state store" in done.stderr and "file is not a database" in done.stderr
    assert "restore it from a backup or move it aside" in done.stderr and "writable" not in done.stderr


def test_serve_of_a_queue_url_the_queue_refuses_is_a_config_error(tmp_path: Path) -> None:
    """It exited 1 with no hint, as for a queue that does not answer."""
    file = write_app(tmp_path / "app", "badq", {"func": "funcs:greet"})
    queue = "message-queue: {type: redis, url: 'redis://127.0.0.1:6379/0?decode_responses=1'}\n"
    file.write_text(file.read_text().replace("services:\n", queue + "services:\n", 1))
    argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--port", "0"]
    done = subprocess.run(argv, check=False, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == ExitCode.CONFIG, done.stderr
    assert "its query key 'decode_responses' is not one it takes" in done.stderr
    assert "Hint: fix `message-queue` in the deployment file" in done.stderr
