"""ZeroMQ-specific: the broker's journal."""

from __future__ import annotations

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
