"""Hot reload: real files edited under a running deployment with its watcher (real workers)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from llamactl.server.deployment import Deployment
from llamactl.server.deployment.replicas import ReloadOutcome
from llamactl.server.deployment.watcher import DeploymentWatcher, is_ignored
from llamactl.server.types import ReplicaState, TaskDefinition, TaskStatus
from tests.e2e.waiting import wait_until

DEPLOYMENT = """\
name: hot
services:
  a:
    name: A
    source: {type: local, location: a}
    path: svc:handle
  b:
    name: B
    source: {type: local, location: b}
    path: svc:handle
"""

SERVICE_C = """\
  c:
    name: C
    source: {type: local, location: b}
    path: svc:handle
"""


def service_code(answer: str, delay: float = 0.0) -> str:
    return textwrap.dedent(
        f"""\
        import asyncio


        async def handle(message: str = "") -> str:
            await asyncio.sleep({delay})
            return "{answer}"
        """
    )


class Running:
    def __init__(self, root: Path, deployment: Deployment) -> None:
        self.root = root
        self.deployment = deployment
        self.outcomes: asyncio.Queue[ReloadOutcome] = asyncio.Queue()
        self.lines: list[str] = []
        self.new_line = asyncio.Event()
        self.watcher = DeploymentWatcher(deployment, on_event=self._line, on_reload=self.outcomes.put_nowait)

    def _line(self, line: str) -> None:
        self.lines.append(line)
        self.new_line.set()

    def edit(self, relative: str, text: str) -> None:
        (self.root / relative).write_text(text)

    async def next_reload(self, timeout: float = 30.0) -> ReloadOutcome:
        return await asyncio.wait_for(self.outcomes.get(), timeout)

    async def answer(self, service: str) -> object:
        task = await self.deployment.run(service, message="hi", timeout=30)
        assert task.status is TaskStatus.COMPLETED, task.error
        return task.result

    def pids(self, service: str) -> set[int | None]:
        status = next(s for s in self.deployment.services() if s.service_id == service)
        return {r.pid for r in status.replicas if r.state is ReplicaState.READY}


@pytest_asyncio.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "deployment.yml").write_text(DEPLOYMENT)
    (tmp_path / "a" / "svc.py").write_text(service_code("a1"))
    (tmp_path / "b" / "svc.py").write_text(service_code("b1"))
    stop = asyncio.Event()
    async with Deployment.from_file(tmp_path / "deployment.yml", stop_grace=10) as deployment:
        await deployment.wait_ready(timeout=60)
        state = Running(tmp_path, deployment)
        watching = asyncio.create_task(state.watcher.run(stop))
        await asyncio.wait_for(state.watcher.ready.wait(), 10)
        try:
            yield state
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(watching, 10)


async def test_an_edit_reloads_only_the_service_whose_folder_changed(running: Running) -> None:
    assert await running.answer("a") == "a1"
    b_pids = running.pids("b")
    running.edit("a/svc.py", service_code("a2"))
    outcome = await running.next_reload()
    assert (outcome.service_id, outcome.generation, outcome.ok) == ("a", 2, True)
    assert await running.answer("a") == "a2"
    assert running.pids("b") == b_pids
    statuses = {s.service_id: s for s in running.deployment.services()}
    assert statuses["a"].generation == 2 and statuses["b"].generation == 1
    assert statuses["a"].last_reload_at is not None and statuses["a"].last_reload_error is None
    assert statuses["a"].last_reload_seconds is not None and statuses["a"].last_reload_seconds > 0
    changes = await running.deployment.control_plane.changes.read(limit=10_000)
    (reloaded,) = [c for c in changes if c.kind == "service.reloaded"]
    assert reloaded.data["generation"] == 2 and reloaded.data["seconds"] > 0
    assert "a#1@g2" in [r.replica_id for r in statuses["a"].replicas]
    await asyncio.wait_for(_only_replicas(running, "a", ["a#1@g2"]), 30)  # the old one retires
    assert any("reloaded a (generation 2)" in line for line in running.lines)


async def test_a_syntax_error_keeps_the_old_code_serving_until_it_is_fixed(running: Running) -> None:
    running.edit("a/svc.py", "async def handle(message: str = '') -> str\n    return 'broken'\n")
    failed = await running.next_reload()
    assert not failed.ok
    assert failed.error is not None and "svc.py" in failed.error and "line 1" in failed.error
    assert await running.answer("a") == "a1"
    status = next(s for s in running.deployment.services() if s.service_id == "a")
    assert status.generation == 1 and status.last_reload_error is not None
    assert status.last_reload_seconds is not None
    assert any("still serving the previous generation" in line for line in running.lines)
    running.edit("a/svc.py", service_code("fixed"))
    fixed = await running.next_reload()
    assert fixed.ok
    assert await running.answer("a") == "fixed"


async def test_editing_the_deployment_file_adds_a_service(running: Running) -> None:
    b_pids = running.pids("b")
    running.edit("deployment.yml", DEPLOYMENT + SERVICE_C)
    await running.deployment.wait_ready(timeout=30, all_replicas=True)
    assert await asyncio.wait_for(_eventually_answers(running, "c"), 30) == "b1"
    assert running.pids("b") == b_pids


async def test_an_invalid_deployment_file_leaves_the_deployment_as_it_was(running: Running) -> None:
    running.edit("deployment.yml", DEPLOYMENT.replace("type: local", "type: lokal", 1))
    await asyncio.wait_for(_line_containing(running, "not applied"), 30)
    assert await running.answer("a") == "a1"
    assert {s.service_id for s in running.deployment.services()} == {"a", "b"}


async def test_a_deployment_folder_that_goes_away_and_comes_back_is_watched_again(running: Running) -> None:
    """`rm -rf` of the folder (or a branch switch that removes it) ended the watch for good: the
    first batch of deletions raised out of the watcher, and nothing said so until the server stopped."""
    assert await running.answer("a") == "a1"
    shutil.rmtree(running.root)
    await asyncio.wait_for(_line_containing(running, "is gone"), 30)
    assert await running.answer("a") == "a1"  # the deployment keeps running as it was
    running.root.mkdir()
    for service in ("a", "b"):
        (running.root / service).mkdir()
        running.edit(f"{service}/svc.py", service_code(f"{service}2"))
    running.edit("deployment.yml", DEPLOYMENT)
    await asyncio.wait_for(_line_containing(running, "is back"), 30)
    reloaded = {(await running.next_reload()).service_id for _ in range(2)}
    assert reloaded == {"a", "b"}
    assert (await running.answer("a"), await running.answer("b")) == ("a2", "b2")
    running.edit("a/svc.py", service_code("a3"))  # and it is watched again
    assert (await running.next_reload()).ok
    assert await running.answer("a") == "a3"


async def test_no_task_fails_while_a_service_is_reloaded_under_load(running: Running) -> None:
    running.edit("a/svc.py", service_code("v0", delay=0.05))
    assert (await running.next_reload()).ok
    cp = running.deployment.control_plane
    stop = asyncio.Event()
    results: list[TaskStatus] = []

    async def load() -> None:
        while not stop.is_set():
            task = await cp.run_task(TaskDefinition(service_id="a"), timeout=60)
            results.append(task.status)

    clients = [asyncio.create_task(load()) for _ in range(4)]
    for version in range(1, 4):
        running.edit("a/svc.py", service_code(f"v{version}", delay=0.05))
        assert (await running.next_reload()).ok
    stop.set()
    await asyncio.gather(*clients)
    assert len(results) > 20
    assert set(results) == {TaskStatus.COMPLETED}
    assert await running.answer("a") == "v3"


async def test_a_task_sent_right_after_a_reload_runs_the_new_code(running: Running) -> None:
    for version in range(2, 6):
        running.edit("a/svc.py", service_code(f"a{version}"))
        assert (await running.next_reload()).ok
        assert await running.answer("a") == f"a{version}"


async def test_a_long_task_on_an_old_generation_does_not_hold_up_other_reloads(running: Running) -> None:
    cp = running.deployment.control_plane
    running.edit("a/svc.py", service_code("slow", delay=20))
    assert (await running.next_reload()).ok
    long = await cp.create_task(TaskDefinition(service_id="a"))
    old_replica = await asyncio.wait_for(_running_on(running, long.task_id), 30)
    running.edit("a/svc.py", service_code("a2"))
    assert (await running.next_reload()).ok  # a's old generation now drains its 20 s task ...
    running.edit("b/svc.py", service_code("b2"))
    reloaded_b = await running.next_reload()  # ... and b's reload does not wait for it
    assert (reloaded_b.service_id, reloaded_b.ok) == ("b", True)
    a_status = next(s for s in running.deployment.services() if s.service_id == "a")
    draining = [r.replica_id for r in a_status.replicas if r.state is ReplicaState.DRAINING]
    assert draining == [old_replica]  # still finishing the long task while b was reloaded
    assert await running.answer("b") == "b2"
    await cp.cancel_task(long.task_id)


def gated_code(answer: str, root: Path, marker: str, wait_for: tuple[str, ...], *, when_env: str = "") -> str:
    """Code whose import says it began (``marker``) and waits until every file of ``wait_for``
    exists under ``root`` (20 s at most, then the import fails); with ``when_env``, only in a
    worker whose environment sets that variable."""
    return textwrap.dedent(
        f"""\
        import os
        import time
        from pathlib import Path

        _root = Path({str(root)!r})
        _deadline = time.monotonic() + 20
        if not {when_env!r} or os.environ.get({when_env!r}):
            (_root / {marker!r}).touch()
            while not all((_root / name).exists() for name in {wait_for!r}):
                if time.monotonic() > _deadline:
                    raise RuntimeError("waited 20 s at import for {wait_for!r}")
                time.sleep(0.02)


        async def handle(message: str = "") -> str:
            return "{answer}"
        """
    )


async def test_services_edited_together_reload_side_by_side(running: Running) -> None:
    """Each service's new code waits at import until the other's has begun to load: one reload
    after the other, the first waited in vain and failed (services sharing a module took the sum
    of their imports, and one whose new code hung held up every other for a minute)."""
    both = ("began-a", "began-b")
    running.edit("a/svc.py", gated_code("a2", running.root, "began-a", both))
    running.edit("b/svc.py", gated_code("b2", running.root, "began-b", both))
    outcomes = {(o.service_id, o.ok) for o in [await running.next_reload(), await running.next_reload()]}
    assert outcomes == {("a", True), ("b", True)}
    assert (await running.answer("a"), await running.answer("b")) == ("a2", "b2")


async def test_a_deployment_file_edit_reloads_its_services_side_by_side(running: Running) -> None:
    both = ("began-a", "began-b")
    for name in ("a", "b"):  # the gate closes only once the file gives them GATE
        running.edit(
            f"{name}/svc.py", gated_code(f"{name}2", running.root, f"began-{name}", both, when_env="GATE")
        )
    assert {(o.service_id, o.ok) for o in [await running.next_reload(), await running.next_reload()]} == {
        ("a", True),
        ("b", True),
    }
    running.edit(
        "deployment.yml", DEPLOYMENT.replace("path: svc:handle", 'path: svc:handle\n    env: {GATE: "1"}')
    )
    outcomes = [await running.next_reload(), await running.next_reload()]
    assert [(o.service_id, o.generation, o.ok) for o in outcomes] == [("a", 3, True), ("b", 3, True)]
    assert (await running.answer("a"), await running.answer("b")) == ("a2", "b2")


async def test_a_service_removed_from_the_file_while_it_reloads_ends_its_reload(running: Running) -> None:
    running.edit("b/svc.py", gated_code("b2", running.root, "began-b", ("never",)))
    await wait_until((running.root / "began-b").exists, 30)  # b's reload waits for its new code
    running.edit("deployment.yml", DEPLOYMENT[: DEPLOYMENT.index("  b:")])
    outcome = await running.next_reload()
    assert (outcome.service_id, outcome.ok) == ("b", False)
    assert outcome.error is not None and "removed from the deployment file" in outcome.error
    assert [s.service_id for s in running.deployment.services()] == ["a"]
    assert await running.answer("a") == "a1"


async def test_a_service_edited_while_it_reloads_reloads_again_with_the_latest_code(running: Running) -> None:
    running.edit("a/svc.py", gated_code("a2", running.root, "began-a2", ("go",)))
    await wait_until((running.root / "began-a2").exists, 30)  # the reload is under way
    running.edit("a/svc.py", service_code("a3"))
    await asyncio.wait_for(_line_containing(running, "a: source changed again"), 30)
    (running.root / "go").touch()
    first, second = await running.next_reload(), await running.next_reload()
    assert (first.generation, first.ok, second.generation, second.ok) == (2, True, 3, True)
    assert await running.answer("a") == "a3"
    assert sum("a: source changed, reloading" in line for line in running.lines) == 2


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("src/flow.py", False),
        ("src/__pycache__/flow.cpython-311.pyc", True),
        ("src/.git/index", True),
        ("venv/lib/python3.11/site-packages/x.py", True),
        ("src/.llamactl/state.sqlite", True),
        ("src/.#flow.py", True),
        ("src/flow.py~", True),
        ("src/4913", True),
        ("src/flow.py.swp", True),
        ("pkg.egg-info/PKG-INFO", True),
    ],
)
def test_caches_environments_and_editor_files_are_never_watched(path: str, ignored: bool) -> None:
    assert is_ignored(Path("/project") / path) is ignored


async def _eventually_answers(running: Running, service: str) -> object:
    while True:
        with contextlib.suppress(Exception):
            return await running.answer(service)
        await asyncio.sleep(0.1)


async def _running_on(running: Running, task_id: str) -> str:
    cp = running.deployment.control_plane
    while True:
        task = await cp.get_task(task_id)
        if task.status is TaskStatus.RUNNING and task.replica_id:
            return task.replica_id
        assert not task.status.is_final, f"the task ended ({task.status}) on {task.replica_id}"
        await asyncio.sleep(0.02)


async def _only_replicas(running: Running, service: str, expected: list[str]) -> None:
    while True:
        status = next(s for s in running.deployment.services() if s.service_id == service)
        if [r.replica_id for r in status.replicas] == expected:
            return
        await asyncio.sleep(0.05)


async def _line_containing(running: Running, text: str) -> None:
    while not any(text in line for line in running.lines):
        running.new_line.clear()
        await running.new_line.wait()


@pytest.mark.parametrize(
    ("code", "says"),
    [
        (
            "import time\nwhile True:\n    time.sleep(0.1)\n",
            "(still importing svc:handle (where: the stack its worker printed above): does something",
        ),
        (
            "import os\nos._exit(9)\n",
            "(its workers exited (last exit code 9): the server's output above says why)",
        ),
    ],
)
async def test_new_code_that_never_gets_ready_is_named_with_what_its_workers_do(
    tmp_path: Path, code: str, says: str
) -> None:
    """Before, both said only "no replica of the new code was ready after 2s"."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "deployment.yml").write_text(DEPLOYMENT)
    (tmp_path / "a" / "svc.py").write_text(service_code("a1"))
    (tmp_path / "b" / "svc.py").write_text(service_code("b1"))
    async with Deployment.from_file(tmp_path / "deployment.yml", stop_grace=5) as deployment:
        await deployment.wait_ready(timeout=60)
        (tmp_path / "a" / "svc.py").write_text(code)
        outcome = await deployment.reload_service("a", ready_timeout=2)
        assert not outcome.ok and outcome.error is not None
        assert outcome.error.startswith("no replica of the new code was ready after 2s " + says)
        task = await deployment.run("a", message="hi", timeout=30)
        assert (task.status, task.result) == (TaskStatus.COMPLETED, "a1")  # the old code serves on


LOOPS_AT_IMPORT = "import time\nwhile True:\n    time.sleep(0.1)\n"


async def test_a_reload_waits_for_the_service_s_startup_timeout(tmp_path: Path) -> None:
    """Before, a reload gave new code 60 s whatever it took to load (a model, say): code that
    needed longer could never be reloaded."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "deployment.yml").write_text(
        DEPLOYMENT.replace("path: svc:handle", "path: svc:handle\n    startup-timeout: 2", 1)
    )
    (tmp_path / "a" / "svc.py").write_text(service_code("a1"))
    (tmp_path / "b" / "svc.py").write_text(service_code("b1"))
    async with Deployment.from_file(tmp_path / "deployment.yml", stop_grace=5) as deployment:
        await deployment.wait_ready(timeout=60)
        (tmp_path / "a" / "svc.py").write_text(LOOPS_AT_IMPORT)
        outcome = await asyncio.wait_for(deployment.reload_service("a"), 30)  # before: 60 s
        assert not outcome.ok and outcome.error is not None
        assert outcome.error.startswith("no replica of the new code was ready after 2s (still importing")
        assert "raise `startup-timeout` for the service in the deployment file (now 2 s)" in outcome.error


async def test_a_deployment_whose_code_does_not_load_in_its_startup_timeout_says_why(tmp_path: Path) -> None:
    """Before, it did not say where the import was stuck: the worker's stack is printed first."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "deployment.yml").write_text(
        DEPLOYMENT.replace("path: svc:handle", "path: svc:handle\n    startup-timeout: 2", 1)
    )
    (tmp_path / "a" / "svc.py").write_text(LOOPS_AT_IMPORT)
    (tmp_path / "b" / "svc.py").write_text(service_code("b1"))
    printed: list[tuple[str, str]] = []
    async with Deployment.from_file(
        tmp_path / "deployment.yml", stop_grace=5, worker_output=lambda *line: printed.append(line)
    ) as deployment:
        with pytest.raises(TimeoutError) as caught:
            await asyncio.wait_for(deployment.wait_ready(), 30)  # before: 60 s, then no reason
        stack = [line for name, line in printed if name == "hot/a#1"]
    assert str(caught.value).startswith(
        "deployment 'hot': no ready replica after 2s for a (still importing svc:handle (where: the "
        "stack its worker printed above): does something"
    )
    where = next(i for i, line in enumerate(stack) if "most recent call first" in line)
    assert re.fullmatch(r'  File ".*/a/svc\.py", line [23] in <module>', stack[where + 1]), stack
