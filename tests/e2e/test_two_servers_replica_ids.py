"""Two `llamactl serve` processes of one deployment sharing PostgreSQL and Redis, each with a
worker of its own per service: both servers list both workers (each under an id of its own), and
when one server's deployment is deleted, the other's workers stay ready there.

Before: each server named its workers `<service>#1`, so the replica mirror merged the two into
one record whose pid and host flipped between them, and once one server drained its workers
the other showed its own, still serving, as draining for good (the service down on /status).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_two_servers import two_servers
from tests.e2e.waiting import eventually
from tests.llamactl.serving import Server, children
from tests.postgres import PostgresSchema

D = "/deployments/ids"


@pytest.fixture
def servers(tmp_path: Path, backends: tuple[PostgresSchema, str]) -> Iterator[list[Server]]:
    yield from two_servers(tmp_path, backends, "ids", {"func": "funcs:greet"})


async def replicas(client: httpx.AsyncClient) -> dict[str, tuple[str, int]]:
    """replica id -> (state, pid) of service `func`, as this server lists them."""
    statuses = (await client.get(f"{D}/services")).json()
    status = next(s for s in statuses if s["service_id"] == "func")
    return {r["replica_id"]: (r["state"], r["pid"]) for r in status["replicas"]}


async def test_each_server_lists_both_workers_and_keeps_its_own_when_the_other_deletes(
    servers: list[Server],
) -> None:
    one, two = (httpx.AsyncClient(base_url=s.url, timeout=60) for s in servers)
    pids = [children(s.process.pid) for s in servers]
    async with one, two:
        for client in (one, two):

            async def both_listed(client: httpx.AsyncClient = client) -> bool:
                listed = await replicas(client)
                ready = {pid for state, pid in listed.values() if state == "ready"}
                return len(listed) == 2 and ready & pids[0] != set() and ready & pids[1] != set()

            try:
                await eventually(both_listed, 15)
            except TimeoutError:
                raise AssertionError(f"{client.base_url} lists {await replicas(client)}") from None

        deleted = await one.delete(D)
        assert deleted.status_code == 200, deleted.text

        async def own_ready() -> bool:
            listed = await replicas(two)
            return any(state == "ready" and pid in pids[1] for state, pid in listed.values())

        # Several heartbeats (and mirror syncs) after the other server drained its workers.
        for _ in range(3):
            try:
                await eventually(own_ready, 10)
            except TimeoutError:
                raise AssertionError(f"the other server lists {await replicas(two)}") from None
            listed = await replicas(two)
        status = (await two.get("/status/")).json()
        assert status["status"] == "Healthy", status
        assert any(state == "ready" and pid in pids[1] for state, pid in listed.values()), listed
