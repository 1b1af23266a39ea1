"""Processes started ahead of their spec: taken by a matching replica, passed over otherwise."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from llamactl.server.supervisor import ProcessSpec, Supervisor
from llamactl.server.supervisor.prestart import PRESTARTED_ENV, keep, prestart, prestarted, release, take

from .helpers import REPO_ROOT, Recorder, ScriptFactory, WaitUntil, pid_gone

STARTS_AHEAD = """
    import os, sys, time
    from llamactl.server.supervisor.prestart import await_start
    if not await_start():
        sys.exit(0)
    print("cwd", os.getcwd())
    print("x", os.environ.get("X"))
    print("token", os.environ.get("LLAMACTL_API_TOKEN"))
    print("marker", os.environ.get("LLAMACTL_PRESTARTED"))
    print("stdin", repr(sys.stdin.read()))
    time.sleep(120)
"""

SECRET = "s3cret-token"


@pytest.fixture(autouse=True)
async def released() -> AsyncIterator[None]:
    yield
    await release()  # the pool is the process's own: never leave one to the next test


@pytest.fixture
def template(script: ScriptFactory, monkeypatch: pytest.MonkeyPatch) -> ProcessSpec:
    monkeypatch.setenv("LLAMACTL_API_TOKEN", SECRET)
    spec = script("worker", STARTS_AHEAD)
    return replace(spec, cwd=None, hidden_env=frozenset({"LLAMACTL_API_TOKEN"}))


async def test_a_replica_takes_a_process_started_ahead_with_its_own_environment_and_folder(
    sup: Supervisor, rec: Recorder, template: ProcessSpec, tmp_path: Path, waiter: WaitUntil
) -> None:
    await prestart(template, 1, output=rec.output)
    [waiting] = prestarted()
    work = tmp_path / "work"
    work.mkdir()
    spec = replace(template, name="svc#1", env={**template.env, "X": "1"}, cwd=work)

    view = await sup.start_replica("svc#1", spec)

    assert view.pid == waiting
    assert prestarted() == []
    await waiter(lambda: any(line.startswith("stdin") for line in rec.printed("svc#1")), what="its start")
    assert rec.printed("svc#1") == [f"cwd {work}", "x 1", "token None", "marker None", "stdin ''"]
    # The server's secret was not in its environment even as it started.
    assert SECRET.encode() not in Path(f"/proc/{waiting}/environ").read_bytes()
    assert f"{PRESTARTED_ENV}=1".encode() in Path(f"/proc/{waiting}/environ").read_bytes()


async def test_a_replica_whose_start_up_environment_differs_is_spawned_afresh(
    sup: Supervisor, rec: Recorder, template: ProcessSpec, waiter: WaitUntil
) -> None:
    await prestart(template, 1, output=rec.output)
    [waiting] = prestarted()
    spec = replace(template, name="svc#1", env={**template.env, "PYTHONHASHSEED": "7", "X": "2"})

    view = await sup.start_replica("svc#1", spec)

    assert view.pid != waiting
    assert prestarted() == [waiting]
    await waiter(lambda: "x 2" in rec.printed("svc#1"), what="the fresh replica's output")
    await release()
    await waiter(lambda: pid_gone(waiting), what="the unused process to end")


async def test_another_command_other_output_or_a_missing_folder_is_not_taken(
    rec: Recorder, template: ProcessSpec, tmp_path: Path
) -> None:
    await prestart(template, 1, output=rec.output)
    assert take(replace(template, argv=[*template.argv, "more"]), rec.output) is None
    assert take(template, None) is None  # the replica's output is not captured: the process's is
    assert take(replace(template, cwd=tmp_path / "gone"), rec.output) is None  # spawn says what is missing
    assert take(replace(template, hidden_env=frozenset({"HOME"})), rec.output) is None
    assert len(prestarted()) == 1


async def test_a_process_that_died_waiting_is_passed_over(
    sup: Supervisor, rec: Recorder, template: ProcessSpec, waiter: WaitUntil
) -> None:
    await prestart(template, 1, output=rec.output)
    [waiting] = prestarted()
    os.kill(waiting, signal.SIGKILL)
    await waiter(lambda: pid_gone(waiting), what="the process to die")

    view = await sup.start_replica("svc#1", replace(template, name="svc#1", env={**template.env, "X": "3"}))

    assert view.pid != waiting
    await waiter(lambda: "x 3" in rec.printed("svc#1"), what="the fresh replica's output")
    assert prestarted() == []


async def test_a_spare_that_died_waiting_is_replaced_at_the_next_replica(
    sup: Supervisor, rec: Recorder, template: ProcessSpec, waiter: WaitUntil
) -> None:
    await prestart(template, 1, output=rec.output)
    await keep(1)
    [spare] = prestarted()
    os.kill(spare, signal.SIGKILL)  # the OOM killer, say: a reload hours later must still find one
    await waiter(lambda: pid_gone(spare), what="the spare to die")

    view = await sup.start_replica("svc#1", replace(template, name="svc#1", env={**template.env, "X": "6"}))

    assert view.pid != spare
    await waiter(lambda: len(prestarted()) == 1, what="a new spare")
    assert prestarted()[0] not in (spare, view.pid)


async def test_release_ends_the_processes_nobody_took(
    rec: Recorder, template: ProcessSpec, waiter: WaitUntil
) -> None:
    await prestart(template, 2, output=rec.output)
    waiting = prestarted()
    assert len(waiting) == 2

    await release()

    for pid in waiting:
        await waiter(lambda pid=pid: pid_gone(pid), what=f"process {pid} to end")
    assert take(template, rec.output) is None


async def test_kept_spares_are_started_again_as_replicas_take_them(
    sup: Supervisor, rec: Recorder, template: ProcessSpec, waiter: WaitUntil
) -> None:
    await prestart(template, 3, output=rec.output)
    first, *extra = prestarted()

    await keep(1)  # what a hot reload's new workers take from now on

    assert prestarted() == [first]
    for pid in extra:
        await waiter(lambda pid=pid: pid_gone(pid), what=f"process {pid} beyond the spares to end")
    view = await sup.start_replica("svc#1", replace(template, name="svc#1", env={**template.env, "X": "4"}))
    assert view.pid == first
    await waiter(lambda: len(prestarted()) == 1, what="a new spare")
    [second] = prestarted()
    assert second not in (first, *extra)
    view = await sup.start_replica("svc#2", replace(template, name="svc#2", env={**template.env, "X": "5"}))
    assert view.pid == second
    await waiter(lambda: "x 5" in rec.printed("svc#2"), what="the second replica's output")

    await keep(0)

    await waiter(lambda: prestarted() == [], what="no spare kept")
    assert take(template, rec.output) is None


def test_a_process_started_ahead_leaves_quietly_when_its_start_never_comes() -> None:
    program = "from llamactl.server.supervisor.prestart import await_start; print(await_start())"
    base = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    ahead, usual = (
        subprocess.run(
            [sys.executable, "-c", program],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        for env in ({**base, PRESTARTED_ENV: "1"}, base)
    )
    assert (ahead.stdout, usual.stdout) == ("False\n", "True\n")
