"""ZeroMQ-specific: the broker's journal."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llamactl.server import wal_checkpointer
from llamactl.server.errors import MessageQueueError
from llamactl.server.mq.zeromq import ZeroMQBroker
from llamactl.server.mq.zeromq.journal import Journal
from tests.faults import damage_sqlite_index


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


def _wal_bytes(path: Path) -> int:
    try:
        return (path.parent / f"{path.name}-wal").stat().st_size
    except FileNotFoundError:
        return 0


class _Results:
    """The journal's answers: each publish's future resolves with its result."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[tuple[Any, ...]] = []
        self.largest_wal = 0
        self.waiting: dict[int, asyncio.Future[tuple[Any, ...]]] = {}

    def __call__(self, batch: list[tuple[Any, ...]]) -> None:
        self.items.extend(batch)
        self.largest_wal = max(self.largest_wal, _wal_bytes(self.path))
        for result in batch:
            future = self.waiting.pop(result[1], None)
            if future is not None:
                future.set_result(result)

    async def publish(self, journal: Journal, token: int, payload: bytes) -> tuple[Any, ...]:
        future: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        self.waiting[token] = future
        journal.submit(("pub", token, "work.t", f"m{token}", "", b"", payload, True))
        async with asyncio.timeout(30):
            return await future


async def _publish(journal: Journal, results: _Results, count: int, *, clients: int = 16) -> None:
    """``count`` 6 KiB messages from ``clients`` publishers, each awaiting its answer before its
    next publish (as the broker's publishers await their confirms)."""

    async def client(n: int) -> None:
        for token in range(n, count, clients):
            await results.publish(journal, token, b"x" * 6000)

    await asyncio.gather(*(client(n) for n in range(clients)))


@pytest.fixture
async def on_disk(tmp_path: Path) -> AsyncIterator[tuple[Journal, _Results]]:
    """A journal in a file, and what it answers."""
    path = tmp_path / "j.sqlite"
    results = _Results(path)
    journal = Journal(path, results)
    await journal.open()
    try:
        yield journal, results
    finally:
        await journal.close()


async def test_the_journal_checkpoints_on_a_thread_and_its_wal_stays_bounded(
    on_disk: tuple[Journal, _Results],
) -> None:
    journal, results = on_disk
    cp = journal.checkpointer
    assert cp is not None and journal._db is not None
    backstop = journal._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    assert backstop == wal_checkpointer.BACKSTOP_FRAMES
    await _publish(journal, results, 6000)  # ~12,000 WAL pages, as fast as it goes
    assert all(r[0] == "pub" for r in results.items)
    assert cp.passes > 0 and cp.holds >= 1 and cp.failures == 0
    largest = results.largest_wal
    slack = 2 * 1024 * 1024  # the batch that crossed the limit, and its neighbours
    assert largest <= wal_checkpointer.LIMIT_BYTES + slack, f"the WAL reached {largest} bytes"


async def test_a_hold_keeps_commits_and_idle_false_until_a_pass_empties_the_wal(
    on_disk: tuple[Journal, _Results],
) -> None:
    journal, results = on_disk
    await _publish(journal, results, 100)
    cp = journal.checkpointer
    assert cp is not None
    cp.frames = wal_checkpointer.HOLD_FRAMES + 1  # as a pass would report a long WAL
    cp.committed()
    assert cp.holding
    held = asyncio.create_task(results.publish(journal, 100, b"held"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(results.items) == 100 and not journal.idle  # held, and said so
    assert (await held)[0] == "pub"  # the pass that ends the hold comes by itself
    assert not cp.holding and cp.frames == 0 and journal.idle


async def test_a_journal_found_damaged_says_so_once_with_what_to_do(
    on_disk: tuple[Journal, _Results], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A journal whose index was damaged under a running server warned "could not prune the
    message journal: database disk image is malformed" every round (a few seconds) for ever, and
    did not say what to do (the error's extended code, SQLITE_CORRUPT_INDEX, was not recognized)."""
    journal, results = on_disk
    for token in range(5):
        published = await results.publish(journal, token, b"x")
        journal.submit(("done", "work.t", published[3]))
    await results.publish(journal, 99, b"commits the settlements with it")
    damage_sqlite_index(tmp_path / "j.sqlite", "msg_by_id", onto="work")
    for _ in range(3):
        assert journal.prune(settled_before=time.time() + 60, streams_before=0) == 0
    said = [r.getMessage() for r in caplog.records if "could not prune" in r.getMessage()]
    assert len(said) == 1, said
    assert str(tmp_path / "j.sqlite") in said[0]
    assert "malformed" in said[0] and "restore it from a backup or move it aside" in said[0]
