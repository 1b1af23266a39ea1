"""Two `llamactl serve` and two `llamactl worker` processes of one deployment on PostgreSQL + Redis,
500 tasks in 50 sessions created through both servers; mid-run one server is SIGKILLed, then one
worker host (its `llamactl worker` and its worker processes). Every task ends exactly once, each
session's tasks ran in creation order with its Context (a counter kept in it reads 1..10), and
no client hangs: a client whose server died creates the task again, by the same id, through the
other one.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from pathlib import Path

import httpx

from tests.e2e.waiting import wait_until
from tests.llamactl.serving import Server, Workers, children
from tests.postgres import PostgresSchema
from tests.server.mq.conftest import REDIS_URL

from .apps import final_statuses, write_fault_app

D = "/deployments/faults"
SESSIONS = 50
PER_SESSION = 10


async def test_a_server_and_a_worker_host_killed_mid_run_lose_and_repeat_nothing(
    tmp_path: Path, backends: tuple[PostgresSchema, str]
) -> None:
    pg, prefix = backends
    app = write_fault_app(
        tmp_path / "app",
        {"counter": {"path": "flows:counter_workflow", "replicas": 0, "max-concurrency": 8}},
        control_plane={"state_store_uri": pg.uri, "change-feed-retention": 100_000},
        message_queue={"type": "redis", "url": REDIS_URL, "prefix": prefix},
    )
    servers = [Server(app.file), Server(app.file)]
    hosts = [Workers(app.file, "--replicas", "2"), Workers(app.file, "--replicas", "2")]
    clients = [httpx.AsyncClient(base_url=s.url, timeout=30) for s in servers]
    dead: set[int] = set()
    created = 0
    retried = 0
    try:

        async def create(task_id: str, session_id: str, prefer: int) -> None:
            """Create the task through server ``prefer``, else through the other; by id, so a
            retry after a lost answer finds it (409) rather than making a second one."""
            nonlocal created, retried
            body = {"task_id": task_id, "session_id": session_id, "service_id": "counter", "input": "{}"}
            for attempt in range(20):
                index = prefer if prefer not in dead else 1 - prefer
                try:
                    answer = await clients[index].post(f"{D}/tasks/create", json=body)
                except httpx.TransportError:
                    dead.add(index)
                    retried += 1
                    continue
                if answer.status_code == 409 and attempt > 0:
                    break  # the first try went through before its server died
                assert answer.status_code == 200, answer.text
                break
            else:
                raise AssertionError(f"task {task_id} could not be created")
            created += 1

        async def session(n: int) -> list[str]:
            session_id = (await clients[n % 2].post(f"{D}/sessions/create")).json()["session_id"]
            ids = [f"s{n:02d}-t{i}" for i in range(PER_SESSION)]
            for i, task_id in enumerate(ids):
                await create(task_id, session_id, (n + i) % 2)
            return ids

        async def faults() -> None:
            await wait_until(lambda: created >= SESSIONS * PER_SESSION * 0.3, 120)
            servers[0].note_workers()
            servers[0].process.send_signal(signal.SIGKILL)
            print(f"injected: SIGKILL of server 0 (pid {servers[0].process.pid}) after {created} tasks")
            await wait_until(lambda: created >= SESSIONS * PER_SESSION * 0.6, 120)
            victims = children(hosts[0].process.pid)
            hosts[0].process.send_signal(signal.SIGKILL)
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            print(f"injected: SIGKILL of worker host 0 and its {len(victims)} workers after {created} tasks")

        async with asyncio.timeout(300):
            injecting = asyncio.create_task(faults())
            sessions = await asyncio.gather(*(session(n) for n in range(SESSIONS)))
            await injecting
            survivor = clients[1]
            results: dict[str, object] = {}
            for ids in sessions:
                for task_id in ids:
                    answer = await survivor.get(f"{D}/tasks/{task_id}/results", params={"timeout": 120})
                    assert answer.status_code == 200, answer.text
                    results[task_id] = json.loads(answer.json()["result"])
            finals = await final_statuses(survivor)
        every = [t for ids in sessions for t in ids]
        statuses = Counter([(await survivor.get(f"{D}/tasks/{t}")).json()["status"] for t in every])
        print(
            f"counted: {len(every)} tasks {dict(statuses)}, {retried} creations retried on the other "
            f"server, final statuses per task {Counter(finals[t] for t in every)}"
        )
        assert statuses == {"completed": SESSIONS * PER_SESSION}
        assert {t: finals[t] for t in every} == {t: 1 for t in every}  # each ended exactly once
        for ids in sessions:  # in creation order, each seeing the Context the one before left
            assert [results[t] for t in ids] == list(range(1, PER_SESSION + 1)), ids[0]
    finally:
        for client in clients:
            await client.aclose()
        hosts[0].kill()
        assert hosts[1].signal(signal.SIGTERM) == 0
        servers[0].process.kill()
        servers[0].process.wait()
        servers[0].stderr.rest()
        assert servers[0].process.stderr is not None
        servers[0].process.stderr.close()
        assert servers[1].stop() == 0
