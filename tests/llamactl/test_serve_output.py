"""Issue #13, point 4: `serve` output a person can read.

One aligned line per service as it comes up and per reload; worker log lines behind --log-level
(default: warnings and what the worker prints itself), -q, an access log behind --access-log;
deployment-file warnings as `validate` prints them (also on a --watch reload); ./deployment.yml
when no FILE is given.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llamactl.cli.serve_output import ServeOutput
from llamactl.client import Client
from tests.llamactl.serving import LISTENING, Lines, Server, waiting_spare, write_app

CHATTY = """
import logging

log = logging.getLogger("chatty")


async def chatty() -> str:
    log.info("an info line")
    log.warning("a warning line")
    log.error("an error line")
    print("a print line")
    return "ok"
"""


def app(folder: Path, name: str) -> Path:
    file = write_app(folder, name, {"e": "flows:echo_workflow", "chatty_service": "chatty:chatty"})
    (folder / "src" / "chatty.py").write_text(CHATTY)
    return file


def verb_column(line: str) -> int:
    """Where the second column starts (the key is padded to the same width on every row)."""
    match = re.match(r"^\S+\s+", line)
    assert match is not None, line
    return match.end()


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    folder = tmp_path_factory.mktemp("output")
    server = Server(app(folder, "out"), extra=["--watch", "--access-log"])
    try:
        yield server, folder
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.lines[-30:])


def test_one_aligned_line_per_service_as_it_comes_up(watched: tuple[Server, Path]) -> None:
    server, _ = watched
    up = [line for line in server.stderr.lines if line.split()[1:2] == ["up"]]
    assert sorted(line.split()[0] for line in up) == ["out/chatty_service", "out/e"]
    assert len({verb_column(line) for line in up}) == 1, up
    ready = next(line for line in server.stderr.lines if line.split()[:2] == ["out", "ready"])
    assert verb_column(ready) == verb_column(up[0])
    assert any("1/1 replica ready (E)" in line for line in up)


def test_worker_lines_show_warnings_errors_and_prints_by_default(watched: tuple[Server, Path]) -> None:
    server, _ = watched
    with Client(server.url) as client:
        assert client.deployment("out").tasks.run(service="chatty_service") == "ok"
    printed = server.stderr.wait_for(lambda line: line.endswith("| a print line"), 30)
    assert printed.startswith("out/chatty_service#1")
    lines = server.stderr.lines
    assert any(line.endswith("| WARNING chatty: a warning line") for line in lines)
    assert any(line.endswith("| ERROR chatty: an error line") for line in lines)
    assert not any("an info line" in line for line in lines)


def test_the_access_log_has_a_line_per_request(watched: tuple[Server, Path]) -> None:
    server, _ = watched
    with Client(server.url) as client:
        client.status()
    line = server.stderr.wait_for(lambda text: '"GET /status/ HTTP/1.1" 200 OK' in text, 30)
    assert re.match(r'^127\.0\.0\.1:\d+ - "GET /status/ HTTP/1\.1" 200 OK \d+\.\d ms$', line), line
    assert not any("authorization" in text.lower() for text in server.stderr.lines)


def test_a_reload_is_one_aligned_line(watched: tuple[Server, Path]) -> None:
    server, folder = watched
    up = next(line for line in server.stderr.lines if line.startswith("out/e "))
    chatty = folder / "src" / "chatty.py"
    chatty.write_text(chatty.read_text() + "\n# edited\n")
    reloaded = server.stderr.wait_for(lambda line: line.split()[1:2] == ["reloaded"], 60)
    assert re.match(r"^out/\S+\s+reloaded\s+generation 2 in \d+ ms$", reloaded), reloaded
    assert verb_column(reloaded) == verb_column(up)


def test_a_warning_in_a_watched_file_reads_as_validate_prints_it(watched: tuple[Server, Path]) -> None:
    server, folder = watched
    file = folder / "deployment.yml"
    file.write_text(file.read_text() + "replica: 2\n")
    warning = server.stderr.wait_for(lambda line: "'replica'" in line, 60)
    assert re.match(rf"^Warning: {re.escape(str(file))}:\d+: 'replica': unknown key, ignored: ", warning)
    assert not any("UserWarning" in line or "warnings.warn" in line for line in server.stderr.lines)


def _run_chatty(server: Server) -> None:
    with Client(server.url) as client:
        assert client.deployment("out").tasks.run(service="chatty_service") == "ok"


def test_a_killed_worker_and_a_reload_that_does_not_load_each_read_as_one_row(tmp_path: Path) -> None:
    """A killed worker printed two raw log records (the supervisor's and the deployment's) where
    a remote worker's read as one `restarting` row; a reload whose code had a syntax error added
    the same two records to its `failed` row, whose traceback showed importlib's frames instead
    of the line with the mistake."""
    file = write_app(tmp_path / "app", "kill", {"e": "late:echo"})
    module = tmp_path / "app" / "src" / "late.py"
    module.write_text("async def echo(message: str) -> str:\n    return message\n")
    server = Server(file, extra=["--watch"])
    try:
        (pid,) = [pid for pid in server.note_workers() if not waiting_spare(pid)]  # not the reload's spare
        os.kill(pid, signal.SIGKILL)
        row = server.stderr.wait_for(lambda line: line.startswith("kill/e#1 "), 30)
        assert re.match(r"^kill/e#1\s+restarting\s+exited with code -9; again in \d+\.\d s$", row), row
        with Client(server.url) as client:  # served by the restarted worker
            assert client.deployment("kill").tasks.run({"message": "back"}, service="e") == "back"
        module.write_text("x = 1\ndef broken(:\n    pass\n")
        failed = server.stderr.wait_for(lambda line: line.split()[1:2] == ["failed"], 60)
        assert "syntax error in" in failed and "still serving the previous generation" in failed
        server.stderr.wait_for(lambda line: line.strip() == "SyntaxError: invalid syntax", 30)
        shown = server.stderr.lines[server.stderr.lines.index(failed) :]
        assert [line.strip() for line in shown[1:4]] == [f'File "{module}", line 2', "def broken(:", "^"]
        assert not any("importlib" in line for line in shown), shown
        assert not any(line.startswith("WARNING llamactl.server") for line in server.stderr.lines), (
            server.stderr.lines
        )
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.lines[-30:])


def test_a_task_that_ends_its_worker_with_a_code_of_ours_reads_as_that_exit(tmp_path: Path) -> None:
    """`os._exit(3)` in a task read `restarting  its code does not load`, and `os._exit(6)` was
    taken for a worker asking to be replaced: restarted without a word, not counted as a crash.
    Only the worker's own exits carry those meanings now (it declares them to its supervisor)."""
    file = write_app(tmp_path / "app", "exit", {"three": "leave:leave", "six": "leave:leave"})
    (tmp_path / "app" / "src" / "leave.py").write_text(
        "import os\n\ndef leave(code: int) -> None:\n    os._exit(code)\n"
    )
    server = Server(file)
    try:
        with Client(server.url) as client:
            tasks = client.deployment("exit").tasks
            tasks.create({"code": 3}, service="three")
            tasks.create({"code": 6}, service="six")
        for service, code in (("three", 3), ("six", 6)):
            row = server.stderr.wait_for(lambda line, s=service: line.startswith(f"exit/{s}#1 "), 30)
            assert re.match(rf"^exit/{service}#1\s+restarting\s+exited with code {code}; again in", row), row
    finally:
        assert server.stop() == 0, "\n".join(server.stderr.lines[-30:])


def test_quiet_prints_only_errors_and_the_listening_line(tmp_path: Path) -> None:
    server = Server(app(tmp_path, "out"), extra=["-q"])
    try:
        listening = [line for line in server.stderr.lines if LISTENING.search(line)]
        assert server.stderr.lines == listening, server.stderr.lines
        _run_chatty(server)
        server.stderr.wait_for(lambda line: "an error line" in line, 30)
    finally:
        assert server.stop() == 0
    assert not any("a warning line" in line or "a print line" in line for line in server.stderr.lines)


def test_log_level_info_shows_the_workers_info_lines(tmp_path: Path) -> None:
    server = Server(app(tmp_path, "out"), extra=["--log-level", "info"])
    try:
        _run_chatty(server)
        server.stderr.wait_for(lambda line: line.endswith("| INFO chatty: an info line"), 30)
    finally:
        assert server.stop() == 0


def test_serve_without_a_file_serves_the_deployment_yml_of_the_folder(tmp_path: Path) -> None:
    app(tmp_path, "here")
    process = subprocess.Popen(
        [sys.executable, "-m", "llamactl", "serve", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines = Lines(process.stderr)
    try:
        lines.wait_for(lambda line: LISTENING.search(line) is not None, 120)
        assert any(line.split()[:2] == ["here", "ready"] for line in lines.lines)
        process.send_signal(signal.SIGINT)
        assert process.wait(60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        lines.rest()
        process.stderr.close()


# --- the formatting itself ------------------------------------------------------------------


def formatted(*events: str, **options: object) -> list[str]:
    out: list[str] = []
    output = ServeOutput(write=out.append, **options)  # type: ignore[arg-type]
    for event in events:
        output.event(event)
    return out


def test_engine_sentences_become_aligned_rows() -> None:
    rows = formatted(
        "demo/echo (Echo) is up: 1/1 replica(s) ready",
        "demo/a-much-longer-service (Long) is up: 2/2 replica(s) ready",
        "deployment 'demo' is ready (2 service(s))",
        "demo/echo: source changed, reloading",
        "demo: reloaded echo (generation 2) in 410 ms",
        "demo: reload of echo (generation 3) failed after 12 ms: SyntaxError: bad; still serving the "
        "previous generation",
        "    File svc.py, line 3",
    )
    assert rows[0].split() == ["demo/echo", "up", "1/1", "replica", "ready", "(Echo)"]
    assert rows[1].split()[:3] == ["demo/a-much-longer-service", "up", "2/2"]
    assert rows[2].split() == ["demo", "ready", "2", "services"]
    assert rows[4].split()[:4] == ["demo/echo", "reloaded", "generation", "2"]
    assert rows[5].split()[:2] == ["demo/echo", "failed"]
    assert rows[6].strip() == "File svc.py, line 3"
    # rows written after the longer key are aligned on it
    assert len({verb_column(row) for row in rows[1:6]}) == 1


def test_a_git_source_being_fetched_is_a_row_and_so_is_its_commit() -> None:
    rows = formatted(
        "demo/echo: fetching https://example.com/app.git (main)",
        "demo/echo: checked out commit 0123456789ab of https://example.com/app.git (main)",
    )
    assert rows[0].split() == ["demo/echo", "fetching", "https://example.com/app.git", "(main)"]
    assert rows[1].split()[:5] == ["demo/echo", "fetched", "commit", "0123456789ab", "of"]


def test_a_removed_service_an_edit_that_restarts_nothing_and_a_deletion_are_rows() -> None:
    rows = formatted(
        "demo/echo: removed from the deployment file, its workers stopped; 2 queued task(s) of it failed",
        "demo: applied, no service had to restart",
        "demo: deleting, its running tasks finish first",
        "demo: deleted, its workers stopped",
    )
    assert rows[0].split()[:5] == ["demo/echo", "removed", "its", "workers", "stopped;"]
    assert rows[0].endswith("2 queued task(s) of it failed")
    assert rows[1].split() == ["demo", "applied", "no", "service", "had", "to", "restart"]
    assert rows[2].split() == ["demo", "deleting", "its", "running", "tasks", "finish", "first"]
    assert rows[3].split() == ["demo", "deleted", "its", "workers", "stopped"]


def test_a_service_still_loading_is_a_row() -> None:
    [row] = formatted(
        "demo/echo (Echo) is still loading: no worker ready after 5 s (importing svc:echo; big "
        "libraries take a while: it has 120 s, its startup-timeout; Ctrl-C stops)"
    )
    assert row.split()[:3] == ["demo/echo", "loading", "no"]
    assert row.endswith("Ctrl-C stops) (Echo)")


def test_a_reload_asked_for_again_and_one_that_cannot_run_are_rows_too() -> None:
    rows = formatted(
        "demo/echo: source changed again: reloading once more when the running reload ends",
        "demo/echo: not reloaded: no service 'echo' in deployment 'demo'",
    )
    assert rows[0].split()[:3] == ["demo/echo", "changed", "again"]
    assert rows[0].endswith("reloading once more when the running reload ends")
    assert rows[1].split()[:4] == ["demo/echo", "failed", "not", "reloaded:"]
    assert verb_column(rows[0]) == verb_column(rows[1])


def test_quiet_keeps_failed_reloads_only() -> None:
    rows = formatted(
        "demo/echo (Echo) is up: 1/1 replica(s) ready",
        "demo: reload of echo (generation 3) failed after 12 ms: SyntaxError: bad; still serving",
        "    File svc.py, line 3",
        quiet=True,
    )
    assert [row.split()[1] for row in rows[:1]] == ["failed"]
    assert len(rows) == 2


@pytest.mark.parametrize("level", [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR])
def test_worker_lines_are_filtered_by_level(level: int) -> None:
    out: list[str] = []
    output = ServeOutput(write=out.append, level=level)
    stamp = "2026-01-01 10:00:00,000 [svc#1]"
    lines = {
        logging.INFO: f"{stamp} INFO x: an info record",
        logging.WARNING: f"{stamp} WARNING x: a warning record",
        logging.ERROR: f"{stamp} ERROR x: an error record",
    }
    for text in lines.values():
        output.worker("d/svc#1", text)
    output.worker("d/svc#1", "  its traceback, indented")  # follows the error record's level
    output.worker("d/svc#1", "something the code printed")  # counts as a warning
    shown = "\n".join(out)
    assert ("an info record" in shown) is (level <= logging.INFO)
    assert ("a warning record" in shown) is (level <= logging.WARNING)
    assert ("something the code printed" in shown) is (level <= logging.WARNING)
    assert "d/svc#1" in shown and "| ERROR x: an error record" in shown
    assert "its traceback, indented" in shown
    assert stamp not in shown  # the replica's name is in front already


def test_the_frames_of_a_printed_traceback_follow_its_first_line_not_the_last_record() -> None:
    out: list[str] = []
    output = ServeOutput(write=out.append, level=logging.WARNING)
    output.worker("d/svc#1", "2026-01-01 10:00:00,000 [svc#1] INFO x: loading")  # hidden
    for line in ("Traceback (most recent call last):", '  File "app.py", line 3, in f', "ValueError: x"):
        output.worker("d/svc#1", line)  # printed by the code (traceback.print_exc, a stack dump)
    shown = "\n".join(out)
    assert "loading" not in shown
    assert 'File "app.py", line 3, in f' in shown  # was hidden: it followed the INFO record's level
    assert shown.count("d/svc#1") == 3


def test_services_left_to_remote_workers_and_remote_replicas_read_as_rows() -> None:
    rows = formatted(
        "demo/echo (Echo) has no replica here: its tasks wait for `llamactl worker` on other hosts",
        "demo/echo (Echo) is up: 2/0 replica(s) ready",
        "demo/echo#box-41-1 (Echo) is up: pid 4242",
        "demo/echo#box-41-1 exited with code -9, restarting in 0.2 s",
        "demo/echo#box-41-2 exited with code 3 (its code does not load), restarting in 0.4 s",
    )
    assert rows[0].split()[:2] == ["demo/echo", "remote"] and rows[0].endswith("hosts (Echo)")
    assert rows[1].split() == ["demo/echo", "up", "2", "remote", "replicas", "ready", "(Echo)"]
    assert rows[2].split() == ["demo/echo#box-41-1", "up", "pid", "4242", "(Echo)"]
    assert rows[3].split()[1:] == ["restarting", "exited", "with", "code", "-9;", "again", "in", "0.2", "s"]
    assert "its code does not load; again in 0.4 s" in rows[4]
    assert len({verb_column(row) for row in rows[2:]}) == 1
