"""The broker's journal deleted under it (`rm -rf .llamactl`, `git clean -fdx`): written back from
the open database with its lock, so no accepted message is lost and the folder still has one
broker.

Before: the broker went on journaling into the unlinked file, a restarted broker found an empty
journal (every queued task gone), and a second broker could take the folder meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from llamactl.server.errors import MessageQueueError
from llamactl.server.mq.zeromq import ZeroMQBroker, ZeroMQQueue
from llamactl.server.mq.zeromq.journal import Journal


async def _until(check: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _served(path: Path) -> AsyncIterator[tuple[ZeroMQBroker, ZeroMQQueue]]:
    """A broker journaling into ``path``, and a queue client of it in the same process."""
    broker = ZeroMQBroker(journal_path=path)
    await broker.start()
    queue = broker.connect_local()
    await queue.start()
    try:
        yield broker, queue
    finally:
        await queue.close()
        await broker.close()


async def _pending(path: Path) -> list[bytes]:
    """The payloads a broker started afresh on ``path`` delivers from topic ``work.t``."""
    payloads: list[bytes] = []
    async with _served(path) as (_, queue):
        deliveries = aiter(queue.consume("work.t", prefetch=10))
        while True:
            try:
                delivery = await asyncio.wait_for(anext(deliveries), 2)
            except TimeoutError:
                return payloads
            payloads.append(delivery.message.payload)
            await delivery.ack()


def _journal(broker: ZeroMQBroker) -> Journal:
    assert broker._journal is not None
    return broker._journal


async def test_a_deleted_journal_is_written_back_with_its_lock_while_the_broker_serves(
    tmp_path: Path,
) -> None:
    folder = tmp_path / ".llamactl"
    path = folder / "j.sqlite"
    async with _served(path) as (broker, queue):
        seq = await queue.publish("work.t", b"before", msg_id="m1")
        first = _journal(broker).checkpointer
        shutil.rmtree(folder)
        await queue.publish("work.t", b"meanwhile", msg_id="m2")
        await _until(lambda: _journal(broker).checkpointer is not first, "the journal written back")
        assert path.exists()
        second = ZeroMQBroker(journal_path=path)
        with pytest.raises(MessageQueueError, match="in use by another broker"):
            await second.start()  # the lock was taken again with the file
        await queue.publish("work.t", b"after", msg_id="m3")
        assert await queue.publish("work.t", b"dup", msg_id="m1") == seq  # still absorbed
    assert await _pending(path) == [b"before", b"meanwhile", b"after"]


async def test_a_stop_right_after_the_deletion_writes_the_journal_back(tmp_path: Path) -> None:
    folder = tmp_path / ".llamactl"
    path = folder / "j.sqlite"
    async with _served(path) as (_, queue):
        await queue.publish("work.t", b"before", msg_id="m1")
        shutil.rmtree(folder)
        await queue.publish("work.t", b"meanwhile", msg_id="m2")
    assert await _pending(path) == [b"before", b"meanwhile"]


async def test_a_journal_whose_lock_another_broker_took_is_not_written_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another broker that started on the folder after the deletion owns it now."""
    folder = tmp_path / ".llamactl"
    path = folder / "j.sqlite"
    broker = ZeroMQBroker(journal_path=path)
    await broker.start()
    try:
        shutil.rmtree(folder)
        folder.mkdir()
        fd = os.open(folder / "j.sqlite.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another broker would hold it
        try:
            await _until(lambda: "in use by another broker" in caplog.text, "the error")
            assert not path.exists()
        finally:
            os.close(fd)
    finally:
        await broker.close()
    said = [r.getMessage() for r in caplog.records if "another broker" in r.getMessage()]
    assert len(said) == 1 and "were deleted while the server ran" in said[0], said


async def test_the_deployment_folder_deleted_is_not_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = tmp_path / "app"
    path = app / ".llamactl" / "j.sqlite"
    broker = ZeroMQBroker(journal_path=path)
    await broker.start()
    try:
        shutil.rmtree(app)
        await _until(lambda: "was deleted with the folder" in caplog.text, "the warning")
    finally:
        await broker.close()
    assert not app.exists()
