"""What the API bounds: waits (504 naming the task), queues (429 with Retry-After), and listings
(pages chained through X-Next-Cursor)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio

from tests.e2e.faults.apps import write_fault_app

from .conftest import start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

D = "/deployments/faults"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[httpx.AsyncClient]:
    app = write_fault_app(
        tmp_path_factory.mktemp("bounds") / "app",
        {
            "work": {"path": "funcs:work", "max-concurrency": 8},
            "narrow": {"path": "funcs:work", "max-concurrency": 1, "max-queued": 2},
        },
        control_plane={"wait-timeout": 1},
    )
    stop = asyncio.Event()
    url, serving = await start_server(stop, deployment_files=[app.file])
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            yield http
    finally:
        stop.set()
        await asyncio.wait_for(serving, 60)


def body(key: str, seconds: float = 0.0, service: str = "work") -> dict[str, object]:
    return {"input": json.dumps({"key": key, "seconds": seconds}), "service_id": service}


async def test_tasks_run_gives_up_after_the_wait_with_the_task_named(client: httpx.AsyncClient) -> None:
    answer = await client.post(f"{D}/tasks/run", json=body("slow-default", 5))
    assert answer.status_code == 504, answer.text
    detail = answer.json()
    assert detail["status"] in ("queued", "running") and detail["task_id"]
    assert "still" in detail["detail"] and detail["task_id"] in detail["detail"]
    done = await client.get(f"{D}/tasks/{detail['task_id']}/results", params={"timeout": 30})
    assert done.json()["data"]["status"] == "completed"  # it went on


async def test_tasks_run_takes_a_shorter_timeout(client: httpx.AsyncClient) -> None:
    answer = await client.post(f"{D}/tasks/run", json=body("slow-short", 2), params={"timeout": 0.2})
    assert answer.status_code == 504 and answer.json()["task_id"]


async def test_results_without_timeout_answer_504_when_run_would(client: httpx.AsyncClient) -> None:
    created = (await client.post(f"{D}/tasks/create", json=body("slow-results", 3))).json()
    answer = await client.get(f"{D}/tasks/{created['task_id']}/results")
    assert answer.status_code == 504 and answer.json()["task_id"] == created["task_id"]
    expired = await client.get(f"{D}/tasks/{created['task_id']}/results", params={"timeout": 0.1})
    assert (expired.status_code, expired.json()) == (200, None)  # Llama Deploy's answer with a timeout


async def test_a_full_queue_answers_429_with_retry_after(client: httpx.AsyncClient) -> None:
    running = (await client.post(f"{D}/tasks/create", json=body("q-run", 3, "narrow"))).json()["task_id"]
    for _ in range(200):  # until it runs (its 'running' report comes 10 ms after it starts)
        if (await client.get(f"{D}/tasks/{running}")).json()["status"] == "running":
            break
        await asyncio.sleep(0.05)
    accepted = [await client.post(f"{D}/tasks/create", json=body(f"q{i}", 2, "narrow")) for i in range(2)]
    assert [a.status_code for a in accepted] == [200] * 2  # one runs, two wait
    refused = await client.post(f"{D}/tasks/create", json=body("q-refused", 0, "narrow"))
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["retry-after"]) >= 1 and "max-queued" in refused.json()["detail"]
    other = await client.post(f"{D}/tasks/create", json=body("elsewhere"))
    assert other.status_code == 200


async def test_task_and_session_lists_come_in_pages(client: httpx.AsyncClient) -> None:
    session = (await client.post(f"{D}/sessions/create")).json()["session_id"]
    ids = [
        (await client.post(f"{D}/tasks/create", json={**body(f"p{i}"), "session_id": session})).json()[
            "task_id"
        ]
        for i in range(5)
    ]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"session_id": session, "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await client.get(f"{D}/tasks", params=params)
        seen += [t["task_id"] for t in page.json()]
        cursor = page.headers.get("x-next-cursor")
        if cursor is None:
            break
    assert seen == ids
    newest = await client.get(f"{D}/tasks", params={"session_id": session, "limit": 2, "order": "desc"})
    assert [t["task_id"] for t in newest.json()] == ids[:-3:-1]
    first = await client.get(f"{D}/sessions", params={"limit": 1})
    assert len(first.json()) == 1 and "x-next-cursor" in first.headers
    later = (await client.post(f"{D}/sessions/create")).json()["session_id"]
    newest = await client.get(f"{D}/sessions", params={"limit": 2, "order": "desc"})
    assert [s["session_id"] for s in newest.json()] == [later, session]
    older = await client.get(
        f"{D}/sessions", params={"cursor": newest.headers["x-next-cursor"], "order": "desc"}
    )
    assert session not in [s["session_id"] for s in older.json()]
    bad = await client.get(f"{D}/tasks", params={"limit": 0})
    assert bad.status_code == 400


async def test_the_state_snapshot_counts_per_service_and_shows_health(client: httpx.AsyncClient) -> None:
    state = (await client.get(f"{D}/state")).json()
    assert set(state["service_tasks"]) == {"work", "narrow"}
    assert sum(state["tasks"].values()) == sum(sum(s.values()) for s in state["service_tasks"].values())
    assert all(loop["running"] for loop in state["health"]["loops"].values())
    metrics = (await client.get("/metrics")).text
    assert 'llamactl_tasks{deployment="faults",service="work",status="completed"}' in metrics
    assert 'llamactl_late_results_total{deployment="faults"} 0' in metrics
    assert 'llamactl_superseded_events_total{deployment="faults"} 0' in metrics
