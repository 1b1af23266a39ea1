"""ZeroMQ-specific: the broker's journal."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from llamactl.server.errors import MessageQueueError
from llamactl.server.mq.zeromq import ZeroMQBroker
from llamactl.server.mq.zeromq.journal import Journal


async def test_a_journal_has_one_broker(tmp_path: Path) -> None:
    first = ZeroMQBroker(journal_path=tmp_path / "j.sqlite")
    await first.start()
    try:
        second = ZeroMQBroker(journal_path=tmp_path / "j.sqlite")
        with pytest.raises(MessageQueueError, match="in use by another broker"):
            await second.start()
    finally:
        await first.close()
    again = ZeroMQBroker(journal_path=tmp_path / "j.sqlite")
    await again.start()  # the first one's close released it
    await again.close()


async def test_a_settled_message_keeps_only_its_id(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    broker = ZeroMQBroker(journal_path=path)
    await broker.start()
    queue = broker.connect_local()
    await queue.start()
    try:
        seq = await queue.publish("work.t", b"x" * 4096, msg_id="m1")
        await queue.publish("work.t", b"pending", msg_id="m2")
        deliveries = aiter(queue.consume("work.t", prefetch=1))
        first = await anext(deliveries)
        assert first.message.payload == b"x" * 4096
        await first.ack()
        assert await queue.publish("work.t", b"again", msg_id="m1") == seq  # still absorbed
    finally:
        await queue.close()
        await broker.close()
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT msg_id, length(payload) FROM msg WHERE topic = 'work.t'"))
    assert rows == {"m1": 0, "m2": len(b"pending")}


async def test_write_behind_ops_from_a_result_wait_for_a_later_commit() -> None:
    """A lease submitted while results are handed out does not cost a commit of its own."""
    batches: list[list[str]] = []
    second = asyncio.Event()
    journal: Journal

    def on_results(results: list[tuple[Any, ...]]) -> None:
        for result in results:
            if result[0] == "pub":
                journal.submit(("lease", result[2], result[3], 1, "l1", b"owner", 1e12))

    journal = Journal(None, on_results, write_behind=0.05)
    await journal.open()
    apply = journal._apply

    def counting(db: sqlite3.Connection, ops: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        batches.append([op[0] for op in ops])
        if len(batches) == 2:
            second.set()
        return apply(db, ops)

    journal._apply = counting  # type: ignore[method-assign]
    try:
        journal.submit(("pub", 1, "work.t", "m1", "", b"", b"x", True))
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert batches == [["pub"]]  # the lease did not trigger a second commit at once
        async with asyncio.timeout(5):
            await second.wait()  # within write_behind
        assert batches == [["pub"], ["lease"]]
    finally:
        await journal.close()


async def test_settled_work_messages_are_pruned_after_the_retention_but_stream_messages_stay(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.sqlite"
    broker = ZeroMQBroker(journal_path=path, retention=0.5)
    await broker.start()
    queue = broker.connect_local()
    await queue.start()
    try:
        for n in range(20):
            await queue.publish("work.t", b"x" * 1000, msg_id=f"m{n}")
        await queue.publish("stream.t.in", b"an answer", msg_id="input")
        deliveries = aiter(queue.consume("work.t", prefetch=20))
        for _ in range(20):
            await (await anext(deliveries)).ack()
        await queue.publish("work.t", b"pending", msg_id="pending")

        def topics_left() -> list[str]:
            with sqlite3.connect(path) as db:
                return [row[0] for row in db.execute("SELECT msg_id FROM msg ORDER BY msg_id")]

        deadline = asyncio.get_running_loop().time() + 10
        while any(name.startswith("m") for name in topics_left()):
            assert asyncio.get_running_loop().time() < deadline, topics_left()
            await asyncio.sleep(0.1)
        assert topics_left() == ["input", "pending"]  # unsettled work and stream messages stay
    finally:
        await queue.close()
        await broker.close()
