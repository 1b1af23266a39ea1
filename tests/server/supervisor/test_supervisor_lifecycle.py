"""Start, restart with backoff, give up, stop: the Supervisor against real child processes."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from llamactl.server.supervisor import (
    EXIT_LOAD_ERROR,
    EXIT_REPLACE,
    ProcessSpec,
    RestartPolicy,
    Supervisor,
    prefixed_output,
)

from .helpers import Recorder, ScriptFactory, WaitUntil

SLEEPER = """
    import os, time
    print("pid", os.getpid())
    time.sleep(120)
"""

TRAPS_SIGTERM = """
    import signal, sys, time
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready")
    time.sleep(120)
"""

IGNORES_SIGTERM = """
    import signal, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready")
    time.sleep(120)
"""

CRASHES = """
    import sys
    sys.exit(int(sys.argv[1]))
"""

DECLARES = """
    import sys
    from llamactl.server.supervisor.exit_note import claim_exit_note, declare_exit
    claim_exit_note()
    declare_exit(int(sys.argv[1]))
    sys.exit(int(sys.argv[1]))
"""


async def test_started_replica_runs_and_reports_its_pid(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    replica = await sup.start_replica("echo#1", script("echo#1", SLEEPER))

    assert replica.state == "running"
    assert replica.pid is not None
    os.kill(replica.pid, 0)
    assert sup.replicas() == {"echo#1": replica}
    # The pid is the command's own, not a wrapper's.
    await waiter(lambda: rec.printed("echo#1"), what="the pid line")
    assert rec.printed("echo#1") == [f"pid {replica.pid}"]
    [started] = rec.of("started")
    assert (started.key, started.pid, started.restarts) == ("echo#1", replica.pid, 0)


async def test_a_crashing_replica_is_restarted_with_growing_backoff(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    policy = RestartPolicy(initial_backoff=0.1, multiplier=3.0, max_backoff=10.0)
    replica = await sup.start_replica("c#1", script("c#1", CRASHES, "1"), policy)

    await waiter(lambda: len(rec.of("started")) >= 4, what="three restarts")
    await sup.stop_replica("c#1")

    started = rec.of("started")[:4]
    assert [e.restarts for e in started] == [0, 1, 2, 3]
    assert replica.restarts >= 3
    restarting = rec.of("restarting")[:3]
    assert [e.backoff for e in restarting] == pytest.approx([0.1, 0.3, 0.9])
    assert all(e.exit_code == 1 for e in rec.of("exited"))
    # Measured delay between an exit and the next spawn: at least the backoff, and growing.
    exits = rec.of("exited")[:3]
    gaps = [nxt.at - ex.at for ex, nxt in zip(exits, started[1:], strict=True)]
    assert all(gap >= e.backoff * 0.95 for gap, e in zip(gaps, restarting, strict=True))  # type: ignore[operator]
    assert gaps[0] < gaps[1] < gaps[2]


async def test_backoff_is_capped_and_reset_after_a_healthy_run() -> None:
    policy = RestartPolicy(initial_backoff=0.5, multiplier=2.0, max_backoff=3.0)
    assert [policy.backoff(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


async def test_a_replica_that_ran_long_enough_restarts_with_the_initial_backoff(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    # reset_after=0: every run counts as healthy, so the backoff never grows.
    policy = RestartPolicy(initial_backoff=0.05, multiplier=10.0, reset_after=0.0)
    await sup.start_replica("r#1", script("r#1", CRASHES, "1"), policy)

    await waiter(lambda: len(rec.of("restarting")) >= 3, what="three restarts")
    assert [e.backoff for e in rec.of("restarting")[:3]] == [0.05, 0.05, 0.05]


async def test_max_restarts_gives_up_and_keeps_the_replica_as_failed(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    policy = RestartPolicy(initial_backoff=0.01, max_restarts=2)
    replica = await sup.start_replica("g#1", script("g#1", CRASHES, "1"), policy)

    await waiter(lambda: bool(rec.of("gave_up")), what="gave_up")
    assert [e.kind for e in rec.events] == [
        *["started", "exited", "restarting"] * 2,
        "started",
        "exited",
        "gave_up",
    ]
    assert (replica.state, replica.restarts, replica.last_exit_code, replica.pid) == ("failed", 2, 1, None)
    assert sup.replicas() == {"g#1": replica}

    assert await sup.stop_replica("g#1") == 1
    assert sup.replicas() == {}


async def test_exit_code_3_is_restarted_like_a_crash_and_flagged_as_a_load_error(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    policy = RestartPolicy(initial_backoff=0.01, max_restarts=1)
    replica = await sup.start_replica("l#1", script("l#1", DECLARES, str(EXIT_LOAD_ERROR)), policy)

    await waiter(lambda: bool(rec.of("gave_up")), what="gave_up")
    assert len(rec.of("started")) == 2
    assert all(e.load_error for e in rec.of("exited"))
    assert replica.load_error


@pytest.mark.parametrize("code", [EXIT_LOAD_ERROR, EXIT_REPLACE])
async def test_a_meaningful_exit_code_the_process_did_not_declare_is_a_plain_crash(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil, code: int
) -> None:
    """The service's code may end its worker with any code (``sys.exit(3)`` in a task): before,
    that was said to be code that does not load, and a 6 was restarted silently, uncounted."""
    policy = RestartPolicy(initial_backoff=0.01, multiplier=10.0, max_restarts=2)
    replica = await sup.start_replica("u#1", script("u#1", CRASHES, str(code)), policy)

    await waiter(lambda: bool(rec.of("gave_up")), what="gave_up")
    exits = rec.of("exited")
    assert [e.exit_code for e in exits] == [code] * 3
    assert not any(e.load_error or e.replacing or e.declared for e in exits)
    assert [e.backoff for e in rec.of("restarting")] == [0.01, 0.1]
    assert not replica.load_error


async def test_a_replica_that_asks_to_be_replaced_restarts_without_growing_backoff_or_giving_up(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    """Exit code 6: a worker that held what only its end frees. Not a crash: before, each such exit
    was warned about, grew the backoff and counted towards max_restarts."""
    policy = RestartPolicy(initial_backoff=0.01, multiplier=10.0, max_restarts=2)
    await sup.start_replica("r#1", script("r#1", DECLARES, str(EXIT_REPLACE)), policy)
    await waiter(lambda: len(rec.of("started")) >= 5, what="five starts")
    assert all(e.replacing for e in rec.of("exited"))
    assert not rec.of("gave_up")
    assert {e.backoff for e in rec.of("restarting")} == {0.01}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "r#1" in r.getMessage()]


async def test_stop_sends_sigterm_and_returns_the_exit_code(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    replica = await sup.start_replica("t#1", script("t#1", TRAPS_SIGTERM))
    pid = replica.pid
    await waiter(lambda: "ready" in rec.printed("t#1"), what="ready")

    assert await sup.stop_replica("t#1") == 0

    assert (replica.state, replica.pid, replica.last_exit_code) == ("stopped", None, 0)
    assert [e.kind for e in rec.events] == ["started", "stopped"]
    assert (rec.events[-1].pid, rec.events[-1].exit_code) == (pid, 0)
    assert sup.replicas() == {}


async def test_a_stopped_replica_is_woken_to_stop_in_order_not_killed_after_the_grace(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    """A SIGSTOPped process holds its SIGTERM until a SIGCONT: sent along, it stops as asked (its
    tasks drained) instead of waiting out the grace for a SIGKILL."""
    replica = await sup.start_replica("t#1", script("t#1", TRAPS_SIGTERM))
    await waiter(lambda: "ready" in rec.printed("t#1"), what="ready")
    assert replica.pid is not None
    os.kill(replica.pid, signal.SIGSTOP)
    await waiter(lambda: sup.stopped("t#1") is True, what="stopped")

    assert await sup.stop_replica("t#1") == 0  # its own exit, not -9


async def test_a_replica_ignoring_sigterm_is_killed_after_the_grace(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    await sup.start_replica("i#1", script("i#1", IGNORES_SIGTERM))
    await waiter(lambda: "ready" in rec.printed("i#1"), what="ready")

    began = time.monotonic()
    assert await sup.stop_replica("i#1", grace=0.3) == -9
    assert time.monotonic() - began >= 0.3


async def test_stop_during_backoff_cancels_the_restart(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    policy = RestartPolicy(initial_backoff=60.0)
    replica = await sup.start_replica("b#1", script("b#1", CRASHES, "2"), policy)
    await waiter(lambda: bool(rec.of("restarting")), what="restarting")

    assert await sup.stop_replica("b#1") == 2
    assert replica.state == "stopped"
    assert [e.kind for e in rec.events] == ["started", "exited", "restarting", "stopped"]


async def test_concurrent_stops_share_one_result(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    await sup.start_replica("t#1", script("t#1", TRAPS_SIGTERM))
    await waiter(lambda: "ready" in rec.printed("t#1"), what="ready")
    assert list(await asyncio.gather(sup.stop_replica("t#1"), sup.stop_replica("t#1"))) == [0, 0]
    assert len(rec.of("stopped")) == 1


async def test_start_rejects_a_used_key_and_unknown_stops(sup: Supervisor, script: ScriptFactory) -> None:
    await sup.start_replica("k", script("k", SLEEPER))
    with pytest.raises(ValueError, match="already supervised"):
        await sup.start_replica("k", script("k", SLEEPER))
    with pytest.raises(KeyError):
        await sup.stop_replica("nope")


async def test_a_command_that_cannot_be_spawned_raises_and_is_not_kept(
    sup: Supervisor, tmp_path: Path
) -> None:
    spec = ProcessSpec(name="x", argv=[str(tmp_path / "no-such-binary")], env={})
    with pytest.raises(FileNotFoundError):
        await sup.start_replica("x", spec)
    assert sup.replicas() == {}


async def test_output_lines_are_passed_with_the_replica_name(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil
) -> None:
    body = """
        import sys
        print("hello")
        print("to stderr", file=sys.stderr)
        sys.stdout.write("no newline at the end")
    """
    await sup.start_replica("o#1", script("o#1", body), RestartPolicy(max_restarts=0))
    await waiter(lambda: bool(rec.of("gave_up")), what="exit")

    assert rec.lines == [("o#1", "hello"), ("o#1", "to stderr"), ("o#1", "no newline at the end")]


def test_prefixed_output_writes_name_then_line() -> None:
    buf = io.StringIO()
    prefixed_output(buf.write)("echo#1", "hello")
    assert buf.getvalue() == "echo#1 | hello\n"


async def test_env_and_cwd_reach_the_child(
    sup: Supervisor, rec: Recorder, script: ScriptFactory, waiter: WaitUntil, tmp_path: Path
) -> None:
    body = """
        import os
        print(os.environ["LLAMACTL_WORKER_SPEC"], os.getcwd(), "PATH" in os.environ)
    """
    spec = script("e#1", body, env={"LLAMACTL_WORKER_SPEC": "{}"})
    await sup.start_replica("e#1", spec, RestartPolicy(max_restarts=0))
    await waiter(lambda: bool(rec.printed("e#1")), what="output")
    assert rec.printed("e#1") == [f"{{}} {tmp_path} True"]
