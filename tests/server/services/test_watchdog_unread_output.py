"""A worker whose output nobody reads for a while (the server that reads it stopped: Ctrl-Z, a
debugger): its loop waits on a write to a full pipe.

Before: the watchdog took that for user code blocking the loop, and its own warning waited on the
same pipe, so faulthandler's timer ended the worker (exit 1) while the server was away; its task
ran again. A real process, a real pipe, with the watchdog's limits shortened."""

from __future__ import annotations

import os
import subprocess
import sys
import time

SCRIPT = """
import asyncio, logging, sys
from llamactl.server.services import watchdog

watchdog.FROZEN_MARGIN = 1.0  # faulthandler ends it 2.5 s without a re-arm
watchdog._REARM_EVERY = 0.5
logging.basicConfig(stream=sys.stderr, level=logging.INFO)


async def main() -> None:
    dog = watchdog.LoopWatchdog(warn_after=0.2, exit_after=1.0, interrupt_grace=0.5)
    dog.start()
    print("started", flush=True)
    for _ in range(400):  # 400 KB: several times what a pipe holds
        print("x" * 1000, file=sys.stderr, flush=True)
        await asyncio.sleep(0)
    dog.stop()
    print("done", flush=True)


asyncio.run(main())
"""

HELD = 6.0
"""Seconds nobody reads: well past the watchdog's limits (1 s blocked, 2.5 s frozen)."""


def test_a_worker_waiting_on_output_nobody_reads_is_left_alone() -> None:
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        assert process.stdout.readline() == "started\n"
        time.sleep(HELD)  # the fault itself: nobody reads its stderr
        assert process.poll() is None, f"ended with {process.returncode} while its output was not read"
        err = process.stderr.read()
        assert process.wait(30) == 0, err[-2000:]
        assert process.stdout.read() == "done\n"
        assert "blocked" not in err and "Thread 0x" not in err
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
