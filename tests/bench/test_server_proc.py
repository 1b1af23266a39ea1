"""No server outlives the benchmark that started it, however the benchmark ends (a killed
`bench.ab` left its two servers running, serving nobody)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from bench.cached_env import REPO_ROOT
from bench.procfs import descendants
from tests.llamactl.serving import alive

BENCHMARK = """
import asyncio, sys
from bench.server_proc import ServerProcess

async def main():
    argv = [sys.executable, "-m", "bench.floor_server", "--workers", "1"]
    async with ServerProcess(argv, start_timeout=60) as server:
        print(server.pid, flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_benchmark_ended_by_a_signal_takes_its_server_and_workers_with_it(sig: signal.Signals) -> None:
    bench = subprocess.Popen(
        [sys.executable, "-c", BENCHMARK], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert bench.stdout is not None
    try:
        server = int(bench.stdout.readline())
        deadline = time.monotonic() + 30
        while not (workers := descendants(server)):
            assert time.monotonic() < deadline, "the floor server started no worker"
            time.sleep(0.05)
        bench.send_signal(sig)
        bench.wait(30)
        deadline = time.monotonic() + 30
        while left := [pid for pid in (server, *workers) if alive(pid)]:
            assert time.monotonic() < deadline, f"outlived their benchmark: {left}"
            time.sleep(0.05)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
        bench.stdout.close()
