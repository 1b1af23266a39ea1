"""`llamactl serve` killed with SIGKILL, then started again on the same folder: what was finished
is all there, what was queued or running completes exactly once, and an SSE client resumes from
its last event id; with the default SQLite state store and with PostgreSQL. And SIGTERM: clients waiting for a task get a JSON 503 naming it."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.waiting import wait_until
from tests.llamactl.serving import Server, alive
from tests.postgres import PostgresSchema
from tests.server.apiserver.conftest import SseReader

from .apps import App, final_statuses, write_fault_app

SERVICES = {
    "work": {"path": "funcs:work", "max-concurrency": 4},
    "ticks": {"path": "funcs:ticks"},
    "counter": {"path": "flows:counter_workflow"},
}
D = "/deployments/faults"


def app_in(tmp_path: Path, control_plane: dict[str, object] | None = None) -> App:
    return write_fault_app(tmp_path / "app", SERVICES, control_plane=control_plane)


@pytest.fixture(params=["sqlite", "postgresql"])
async def state_store(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, object] | None]:
    """The deployment's ``control-plane`` section: the default SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
        return
    schema = PostgresSchema()
    yield {"state_store_uri": schema.uri}
    await schema.drop()


async def create(
    client: httpx.AsyncClient, service: str, payload: dict[str, object], session: str | None = None
) -> str:
    body = {
        "input": json.dumps(payload),
        "service_id": service,
        **({"session_id": session} if session else {}),
    }
    answer = await client.post(f"{D}/tasks/create", json=body)
    answer.raise_for_status()
    task_id: str = answer.json()["task_id"]
    return task_id


async def wait_final(client: httpx.AsyncClient, task_id: str, timeout: float = 60) -> dict[str, object]:
    answer = await client.get(f"{D}/tasks/{task_id}/results", params={"timeout": timeout})
    answer.raise_for_status()
    record: dict[str, object] = (await client.get(f"{D}/tasks/{task_id}")).json()
    return record


async def killed(server: Server, workers: set[int]) -> None:
    """After a SIGKILL of ``server``: wait for its workers to exit, then drain and close its stderr."""
    await wait_until(lambda: not any(alive(p) for p in workers), 10)
    server.stderr.rest()
    assert server.process.stderr is not None
    server.process.stderr.close()


async def test_sigkill_and_restart_keeps_what_finished_and_finishes_the_rest_once(
    tmp_path: Path, state_store: dict[str, object] | None
) -> None:
    app = app_in(tmp_path, state_store)
    server = Server(app.file)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        echo = await create(client, "work", {"key": "done", "seconds": 0})
        assert (await wait_final(client, echo))["status"] == "completed"
        session = (await client.post(f"{D}/sessions/create")).json()["session_id"]
        for expected in (1, 2):
            counted = await wait_final(client, await create(client, "counter", {}, session))
            assert counted["result"] == expected
        ticks = await create(client, "ticks", {"key": "t", "n": 12, "every": 0.25})
        async with client.stream(
            "GET", f"{D}/tasks/{ticks}/events", headers={"accept": "text/event-stream"}
        ) as stream:
            reader = SseReader(stream)
            seen = [await reader.next() for _ in range(3)]
        last_id = seen[-1].id if seen[-1] is not None else None
        assert last_id == 2
        queued_session = (await client.post(f"{D}/sessions/create")).json()["session_id"]
        slow = [
            await create(client, "work", {"key": f"s{i}", "seconds": 1.5}, queued_session) for i in range(3)
        ]
        await asyncio.sleep(0.5)  # the first runs, the other two wait for it
        workers = server.note_workers()
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)
    await killed(server, workers)
    print(
        f"injected: SIGKILL of llamactl serve (pid {server.process.pid}) with 1 running and 2 queued "
        f"tasks, a streaming task at event {last_id}, {len(workers)} workers"
    )

    again = Server(app.file)
    try:
        async with httpx.AsyncClient(base_url=again.url, timeout=60) as client:
            before = (await client.get(f"{D}/tasks/{echo}")).json()
            assert (before["status"], before["result"]) == ("completed", "done done")
            counted = await wait_final(client, await create(client, "counter", {}, session))
            assert counted["result"] == 3  # the session's Context survived
            frames = []
            async with client.stream(
                "GET",
                f"{D}/tasks/{ticks}/events",
                headers={"accept": "text/event-stream", "Last-Event-ID": str(last_id)},
            ) as stream:
                reader = SseReader(stream)
                while (frame := await reader.next()) is not None:
                    frames.append(frame)
            ids = [f.id for f in frames if f.id is not None]
            assert ids == list(range(last_id + 1, last_id + 1 + len(ids)))  # no gap, no duplicate
            assert frames[-1].event == "end" and json.loads(frames[-1].data)["status"] == "completed"
            markers = [json.loads(f.data) for f in frames if f.event == "TaskAttempt"]
            assert [m["value"]["attempt"] for m in markers] == [2]
            results = [await wait_final(client, t) for t in slow]
            assert [r["status"] for r in results] == ["completed"] * 3
            finals = await final_statuses(client)
            every = [echo, ticks, *slow]
            assert {t: finals[t] for t in every} == {t: 1 for t in every}
            runs = {f"s{i}": app.runs_of(f"s{i}") for i in range(3)}
            print(
                f"counted: slow tasks {[r['status'] for r in results]}, runs {runs}; stream resumed "
                f"at {ids[0]} with {len(markers)} attempt marker(s); session counter at 3"
            )
            assert runs["s1"] == runs["s2"] == 1 and runs["s0"] in (1, 2)
    finally:
        assert again.stop() == 0


async def test_sigterm_answers_waiting_clients_with_a_json_503_that_names_the_task(tmp_path: Path) -> None:
    app = app_in(tmp_path)
    server = Server(app.file)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        body = {"input": json.dumps({"key": "long", "seconds": 4}), "service_id": "work"}
        waiting = asyncio.create_task(client.post(f"{D}/tasks/run", json=body))
        deadline = time.monotonic() + 30
        while not (await client.get(f"{D}/tasks", params={"status": "running"})).json():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        server.process.send_signal(signal.SIGTERM)
        answer = await asyncio.wait_for(waiting, 30)
    print(f"injected: SIGTERM during tasks/run; the client got {answer.status_code} {answer.text}")
    assert answer.status_code == 503
    assert answer.headers["content-type"].startswith("application/json")
    detail = answer.json()
    assert detail["status"] == "running" and detail["task_id"]
    assert "stopping" in detail["detail"]
    assert server.process.wait(60) == 0
    server.stderr.rest()
    assert server.process.stderr is not None
    server.process.stderr.close()
    assert app.runs_of("long") == 1


async def test_sigkill_amid_runs_leaves_every_answered_run_stored_and_every_stored_one_finished(
    tmp_path: Path, state_store: dict[str, object] | None
) -> None:
    """A `tasks/run` goes to its worker while it is being stored: a kill in between may lose a run
    nobody was answered for (its message lived in the server's memory), never one that was
    answered, and leaves no record that never ends."""
    app = app_in(tmp_path, state_store)
    server = Server(app.file)
    answered: list[str] = []

    async def runs(client: httpx.AsyncClient, caller: int) -> None:
        for n in range(10_000):
            key = f"r{caller}-{n}"
            body = {"input": json.dumps({"key": key, "seconds": 0.02}), "service_id": "work"}
            answer = await client.post(f"{D}/tasks/run", json=body)
            assert answer.json() == f"done {key}"
            answered.append(key)

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        callers = [asyncio.create_task(runs(client, c)) for c in range(4)]
        await wait_until(lambda: len(answered) >= 40, 30)
        workers = server.note_workers()
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(o, httpx.TransportError) for o in outcomes), outcomes
    await killed(server, workers)
    print(f"injected: SIGKILL of llamactl serve with 4 callers of tasks/run, {len(answered)} answered")

    again = Server(app.file)
    try:
        async with httpx.AsyncClient(base_url=again.url, timeout=60) as client:
            listed = (await client.get(f"{D}/tasks", params={"limit": 1000})).json()
            stored = {json.loads(t["input"])["key"]: t["task_id"] for t in listed}
            assert set(answered) <= set(stored)
            finished = {key: await wait_final(client, task_id) for key, task_id in stored.items()}
            assert {r["status"] for r in finished.values()} == {"completed"}
            finals = await final_statuses(client)
            assert all(finals[task_id] == 1 for task_id in stored.values())
            unanswered = sorted(set(stored) - set(answered))
            print(
                f"counted: {len(stored)} runs stored, all completed once; {len(unanswered)} stored unanswered"
            )
    finally:
        assert again.stop() == 0
