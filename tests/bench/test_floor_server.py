"""The one-hop floor: a real server and its real workers (no timing assertions)."""

from __future__ import annotations

import sys

import pytest

from bench import floor_server
from bench.cached_env import REPO_ROOT
from bench.measure import ECHO_BODY, measure_endpoint
from bench.procfs import cpu_seconds, descendants
from bench.server_proc import ServerProcess, ServerStartError
from bench.services import CPU_STEP_SECONDS, echo_workflow
from tests.step_lookups import count_step_lookups


async def cpu_steps_reach_both_workers(server: ServerProcess) -> None:
    """Load ``/cpu`` and check that each of the server's two workers ran a share of the steps,
    not one worker all of them."""
    workers = descendants(server.pid)
    assert len(workers) == 2, workers
    before = {pid: cpu_seconds(pid) for pid in workers}
    cpu = await measure_endpoint(
        server.host, server.port, "/cpu", ECHO_BODY, clients=(4,), duration=1.0, warmup=0.1
    )
    assert cpu.errors == 0, cpu.first_error
    burned = {pid: cpu_seconds(pid) - before[pid] for pid in workers}
    assert all(seconds > 10 * CPU_STEP_SECONDS for seconds in burned.values()), burned


async def test_the_cpu_step_is_dealt_to_every_worker() -> None:
    argv = [sys.executable, "-m", "bench.floor_server", "--workers", "2"]
    async with ServerProcess(argv, cwd=REPO_ROOT, start_timeout=60) as server:
        await cpu_steps_reach_both_workers(server)
        workflow = await measure_endpoint(
            server.host, server.port, "/workflow", ECHO_BODY, clients=(1,), duration=0.3, warmup=0.1
        )
        assert workflow.errors == 0 and workflow.sequential is not None


async def test_a_wrong_argument_is_refused() -> None:
    argv = [sys.executable, "-m", "bench.floor_server", "--workers", "none"]
    with pytest.raises(ServerStartError, match=r"argument --workers: invalid int value"):
        await ServerProcess(argv, cwd=REPO_ROOT, start_timeout=60).start()


async def test_the_durable_floor_answers_like_the_floor() -> None:
    argv = [sys.executable, "-m", "bench.floor_server", "--durable"]
    async with ServerProcess(argv, cwd=REPO_ROOT, start_timeout=60) as server:
        for path in ("/echo", "/workflow"):
            measured = await measure_endpoint(
                server.host, server.port, path, ECHO_BODY, clients=(1, 8), duration=0.3, warmup=0.05
            )
            assert measured.errors == 0, measured.first_error
            assert measured.sequential is not None and measured.rates[8] > 0


async def test_the_floor_over_a_unix_socket_deals_to_every_worker_and_answers_every_path() -> None:
    argv = [sys.executable, "-m", "bench.floor_server", "--transport", "unix", "--workers", "2"]
    async with ServerProcess(argv, cwd=REPO_ROOT, start_timeout=60) as server:
        await cpu_steps_reach_both_workers(server)
        for path in ("/echo", "/workflow"):
            measured = await measure_endpoint(
                server.host, server.port, path, ECHO_BODY, clients=(1, 8), duration=0.3, warmup=0.05
            )
            assert measured.errors == 0, measured.first_error
            assert measured.sequential is not None and measured.rates[8] > 0


async def test_the_floor_s_workers_look_a_workflow_s_steps_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The floor runs its workflows as llamactl's workers do: the ``workflows`` library's own
    lookup of a workflow's steps on every run cost the floor's workflow echo about a third of its
    p50 on 2.x, which llamactl's design does not pay (bench/README.md, point 42)."""
    lookups = count_step_lookups(monkeypatch)
    floor_server.prepare_workflows()
    for _ in range(3):
        assert await echo_workflow.run(message="hi") == "Message received: hi"
    assert len(lookups) <= 1
