"""A state file written by a llamactl without indexes (schema 1) opens, and its tasks are found."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from llamactl.server.control_plane.stored import SessionRecord, StoredTask
from llamactl.server.state import SQLiteStateStore
from llamactl.server.types import TaskDefinition, TaskStatus

from .conftest import DEPLOYMENT, Deliveries, Harness

SCHEMA_1 = """
CREATE TABLE kv (ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, version INTEGER NOT NULL,
                 PRIMARY KEY (ns, key));
CREATE TABLE log (stream TEXT NOT NULL, off INTEGER NOT NULL, idem TEXT, value BLOB NOT NULL,
                  PRIMARY KEY (stream, off));
CREATE UNIQUE INDEX log_idem ON log (stream, idem) WHERE idem IS NOT NULL;
PRAGMA user_version = 1;
"""


async def test_records_of_an_older_file_are_indexed_and_a_queued_one_runs(
    harness: Harness, tmp_path: Path
) -> None:
    path = tmp_path / "old.sqlite"
    done = StoredTask(
        task_id="old-done",
        deployment=DEPLOYMENT,
        service_id="a",
        session_id="s1",
        status=TaskStatus.COMPLETED,
        result="kept",
        created_at=time.time() - 10,
    )
    queued = StoredTask(
        task_id="old-queued", deployment=DEPLOYMENT, service_id="a", session_id="s2", dispatched=True
    )
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA_1)
        for task in (done, queued):
            db.execute(
                "INSERT INTO kv VALUES (?, ?, ?, 1)",
                (f"{DEPLOYMENT}/tasks", task.task_id, task.model_dump_json().encode()),
            )
        for session in ("s1", "s2"):
            record = SessionRecord(session_id=session, created_at=time.time())
            db.execute(
                "INSERT INTO kv VALUES (?, ?, ?, 1)",
                (f"{DEPLOYMENT}/sessions", session, record.model_dump_json().encode()),
            )
    harness.store = SQLiteStateStore(path)
    await harness.store.start()
    plane = await harness.control_plane()
    tasks, _ = await plane.list_tasks()
    assert {t.task_id for t in tasks} == {"old-done", "old-queued"}
    assert (await plane.task_counts())["a"] == {"completed": 1, "queued": 1}
    worker = await harness.queue()
    deliveries = Deliveries(worker)
    delivery, message = await deliveries.take()  # recovery handed the queued one out again
    assert message.task_id == "old-queued"
    await harness.finish(worker, message, "ran")
    await delivery.ack()
    assert (await plane.wait_for_task("old-queued", timeout=10)).result == "ran"
    await deliveries.aclose()
    await plane.create_task(TaskDefinition())
    await harness.store.close()
