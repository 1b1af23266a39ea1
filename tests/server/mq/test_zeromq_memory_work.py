"""ZeroMQ-specific: work that an in-process publisher restores itself is held in memory only.

The control plane publishes its task start messages with ``publish_restorable``: its task record
is their durable copy, so the embedded broker writes nothing of them (nor of their leases and
settlement), and a client over a socket, which would not know of a broker's restart, gets the
journaled path instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from llamactl.server.errors import PublishRejected
from llamactl.server.mq import topics
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.zeromq import ZeroMQBroker, wire
from llamactl.server.mq.zeromq.client import ZeroMQQueue

from .test_zeromq_direct import REPORTS, TASKS, journal_rows, next_delivery, serving


def journaled(path: Path, topic: str = TASKS) -> list[tuple[object, ...]]:
    return journal_rows(path, "SELECT msg_id FROM msg WHERE topic = ?", topic)


async def test_an_in_process_publish_is_delivered_and_settled_with_nothing_written(tmp_path: Path) -> None:
    path = tmp_path / "mq.sqlite"
    async with serving(path) as (_, worker, control):
        seq = await control.publish_restorable(TASKS, b"task", msg_id="t1:start", key="s1", attempts=2)
        again = await control.publish_restorable(TASKS, b"task", msg_id="t1:start", key="s1", attempts=2)
        assert again == seq  # the same message while it is pending: absorbed
        tasks = aiter(worker.consume(TASKS, prefetch=4))
        task = await next_delivery(tasks)
        assert (task.message.msg_id, task.message.key, task.message.payload) == ("t1:start", "s1", b"task")
        assert task.attempt == 3  # the publisher knew of two deliveries already
        reports = aiter(control.consume(REPORTS, prefetch=8))
        await task.ack_and_publish(REPORTS, b"result", msg_id="t1:final", key="s1")
        report = await next_delivery(reports)
        await report.ack()
        await control.publish(TASKS, b"marker", msg_id="marker")  # a commit after all of the above
        assert journaled(path) == [("marker",)]
        assert len(journal_rows(path, "SELECT seq FROM work WHERE topic = ?", TASKS)) == 1  # the marker's
        marker = await next_delivery(tasks)
        assert marker.message.msg_id == "marker"


@contextlib.asynccontextmanager
async def over_a_socket(path: Path) -> AsyncIterator[ZeroMQQueue]:
    """A broker journaling to ``path`` and a client of it over its socket (another process's view)."""
    broker = ZeroMQBroker(journal_path=path)
    await broker.start()
    remote = connect_queue(broker.client_config)
    assert isinstance(remote, ZeroMQQueue)
    await remote.start()
    try:
        yield remote
    finally:
        await remote.close()
        await broker.close()


async def test_a_socket_client_publishes_it_journaled(tmp_path: Path) -> None:
    """A client in another process would not know that a restarted broker had lost it."""
    path = tmp_path / "mq.sqlite"
    async with over_a_socket(path) as remote:
        await remote.publish_restorable(TASKS, b"task", msg_id="t1:start", attempts=1)
        assert journaled(path) == [("t1:start",)]
        delivery = await next_delivery(aiter(remote.consume(TASKS)))
        assert delivery.attempt == 1  # journaled work starts from its own count


async def test_a_forged_pubmem_from_a_socket_client_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mq.sqlite"
    async with over_a_socket(path) as remote:
        forged = [TASKS.encode(), b"t1:start", b"", b"task", wire.u32(0)]
        with pytest.raises(PublishRejected, match="only for in-process clients"):
            await remote._new_request(wire.PUBMEM, forged, "a forged publish")
        assert journaled(path) == []


async def test_the_deliveries_its_publisher_knew_of_count_toward_the_dead_letter(tmp_path: Path) -> None:
    """``max_attempts`` holds across restarts: of ``attempts`` known deliveries, all but the last
    (which may have ended in the restart) count as failures."""
    async with serving(tmp_path / "mq.sqlite", max_attempts=3) as (_, worker, control):
        await control.publish_restorable(TASKS, b"task", msg_id="t1:start", attempts=3)
        tasks = aiter(worker.consume(TASKS, prefetch=1))
        task = await next_delivery(tasks)
        assert task.attempt == 4
        await task.nack()  # the third failure
        dead = await next_delivery(aiter(worker.consume(topics.dead_letter_topic(TASKS))))
        assert dead.message.msg_id == "t1:start"
        assert dead.message.headers["x-failures"] == "3" and dead.message.headers["x-attempts"] == "4"


async def test_a_restarted_broker_never_reuses_a_seq_of_the_last_run(tmp_path: Path) -> None:
    """A worker of the last run may still name its message's seq in a late result."""
    path = tmp_path / "mq.sqlite"
    async with serving(path) as (_, _, control):
        before = [await control.publish_restorable(TASKS, b"t", msg_id=f"t{n}:start") for n in range(3)]
    async with serving(path) as (_, _, control):
        after = await control.publish_restorable(TASKS, b"t", msg_id="t9:start")
        journaled_seq = await control.publish(TASKS, b"t", msg_id="marker")
    assert before == sorted(before) and after > max(before)
    assert journaled_seq < min(before)  # journaled seqs live in a range of their own
