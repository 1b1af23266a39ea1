"""A restart that cannot start its program (deleted meanwhile: a virtual environment removed by
`git clean -fdx`), and the gate a deployment puts before restarts while it repairs that."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from llamactl.server.supervisor import ProcessSpec, RestartPolicy, Supervisor

from .helpers import REPO_ROOT, Recorder, WaitUntil

FAST = RestartPolicy(initial_backoff=0.05, multiplier=1.0, max_backoff=0.05)


def _program(path: Path) -> ProcessSpec:
    """A program that exits 1 at once, run by its own path (as a venv's python is)."""
    path.write_text(f"#!{sys.executable}\nraise SystemExit(1)\n")
    path.chmod(0o755)
    return ProcessSpec(name="p#1", argv=[str(path)], env={"PYTHONPATH": str(REPO_ROOT)})


async def test_a_missing_program_is_said_in_one_line_naming_it_and_tried_again(
    rec: Recorder, tmp_path: Path, waiter: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: a traceback per try ending in "[Errno 2] No such file or directory" (no file
    named), and an "exited with code None" event for a process that never ran."""
    sup = Supervisor(on_event=rec.on_event, output=rec.output)
    program = tmp_path / "python"
    spec = _program(program)
    try:
        await sup.start_replica("p#1", spec, FAST)
        program.unlink()
        await waiter(lambda: len(rec.of("spawn_failed")) >= 2, what="two failed starts")
        failed = rec.of("spawn_failed")[0]
        assert failed.error == f"its program is missing: {program}"
        assert all(e.exit_code is not None for e in rec.of("exited")), "a failed start is not an exit"
        errors = [r for r in caplog.records if "could not start replica" in r.getMessage()]
        assert errors and errors[0].exc_info is None
        assert (
            errors[0].getMessage() == f"could not start replica p#1 again: its program is missing: {program}"
        )
        _program(program)  # put back: the next try starts it
        started = len(rec.of("started"))
        await waiter(lambda: len(rec.of("started")) > started, what="a start once it is back")
    finally:
        await sup.close(grace=0.5)


async def test_restarts_wait_for_before_restart_and_a_stop_ends_the_wait(
    rec: Recorder, tmp_path: Path, waiter: WaitUntil
) -> None:
    gate = asyncio.Event()
    waits = 0

    async def before_restart() -> None:
        nonlocal waits
        waits += 1
        await gate.wait()

    sup = Supervisor(on_event=rec.on_event, output=rec.output, before_restart=before_restart)
    try:
        await sup.start_replica("p#1", _program(tmp_path / "prog"), FAST)
        await waiter(lambda: waits == 1, what="the restart waiting at the gate")
        assert len(rec.of("started")) == 1, "started again while the gate was shut"
        gate.set()
        await waiter(lambda: len(rec.of("started")) >= 2, what="the restart once the gate opened")
        gate.clear()
        await waiter(lambda: waits >= 2, what="the next restart waiting")
        await asyncio.wait_for(sup.stop_replica("p#1"), 10)  # not held by the shut gate
        assert rec.events[-1].kind == "stopped"
    finally:
        await sup.close(grace=0.5)


async def test_a_failing_before_restart_is_logged_and_the_restart_goes_on(
    rec: Recorder, tmp_path: Path, waiter: WaitUntil, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)

    async def before_restart() -> None:
        raise RuntimeError("pip failed")

    sup = Supervisor(on_event=rec.on_event, output=rec.output, before_restart=before_restart)
    try:
        await sup.start_replica("p#1", _program(tmp_path / "prog"), FAST)
        await waiter(lambda: len(rec.of("started")) >= 2, what="a restart")
        assert "before restarting replica p#1: pip failed" in caplog.text
    finally:
        await sup.close(grace=0.5)
