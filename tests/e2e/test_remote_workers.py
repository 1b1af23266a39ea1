"""`llamactl serve` of a deployment whose service has `replicas: 0`, served only by `llamactl worker`
running as a process of its own (another host, as far as either knows), on PostgreSQL + Redis: a
task waits queued until the remote workers come, then runs on them; they show as the service's
replicas; a remote worker SIGKILLed mid-task has its task completed once, by another attempt; and
SIGTERM lets `llamactl worker` finish its running task and exit 0.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llamactl.server.deployment.remote_workers import host_label
from tests.e2e.waiting import eventually
from tests.llamactl.serving import Server, Workers, children, write_app
from tests.llamactl.terminal import Terminal
from tests.postgres import PostgresSchema
from tests.server.mq.conftest import REDIS_URL

D = "/deployments/far"

ONCE = """
import asyncio
from pathlib import Path


async def once(key: str, folder: str) -> dict[str, object]:
    # The first run of a key hangs (until its worker is killed); any later one answers at once.
    mark = Path(folder) / key
    runs = int(mark.read_text()) + 1 if mark.exists() else 1
    mark.write_text(str(runs))
    if runs == 1:
        await asyncio.sleep(120)
    return {"key": key, "runs": runs}
"""


@dataclass
class Setup:
    server: Server
    file: Path
    marks: Path


@pytest.fixture
def far(tmp_path: Path, backends: tuple[PostgresSchema, str]) -> Iterator[Setup]:
    """`llamactl serve` of deployment `far`: `func` and `once` have replicas: 0 (remote only)."""
    pg, prefix = backends
    file = write_app(
        tmp_path / "app", "far", {"func": "funcs:greet", "once": "once:once", "slow": "funcs:slow"}
    )
    (file.parent / "src" / "once.py").write_text(ONCE)
    text = file.read_text().replace(
        "services:\n",
        f"control-plane:\n  state_store_uri: {pg.uri}\n"
        f"message-queue:\n  type: redis\n  url: {REDIS_URL}\n  prefix: '{prefix}'\n"
        "services:\n",
        1,
    )
    for service in ("func", "once", "slow"):
        text = text.replace(f"  {service}:\n", f"  {service}:\n    replicas: 0\n", 1)
    file.write_text(text)
    marks = tmp_path / "marks"
    marks.mkdir()
    server = Server(file)
    try:
        yield Setup(server, file, marks)
    finally:
        assert server.stop() == 0


async def create(client: httpx.AsyncClient, service: str, **kwargs: object) -> str:
    answer = await client.post(f"{D}/tasks/create", json={"input": json.dumps(kwargs), "service_id": service})
    assert answer.status_code == 200, answer.text
    task_id: str = answer.json()["task_id"]
    return task_id


async def ready_replicas(client: httpx.AsyncClient, service: str) -> dict[str, dict[str, object]]:
    statuses = (await client.get(f"{D}/services")).json()
    status = next(s for s in statuses if s["service_id"] == service)
    return {r["replica_id"]: r for r in status["replicas"] if r["state"] == "ready"}


async def test_tasks_wait_for_remote_workers_then_run_there_and_survive_a_killed_one(far: Setup) -> None:
    async with httpx.AsyncClient(base_url=far.server.url, timeout=60) as client:
        waiting = await create(client, "func", name="early")
        assert (await client.get(f"{D}/tasks/{waiting}")).json()["status"] == "queued"
        assert await ready_replicas(client, "func") == {}

        workers = Workers(far.file, "--service", "func", "--service", "once", "--replicas", "2")
        try:
            # <service>#<host>-<pid of llamactl worker>-<n>, each printed as it came up.
            prefix = f"{host_label()}-{workers.process.pid}"
            remote = {f"{service}#{prefix}-{n}" for service in ("func", "once") for n in (1, 2)}
            shown = {line.split()[0] for line in workers.stderr.lines if line.split()[1:2] == ["up"]}
            assert shown == {f"far/{replica_id}" for replica_id in remote}
            early = (await client.get(f"{D}/tasks/{waiting}/results", params={"timeout": 30})).json()
            assert early["result"] == "hello early"
            assert (await client.get(f"{D}/tasks/{waiting}")).json()["replica_id"] in remote

            # The server's status lists them as the service's ready replicas, on this host.
            async def both_ready() -> bool:
                return len(await ready_replicas(client, "once")) == 2

            await eventually(both_ready, 30)
            replicas = await ready_replicas(client, "once")
            assert set(replicas) <= remote
            assert {r["host"] for r in replicas.values()} == {socket.gethostname()}
            # And so does `llamactl deployments show`, with their host and pid.
            shown = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "llamactl", "--server", far.server.url, "deployments", "show", "far"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert shown.returncode == 0, shown.stderr
            rows = {row[0]: row for line in shown.stdout.splitlines() if (row := line.split())}
            for replica_id, replica in replicas.items():
                assert rows[replica_id][1:4] == ["ready", socket.gethostname(), str(replica["pid"])]
            assert rows["once"][:5] == ["once", "Once", "ready", "2", "remote"], shown.stdout

            # Tasks run on them.
            tasks = [await create(client, "func", name=f"n{i}") for i in range(6)]
            for task in tasks:
                result = (await client.get(f"{D}/tasks/{task}/results", params={"timeout": 30})).json()
                assert result["result"].startswith("hello n")
                assert (await client.get(f"{D}/tasks/{task}")).json()["replica_id"] in remote

            # A remote worker SIGKILLed mid-task: its task runs again and ends once.
            task = await create(client, "once", key="k", folder=str(far.marks))

            async def running() -> bool:
                record = (await client.get(f"{D}/tasks/{task}")).json()
                return bool(record["status"] == "running" and record["replica_id"])

            await eventually(running, 30)
            victim_id = (await client.get(f"{D}/tasks/{task}")).json()["replica_id"]
            victim_pid = replicas[victim_id]["pid"]
            assert isinstance(victim_pid, int) and victim_pid in children(workers.process.pid)
            os.kill(victim_pid, signal.SIGKILL)

            done = (await client.get(f"{D}/tasks/{task}/results", params={"timeout": 60})).json()
            result = done["result"]
            assert (json.loads(result) if isinstance(result, str) else result) == {"key": "k", "runs": 2}
            record = (await client.get(f"{D}/tasks/{task}")).json()
            assert (record["status"], record["attempts"]) == ("completed", 2)
            assert record["replica_id"] in remote
            assert (far.marks / "k").read_text() == "2"  # two runs, no third
            async with client.stream(
                "GET", f"{D}/tasks/{task}/events", params={"raw_event": "true"}
            ) as events:
                names = [json.loads(line)["qualified_name"] async for line in events.aiter_lines() if line]
            assert names.count("llamactl.TaskAttempt") == 1

            # The supervisor of `llamactl worker` restarted the killed worker.
            workers.stderr.wait_for(
                lambda line: line.startswith(f"far/{victim_id}") and "restarting" in line, 30
            )

            async def restarted() -> bool:
                replica = (await ready_replicas(client, "once")).get(victim_id)
                return replica is not None and replica["pid"] != victim_pid

            await eventually(restarted, 60)
        finally:
            workers.kill()


async def test_sigterm_lets_the_remote_workers_finish_their_task_and_exits_0(far: Setup) -> None:
    async with httpx.AsyncClient(base_url=far.server.url, timeout=60) as client:
        workers = Workers(far.file, "--service", "slow")
        try:
            task = await create(client, "slow", seconds=2)

            async def running() -> bool:
                return bool((await client.get(f"{D}/tasks/{task}")).json()["status"] == "running")

            await eventually(running, 30)
            assert workers.signal(signal.SIGTERM) == 0
            assert "Stopped." in workers.stderr.lines
            done = (await client.get(f"{D}/tasks/{task}/results", params={"timeout": 30})).json()
            assert done["result"] == "done"
            record = (await client.get(f"{D}/tasks/{task}")).json()
            assert (record["status"], record["attempts"]) == ("completed", 1)
        finally:
            workers.kill()


async def test_a_closed_terminal_stops_the_remote_workers_as_sigterm_does(far: Setup) -> None:
    """Before: SIGHUP (its terminal closed) ended `llamactl worker` at once, and its task ran again."""
    async with httpx.AsyncClient(base_url=far.server.url, timeout=60) as client:
        with Terminal("worker", str(far.file), "--service", "slow", controlling=True) as terminal:
            terminal.wait_for(r"Ready\.", 90)
            task = await create(client, "slow", seconds=2)

            async def running() -> bool:
                return bool((await client.get(f"{D}/tasks/{task}")).json()["status"] == "running")

            await eventually(running, 30)
            terminal.hang_up()
            assert await asyncio.to_thread(terminal.wait, 60) == 0
        done = (await client.get(f"{D}/tasks/{task}/results", params={"timeout": 30})).json()
        assert done["result"] == "done"
        record = (await client.get(f"{D}/tasks/{task}")).json()
        assert (record["status"], record["attempts"]) == ("completed", 1)
