"""ZeroMQ-specific: the broker's journal."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from server.errors import MessageQueueError
from server.mq.zeromq import ZeroMQBroker


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
