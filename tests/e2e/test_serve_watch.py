"""`llamactl serve deployment.yml --watch` end to end: real files edited under a running server,
driven over HTTP with the real client (issue 4's Done-when list).

One server for the module; tests run in file order and each one reads the state it starts from
(generation, pids) instead of assuming it. Every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from llamactl.client import AsyncClient, Client
from llamactl.client.aio import AsyncDeploymentClient
from llamactl.client.errors import ClientError
from llamactl.server.types import ReplicaState, ServiceStatus
from tests.e2e.waiting import eventually
from tests.e2e.watch_app import NAME, SERVICE_C, WatchServer, service_code, write_app
from tests.llamactl.serving import alive

DEADLINE = 30.0
"""Seconds any single condition may take before the test fails."""


def says(line: str, key: str, verb: str, detail: str = "") -> bool:
    """Whether ``line`` is serve's aligned line ``KEY  VERB  DETAIL`` (``detail``: how it starts)."""
    parts = line.split(maxsplit=2)
    return parts[:2] == [key, verb] and (not detail or (len(parts) > 2 and parts[2].startswith(detail)))


@dataclass
class Watched:
    server: WatchServer
    root: Path
    initial_b_pids: set[int] = field(default_factory=set)

    def edit(self, relative: str, text: str) -> None:
        (self.root / relative).write_text(text)

    async def line(self, predicate: Callable[[str], bool], timeout: float = DEADLINE) -> str:
        """The next stderr line that matches (earlier lines are kept in ``server.stderr.lines``)."""
        return await asyncio.to_thread(self.server.stderr.wait_for, predicate, timeout)

    async def lines(self, *predicates: Callable[[str], bool], timeout: float = DEADLINE) -> list[str]:
        """A line for each predicate, in whatever order they come (services reload side by side)."""
        found: dict[int, str] = {}

        def each(line: str) -> bool:
            for i, predicate in enumerate(predicates):
                if i not in found and predicate(line):
                    found[i] = line
                    break
            return len(found) == len(predicates)

        await self.line(each, timeout)
        return [found[i] for i in range(len(predicates))]


@pytest.fixture(scope="module")
def watched(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    root = tmp_path_factory.mktemp("watched")
    server = WatchServer(write_app(root))
    state = Watched(server, root)
    try:
        # the watch is in place before the Listening line
        assert any(says(line, NAME, "watching") for line in server.stderr.lines), server.stderr.lines
        with Client(server.url) as client:
            b = next(s for s in client.deployment(NAME).services() if s.service_id == "b")
        state.initial_b_pids = ready_pids(b)
        assert len(state.initial_b_pids) == 1
        yield state
    finally:
        code = server.stop()
        assert code == 0, "\n".join(server.stderr.lines[-40:])


@pytest_asyncio.fixture
async def app(watched: Watched) -> AsyncIterator[AsyncDeploymentClient]:
    async with AsyncClient(watched.server.url) as client:
        deployment = client.deployment(NAME)
        yield deployment
        # every worker that ever served is checked at the end: none may outlive the server
        for status in await deployment.services():
            watched.server.workers_seen |= {r.pid for r in status.replicas if r.pid is not None}
        watched.server.note_workers()


async def statuses(app: AsyncDeploymentClient) -> dict[str, ServiceStatus]:
    return {s.service_id: s for s in await app.services()}


def ready_pids(status: ServiceStatus) -> set[int]:
    return {r.pid for r in status.replicas if r.state is ReplicaState.READY and r.pid is not None}


async def answers(app: AsyncDeploymentClient, expected: str, service: str = "a") -> float:
    """Poll ``tasks/run`` until ``service`` answers ``expected``; the monotonic time it did."""
    deadline = time.monotonic() + DEADLINE
    last: object = None
    while time.monotonic() < deadline:
        with contextlib.suppress(ClientError):
            last = await app.tasks.run(service=service)
            if last == expected:
                return time.monotonic()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{service} did not answer {expected!r} within {DEADLINE}s (last answer {last!r})")


async def generation_above(app: AsyncDeploymentClient, service: str, generation: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while (await statuses(app))[service].generation <= generation:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{service} did not pass generation {generation} within {DEADLINE}s")
        await asyncio.sleep(0.02)


async def test_every_service_starts_at_generation_1(app: AsyncDeploymentClient) -> None:
    assert await app.tasks.run(service="a") == "a1"
    assert await app.tasks.run(service="b") == "b1"
    assert {s.generation for s in (await statuses(app)).values()} == {1}


async def test_an_edit_is_answered_by_the_new_code(watched: Watched, app: AsyncDeploymentClient) -> None:
    before = (await statuses(app))["a"]
    watched.edit("a/svc.py", service_code("a2"))
    await answers(app, "a2")
    new = before.generation + 1
    await watched.lines(
        lambda line: says(line, f"{NAME}/a", "reloaded", f"generation {new} in "),
        lambda line: says(line, f"{NAME}/ticks", "reloaded", f"generation {new} in "),
    )
    after = (await statuses(app))["a"]
    assert after.generation == new
    assert after.last_reload_at is not None and after.last_reload_error is None
    assert ready_pids(after).isdisjoint(ready_pids(before))


async def test_a_syntax_error_keeps_the_old_code_serving_and_is_reported(
    watched: Watched, app: AsyncDeploymentClient
) -> None:
    before = (await statuses(app))["a"]
    old = await app.tasks.run(service="a")
    good = service_code("never")
    bad_line = good.count("\n") + 2
    watched.edit("a/svc.py", good + "\ndef broken(:\n    pass\n")
    failed, _ = await watched.lines(
        lambda line: says(line, f"{NAME}/a", "failed", "generation"),
        lambda line: says(line, f"{NAME}/ticks", "failed", "generation"),
    )
    assert "still serving the previous generation" in failed, failed
    assert f"svc.py line {bad_line}" in failed, failed

    assert await app.tasks.run(service="a") == old
    now = (await statuses(app))["a"]
    assert now.generation == before.generation
    assert ready_pids(now) == ready_pids(before)
    assert now.last_reload_error is not None
    assert "svc.py" in now.last_reload_error and f"line {bad_line}" in now.last_reload_error

    watched.edit("a/svc.py", service_code("a3"))
    await answers(app, "a3")
    await watched.line(
        lambda line: says(line, f"{NAME}/ticks", "reloaded", f"generation {before.generation + 1} ")
    )
    fixed = (await statuses(app))["a"]
    assert fixed.generation == before.generation + 1
    assert fixed.last_reload_error is None


@dataclass
class Sse:
    """One SSE stream read over a plain HTTP connection: a drop shows as an error, not a resume."""

    events: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    end: dict[str, Any] | None = None

    async def read(self, url: str, path: str, first: asyncio.Event) -> None:
        fields: dict[str, str] = {}
        async with (
            httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(10.0, read=None)) as http,
            http.stream("GET", path, headers={"Accept": "text/event-stream"}) as response,
        ):
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if fields.get("event") == "end":
                    self.end = json.loads(fields["data"])
                elif "data" in fields:
                    self.events.append((int(fields["id"]), json.loads(fields["data"])))
                    first.set()
                fields = {}


async def test_no_task_fails_and_no_stream_breaks_during_reloads_under_load(
    watched: Watched, app: AsyncDeploymentClient
) -> None:
    start_version = await app.tasks.run(service="a")
    known = {start_version}
    results: list[object] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            try:
                results.append(await app.tasks.run(service="a"))
            except Exception as exc:  # a failure is what this test looks for
                failures.append(f"{type(exc).__name__}: {exc}")

    ticks_generation = (await statuses(app))["ticks"].generation
    clients = [asyncio.create_task(load()) for _ in range(4)]
    count = 70
    try:
        task = await app.tasks.create({"count": count, "delay": 0.05}, service="ticks")
        stream, first = Sse(), asyncio.Event()
        reading = asyncio.create_task(
            stream.read(watched.server.url, f"/deployments/{NAME}/tasks/{task.task_id}/events", first)
        )
        await asyncio.wait_for(first.wait(), DEADLINE)

        reloads, spanned = 4, False
        for n in range(1, reloads + 1):
            version = f"load{n}"
            known.add(version)
            watched.edit("a/svc.py", service_code(version))
            await answers(app, version)
            if n == 1:
                # the streaming service (same folder) swaps too, while its old worker still streams
                await generation_above(app, "ticks", ticks_generation)
                spanned = not reading.done()
        await asyncio.wait_for(reading, DEADLINE)

        async def ticks_on_the_last_edit() -> bool:
            # Not a count of its generations: an edit read half-written fails one and its end
            # makes another, and edits that come while it reloads are taken in one.
            probe = await app.tasks.run({"count": 1, "delay": 0}, service="ticks")
            return isinstance(probe, dict) and probe.get("version") == f"load{reloads}"

        await eventually(ticks_on_the_last_edit, DEADLINE)
    finally:  # a failure above must not leave the clients loading for ever (the teardown hung)
        stop.set()
    await asyncio.wait_for(asyncio.gather(*clients), DEADLINE)

    assert failures == []
    assert len(results) > 40, len(results)
    assert set(results) <= known, set(results) - known
    assert stream.end is not None and stream.end["status"] == "completed", stream.end
    assert [seq for seq, _ in stream.events] == list(range(count))
    assert [e["value"]["n"] for _, e in stream.events] == list(range(count))
    assert {e["value"]["version"] for _, e in stream.events} == {start_version}
    assert spanned, "the stream ended before the streaming service's new generation took over"
    record = await app.tasks.get(task.task_id)
    old_replica = "ticks#1" if ticks_generation == 1 else f"ticks#1@g{ticks_generation}"
    assert record.replica_id == old_replica, "the stream was not served by the retired generation"


def reloads_settled(lines: list[str], key: str) -> bool:
    """Whether ``key``'s last reload has ended and none is due after it (an edit that came while
    it ran, said by a `changed` row, reloads it once more)."""
    verbs = [
        parts[1]
        for line in lines
        if len(parts := line.split()) > 1
        and parts[0] == key
        and parts[1] in ("reloading", "changed", "reloaded", "failed")
    ]
    if "reloading" not in verbs:
        return True
    since = verbs[len(verbs) - verbs[::-1].index("reloading") :]
    return any(verb in ("reloaded", "failed") for verb in since) and "changed" not in since


async def test_a_deployment_file_edit_adds_a_service(watched: Watched, app: AsyncDeploymentClient) -> None:
    # The edits of the test before may still reload a service once more (one that came while it
    # reloaded): the generations compared below are read once that is over.
    async def settled() -> bool:
        lines = watched.server.stderr.so_far()
        return all(reloads_settled(lines, f"{NAME}/{service}") for service in ("a", "ticks", "b"))

    await eventually(settled, DEADLINE)
    before = await statuses(app)
    (watched.root / "c").mkdir(exist_ok=True)
    watched.edit("c/svc.py", service_code("c1"))
    watched.edit("deployment.yml", (watched.root / "deployment.yml").read_text() + SERVICE_C)
    await watched.line(lambda line: says(line, NAME, "applying", "deployment.yml changed"))
    await answers(app, "c1", service="c")
    after = await statuses(app)
    assert set(after) == {"a", "ticks", "b", "c"}
    assert after["c"].generation == 1
    for service in ("a", "ticks", "b"):
        assert after[service].generation == before[service].generation
        assert ready_pids(after[service]) == ready_pids(before[service])


async def test_a_change_in_one_folder_does_not_restart_the_other_services_workers(
    watched: Watched, app: AsyncDeploymentClient
) -> None:
    before = await statuses(app)
    watched.edit("a/svc.py", service_code("a-last"))
    await answers(app, "a-last")
    generation = before["ticks"].generation + 1
    await watched.line(lambda line: says(line, f"{NAME}/ticks", "reloaded", f"generation {generation} "))
    after = await statuses(app)
    assert after["a"].generation == before["a"].generation + 1
    for service in set(after) - {"a", "ticks"}:  # b, and c once the deployment file added it
        assert after[service].generation == 1
        assert after[service].last_reload_at is None
        assert ready_pids(after[service]) == ready_pids(before[service])
    assert watched.initial_b_pids and ready_pids(after["b"]) == watched.initial_b_pids
    assert all(alive(pid) for pid in watched.initial_b_pids)
    assert await app.tasks.run(service="b") == "b1"


async def test_a_service_removed_and_added_back_and_an_edit_that_changes_nothing_are_rows(
    watched: Watched, app: AsyncDeploymentClient
) -> None:
    """A removed service stopped without a word, one added back was never said to be up again
    (it had been once), and an edit that changed nothing was `applying` and then silence."""
    with_c = (watched.root / "deployment.yml").read_text()
    assert SERVICE_C in with_c
    watched.edit("deployment.yml", with_c.replace(SERVICE_C, ""))
    await watched.line(lambda line: says(line, f"{NAME}/c", "removed", "its workers stopped"))
    assert set(await statuses(app)) == {"a", "ticks", "b"}
    watched.edit("deployment.yml", with_c)
    await watched.line(lambda line: says(line, f"{NAME}/c", "up", "1/1 replica ready"))
    await answers(app, "c1", service="c")
    watched.edit("deployment.yml", with_c + "# a comment\n")
    await watched.line(lambda line: says(line, NAME, "applied", "no service had to restart"))
