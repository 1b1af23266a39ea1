"""A restarted server whose store fails while it resumes a session tries again, and then does
all that resuming it would have done: the session's task handed out goes out again."""

from __future__ import annotations

from pathlib import Path

from llamactl.server.errors import StateStoreError
from llamactl.server.state.base import Versioned
from llamactl.server.state.memory import MemoryStateStore
from llamactl.server.types import TaskDefinition
from tests.e2e.waiting import wait_until

from .conftest import DEPLOYMENT, Deliveries, Server


class _FailingReads(MemoryStateStore):
    """A memory store whose next read of each key in :attr:`fail` fails (the store was down)."""

    def __init__(self) -> None:
        super().__init__()
        self.fail: set[tuple[str, str]] = set()

    async def get(self, ns: str, key: str) -> Versioned | None:
        if (ns, key) in self.fail:
            self.fail.discard((ns, key))
            raise StateStoreError(f"the store is down (reading {ns}/{key})")
        return await super().get(ns, key)


async def _restart_with_a_failed_read(
    tmp_path: Path, definition: TaskDefinition | None, failing: str
) -> None:
    """Hand a task out (in ``definition`` 's session, else one made for it), stop the server
    before its worker takes it (the embedded broker held its message in memory only), restart
    it with the read of ``failing`` (``session`` or ``task``) failing once while it resumes:
    the task is handed out again all the same, and nothing stays in memory for it."""
    journal = tmp_path / "mq.sqlite"
    store = _FailingReads()
    await store.start()
    first = Server(journal, store)
    plane, _ = await first.start()
    try:
        if definition is None:
            session = await plane.create_session()
            definition = TaskDefinition(session_id=session.session_id)
        created = await plane.create_task(definition, keep_context=definition.session_id is not None)
    finally:
        await first.stop()

    key = (f"{DEPLOYMENT}/sessions", created.session_id)
    if failing == "task":
        key = (f"{DEPLOYMENT}/tasks", created.task_id)
    store.fail.add(key)
    second = Server(journal, store)
    plane, worker = await second.start()
    try:
        assert not store.fail  # the read failed while the server resumed the session
        deliveries = Deliveries(worker)
        _, message = await deliveries.take()
        assert message.task_id == created.task_id
        await wait_until(lambda: not plane.dispatcher.sessions_in_memory, 10)
        await deliveries.aclose()
    finally:
        await second.stop()
        await store.close()


async def test_a_sessions_task_goes_out_again_after_its_resume_failed_once(tmp_path: Path) -> None:
    await _restart_with_a_failed_read(tmp_path, None, "session")


async def test_a_run_of_its_own_goes_out_again_after_its_resume_failed_once(tmp_path: Path) -> None:
    await _restart_with_a_failed_read(tmp_path, TaskDefinition(task_id="run-1", input="{}"), "task")
