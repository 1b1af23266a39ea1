"""The MessageQueue contract (server/mq/base.py), run against every backend in conftest.BACKENDS."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import pytest

from llamactl.server.errors import LeaseLost, MessageQueueClosed, MessageQueueError, PublishRejected
from llamactl.server.mq.base import Delivery, Message, Prefetch
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.topics import dead_letter_topic

from .conftest import QueueFactory

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[3]
WORK = "work.test.svc.a"
STREAM = "stream.test.task.1.events"


async def within(it: AsyncIterator[T], timeout: float = 5.0) -> T:
    """The iterator's next item, or fail the test after ``timeout`` seconds."""
    return await asyncio.wait_for(anext(it), timeout)


async def nothing_before(it: AsyncIterator[Delivery], marker: str, timeout: float = 5.0) -> list[Delivery]:
    """Deliveries up to and including the one whose msg_id is ``marker``."""
    got: list[Delivery] = []
    while not got or got[-1].message.msg_id != marker:
        got.append(await within(it, timeout))
    return got


# -- publish --------------------------------------------------------------------------------------


async def test_publish_before_consumer_waits_for_one(queue_factory: QueueFactory) -> None:
    producer = await queue_factory()
    seq = await producer.publish(WORK, b"early", msg_id="m1", key="k", headers={"h": "v"})
    consumer = await queue_factory()
    d = await within(consumer.consume(WORK))
    assert d.message == Message(WORK, "m1", b"early", "k", seq, {"h": "v"})
    assert d.attempt == 1
    await d.ack()


async def test_seqs_are_gap_free_per_topic(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    other = "stream.test.other"
    seqs = await asyncio.gather(*(q.publish(STREAM if i % 2 else other, b"x") for i in range(200)))
    assert sorted(seqs[1::2]) == list(range(100))
    assert sorted(seqs[0::2]) == list(range(100))
    assert await q.publish(WORK, b"w") == 0


async def test_duplicate_msg_id_is_absorbed(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    first = await q.publish(WORK, b"one", msg_id="dup")
    again = await q.publish(WORK, b"two", msg_id="dup")
    assert again == first
    assert await q.publish(STREAM, b"s", msg_id="dup") == 0  # ids are per topic
    assert await q.publish(STREAM, b"s", msg_id="dup") == 0
    await q.publish(WORK, b"marker", msg_id="marker")
    it = q.consume(WORK, prefetch=10)
    got = await nothing_before(it, "marker")
    assert [(d.message.msg_id, d.message.payload) for d in got] == [("dup", b"one"), ("marker", b"marker")]


async def test_a_restorable_publish_is_delivered_once_per_msg_id(queue_factory: QueueFactory) -> None:
    """``publish_restorable``: a work message like any other to its consumer; the first delivery
    is attempt 1, or with the embedded broker in-process, the one after the ``attempts`` given
    (held in memory only: ``restorable_in_memory``)."""
    q = await queue_factory()
    assert q.restorable_in_memory is queue_factory.local
    first = await q.publish_restorable(WORK, b"one", msg_id="t:start", key="s", attempts=1)
    assert await q.publish_restorable(WORK, b"two", msg_id="t:start", key="s", attempts=1) == first
    it = q.consume(WORK, prefetch=10)
    d = await within(it)
    assert (d.message.msg_id, d.message.key, d.message.payload) == ("t:start", "s", b"one")
    assert d.attempt == (2 if queue_factory.local else 1)
    await d.ack()
    await q.publish_restorable(WORK, b"next", msg_id="u:start")
    d = await within(it)  # not a second copy of t:start
    assert d.message.msg_id == "u:start"
    await d.ack()


async def test_publish_to_a_stopped_broker_is_rejected_in_time(queue_factory: QueueFactory) -> None:
    q = await queue_factory(publish_timeout=0.5)
    assert await q.publish(WORK, b"ok") == 0
    await queue_factory.stop_broker()
    start = time.monotonic()
    with pytest.raises(PublishRejected, match="did not answer"):
        await q.publish(WORK, b"lost")
    assert time.monotonic() - start < 2.0


async def test_bad_topics_are_refused(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    with pytest.raises(ValueError, match="must start with"):
        await q.publish("nope", b"x")
    with pytest.raises(ValueError, match="work topic"):
        q.consume(STREAM)
    with pytest.raises(ValueError, match="stream topic"):
        q.subscribe(WORK)


# -- work topics: settle ---------------------------------------------------------------------------


async def test_ack_removes(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"a", msg_id="a")
    it = q.consume(WORK, lease=0.3)
    d = await within(it)
    await d.ack()
    await asyncio.sleep(0.5)  # the point: past the lease, an acked message must not come back
    await q.publish(WORK, b"m", msg_id="marker")
    assert (await within(it)).message.msg_id == "marker"
    with pytest.raises(LeaseLost):
        await d.ack()


async def test_nack_redelivers_with_next_attempt(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"a", msg_id="a")
    it = q.consume(WORK)
    d = await within(it)
    await d.nack()
    again = await within(it)
    assert (again.message.msg_id, again.attempt) == ("a", 2)
    assert again.lease_id != d.lease_id
    start = time.monotonic()
    await again.nack(delay=0.3)
    third = await within(it)
    assert third.attempt == 3
    assert time.monotonic() - start >= 0.28
    await third.ack()


async def test_lease_expiry_redelivers(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"a", msg_id="a")
    holder = q.consume(WORK, lease=0.3)
    first = await within(holder)
    other = await queue_factory()
    d = await within(other.consume(WORK, lease=30), timeout=3)
    assert (d.message.msg_id, d.attempt) == ("a", 2)
    with pytest.raises(LeaseLost):
        await first.ack()  # the zombie is fenced out
    await d.ack()


async def test_ack_and_publish_settles_and_publishes_together(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"job", msg_id="job")
    results = "work.test.results"
    d = await within(q.consume(WORK, lease=0.3))
    seq = await d.ack_and_publish(results, b"done", msg_id="job:result", key="job", headers={"h": "v"})
    assert seq == 0
    got = await within(q.consume(results))
    assert got.message == Message(results, "job:result", b"done", "job", 0, {"h": "v"})
    await got.ack()
    # Acked: the job does not come back when its (short) lease would have run out.
    await q.publish(WORK, b"marker", msg_id="marker")
    assert [x.message.msg_id for x in await nothing_before(q.consume(WORK), "marker")] == ["marker"]


async def test_a_late_result_settles_the_message_its_new_holder_runs(queue_factory: QueueFactory) -> None:
    """A slow consumer whose lease expired still finishes first: its result settles the message,
    so it is not run a third time, and the consumer running it now is fenced out."""
    q = await queue_factory()
    await q.publish(WORK, b"job", msg_id="job")
    slow = await within(q.consume(WORK, lease=0.3))
    other = await queue_factory()
    current = await within(other.consume(WORK, lease=30), timeout=3)
    assert current.attempt == 2
    assert await slow.ack_and_publish(STREAM, b"late", msg_id="job:result") == 0
    with pytest.raises(LeaseLost):
        await current.ack_and_publish(STREAM, b"again", msg_id="job:result")  # settled: absorbed
    with pytest.raises(LeaseLost):
        await current.ack()
    first = await within(other.subscribe(STREAM))
    assert (first.seq, first.payload) == (0, b"late")
    await q.publish(WORK, b"marker", msg_id="marker")
    assert [x.message.msg_id for x in await nothing_before(other.consume(WORK), "marker")] == ["marker"]


async def test_extend_keeps_a_delivery_past_its_lease(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"a", msg_id="a")
    d = await within(q.consume(WORK, lease=0.3))
    for _ in range(3):
        await d.extend()  # renews for the consume call's lease (0.3 s)
        await asyncio.sleep(0.15)
    await d.extend(5.0)
    await asyncio.sleep(0.5)  # the point: well past the original lease
    await d.ack()


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("nan"), float("inf")])
async def test_a_lease_is_a_finite_number_of_seconds_above_zero(
    queue_factory: QueueFactory, seconds: float
) -> None:
    """One lease that never comes due (NaN sorts as never due) would keep a broker from
    expiring the others: refused at once, by consume and by extend."""
    q = await queue_factory()
    with pytest.raises(ValueError, match="a lease must be a finite number of seconds above 0"):
        q.consume(WORK, lease=seconds)
    await q.publish(WORK, b"a", msg_id="a")
    d = await within(q.consume(WORK, lease=5.0))
    with pytest.raises(ValueError, match="a lease must be a finite number of seconds above 0"):
        await d.extend(seconds)
    await d.ack()  # the delivery is still held: refusing the extension settled nothing


async def test_max_attempts_moves_to_dead_letter(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"poison", msg_id="p", key="k", headers={"h": "v"})
    it = q.consume(WORK)
    for attempt in range(1, queue_factory.max_attempts + 1):
        d = await within(it)
        assert d.attempt == attempt
        await d.nack()
    dead = await within(q.consume(dead_letter_topic(WORK)))
    m = dead.message
    assert (m.msg_id, m.payload, m.key, m.topic) == ("p", b"poison", "k", dead_letter_topic(WORK))
    attempts = str(queue_factory.max_attempts)
    assert m.headers == {"h": "v", "x-dead-reason": "nacked", "x-attempts": attempts, "x-failures": attempts}
    await dead.ack()
    await q.publish(WORK, b"m", msg_id="marker")
    assert (await within(it)).message.msg_id == "marker"


# -- work topics: order and flow -------------------------------------------------------------------


async def test_per_key_order_one_at_a_time(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    for name, key in [("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b"), ("b2", "b"), ("c", "")]:
        await q.publish(WORK, name.encode(), msg_id=name, key=key)
    it = q.consume(WORK, prefetch=10)
    # Delivery is oldest-first, so getting "c" before a2/b2 proves those were held back.
    got = {d.message.msg_id: d for d in await nothing_before(it, "c")}
    assert set(got) == {"a1", "b1", "c"}
    await got["b1"].ack()
    assert (await within(it)).message.msg_id == "b2"
    await got["a1"].nack()
    a1 = await within(it)
    assert (a1.message.msg_id, a1.attempt) == ("a1", 2)
    await a1.ack()
    a2 = await within(it)
    assert a2.message.msg_id == "a2"
    await a2.ack()
    assert (await within(it)).message.msg_id == "a3"


async def test_prefetch_limits_outstanding(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    for i in range(5):
        await q.publish(WORK, b"x", msg_id=f"m{i}")
    a = q.consume(WORK, prefetch=2)
    held = [await within(a), await within(a)]
    other = await queue_factory()
    b = other.consume(WORK, prefetch=3)
    rest = await nothing_before(b, "m4")
    assert [d.message.msg_id for d in held] == ["m0", "m1"]
    assert [d.message.msg_id for d in rest] == ["m2", "m3", "m4"]
    await held[0].ack()
    await q.publish(WORK, b"x", msg_id="m5")
    assert (await within(a)).message.msg_id == "m5"


async def test_a_prefetch_changed_while_consuming_takes_effect(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    for i in range(10):
        await q.publish(WORK, b"x", msg_id=f"m{i}")
    limit = Prefetch(2)
    a = q.consume(WORK, prefetch=limit)
    held = [await within(a), await within(a)]
    limit.set(4)  # raised: two more without settling any
    held += [await within(a), await within(a)]
    assert [d.message.msg_id for d in held] == ["m0", "m1", "m2", "m3"]
    limit.set(1)  # lowered: three settles bring it no new delivery...
    for d in held[:3]:
        await d.ack()
    await held[3].ack()  # ...the fourth, one
    assert (await within(a)).message.msg_id == "m4"
    other = await queue_factory()
    rest = await nothing_before(other.consume(WORK, prefetch=10), "m9")
    assert [d.message.msg_id for d in rest] == ["m5", "m6", "m7", "m8", "m9"]


async def test_competing_consumers_share_work(queue_factory: QueueFactory) -> None:
    producer = await queue_factory()
    n = 40
    seen: dict[str, list[str]] = {"c1": [], "c2": []}
    done = asyncio.Event()

    async def work(name: str) -> None:
        q = await queue_factory()
        async for d in q.consume(WORK, prefetch=1):
            seen[name].append(d.message.msg_id)
            await asyncio.sleep(0.002)  # simulated work, so both get a turn
            await d.ack()
            if len(seen["c1"]) + len(seen["c2"]) == n:
                done.set()

    tasks = [asyncio.create_task(work("c1")), asyncio.create_task(work("c2"))]
    await asyncio.gather(*(producer.publish(WORK, b"x", msg_id=f"m{i}") for i in range(n)))
    await asyncio.wait_for(done.wait(), 10)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert sorted(seen["c1"] + seen["c2"]) == sorted(f"m{i}" for i in range(n))
    assert seen["c1"] and seen["c2"]


async def test_ten_thousand_through_one_consumer(queue_factory: QueueFactory) -> None:
    producer = await queue_factory()
    consumer = await queue_factory()
    n = 10_000
    got: list[str] = []

    async def consume() -> None:
        async for d in consumer.consume(WORK, prefetch=200):
            got.append(d.message.msg_id)
            await d.ack()
            if len(got) == n:
                return

    task = asyncio.create_task(consume())
    for start in range(0, n, 1000):
        await asyncio.gather(
            *(producer.publish(WORK, b"p", msg_id=f"m{i}") for i in range(start, start + 1000))
        )
    await asyncio.wait_for(task, 30)
    assert len(got) == n
    assert set(got) == {f"m{i}" for i in range(n)}


# -- work topics: failures -----------------------------------------------------------------------


async def spawn_consumer(
    queue_factory: QueueFactory, lease: float, *, prefetch: int = 10, block: float = 0.0
) -> asyncio.subprocess.Process:
    """A consumer process (consumer_proc.py) that holds what it gets; ``block``: see there."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("consumer_proc.py")),
        json.dumps(queue_factory.config),
        WORK,
        str(lease),
        str(prefetch),
        str(block),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


async def got_line(proc: asyncio.subprocess.Process) -> list[str]:
    assert proc.stdout is not None
    return (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().split()


async def test_killed_consumer_process_work_is_redelivered(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"job", msg_id="job")
    proc = await spawn_consumer(queue_factory, lease=60)
    try:
        assert await got_line(proc) == ["GOT", "job", "1"]
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        d = await within(q.consume(WORK, lease=60), timeout=5)
        assert (d.message.msg_id, d.attempt) == ("job", 2)
        assert time.monotonic() - killed < 5  # heartbeat loss, not the 60 s lease
        await d.ack()
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_paused_consumer_process_comes_back(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    await q.publish(WORK, b"job", msg_id="job1")
    proc = await spawn_consumer(queue_factory, lease=60)
    try:
        assert await got_line(proc) == ["GOT", "job1", "1"]
        proc.send_signal(signal.SIGSTOP)  # silent: declared dead, its delivery moves on
        it = q.consume(WORK, lease=60)
        d = await within(it, timeout=5)
        assert (d.message.msg_id, d.attempt) == ("job1", 2)
        await d.ack()
        await it.aclose()  # type: ignore[attr-defined]
        proc.send_signal(signal.SIGCONT)  # back: it must register again and get new work
        await q.publish(WORK, b"job", msg_id="job2")
        assert await got_line(proc) == ["GOT", "job2", "1"]
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_closing_a_client_releases_its_deliveries(queue_factory: QueueFactory) -> None:
    holder = await queue_factory()
    await holder.publish(WORK, b"job", msg_id="job")
    d = await within(holder.consume(WORK, lease=60))
    await holder.close()
    with pytest.raises(MessageQueueClosed):
        await d.ack()
    other = await queue_factory()
    again = await within(other.consume(WORK), timeout=queue_factory.liveness_seconds)
    assert (again.message.msg_id, again.attempt) == ("job", 2)
    with pytest.raises(MessageQueueClosed):
        await holder.publish(WORK, b"x")


async def test_leaving_consume_returns_buffered_deliveries(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    for i in range(3):
        await q.publish(WORK, b"x", msg_id=f"m{i}")
    it = q.consume(WORK, prefetch=3, lease=60)
    first = await within(it)
    await it.aclose()  # type: ignore[attr-defined]
    other = await queue_factory()
    rest = await nothing_before(other.consume(WORK, prefetch=3), "m2")
    # never handed out, so not counted as an attempt
    assert [(d.message.msg_id, d.attempt) for d in rest] == [("m1", 1), ("m2", 1)]
    await first.ack()  # a yielded delivery stays with its holder after the iterator closed


# -- streams --------------------------------------------------------------------------------------


async def read(it: AsyncIterator[Message], n: int, timeout: float = 20.0) -> list[Message]:
    async def take() -> list[Message]:
        return [await anext(it) for _ in range(n)]

    return await asyncio.wait_for(take(), timeout)


async def test_stream_order_with_concurrent_and_late_subscribers(queue_factory: QueueFactory) -> None:
    producer = await queue_factory()
    reader = await queue_factory()
    n = 1000
    early = asyncio.create_task(read(reader.subscribe(STREAM), n))

    async def publish_all() -> None:
        for start in range(0, n, 50):
            await asyncio.gather(
                *(producer.publish(STREAM, f"{i}".encode()) for i in range(start, start + 50))
            )

    pub = asyncio.create_task(publish_all())
    late_client = await queue_factory()
    late = asyncio.create_task(read(late_client.subscribe(STREAM, from_seq=500), n - 500))
    await pub
    msgs = await early
    assert [m.seq for m in msgs] == list(range(n))
    assert sorted(int(m.payload) for m in msgs) == list(range(n))
    assert [m.seq for m in await late] == list(range(500, n))


async def test_stalled_subscriber_loses_nothing(queue_factory: QueueFactory) -> None:
    producer = await queue_factory()
    reader = await queue_factory()
    await producer.publish(STREAM, b"first")
    it = reader.subscribe(STREAM)
    assert (await within(it)).seq == 0
    n = 20_000
    for start in range(0, n, 2000):  # the subscriber does not read meanwhile
        await asyncio.gather(*(producer.publish(STREAM, b"%d" % i) for i in range(start, start + 2000)))
    msgs = await read(it, n)
    assert [m.seq for m in msgs] == list(range(1, n + 1))


async def test_subscribe_beyond_the_end_waits(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    for _ in range(3):
        await q.publish(STREAM, b"old")
    waiting = asyncio.create_task(within(q.subscribe(STREAM, from_seq=5)))
    await asyncio.sleep(0.05)  # let the subscription park before anything new exists
    assert not waiting.done()
    for i in range(3, 7):
        assert await q.publish(STREAM, b"%d" % i) == i
    m = await waiting
    assert (m.seq, m.payload) == (5, b"5")


async def test_closing_a_subscriber_mid_wait(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    it = q.subscribe(STREAM)
    waiting = asyncio.create_task(within(it, timeout=10))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await q.publish(STREAM, b"x")
    assert (await within(q.subscribe(STREAM))).payload == b"x"


# -- restart ---------------------------------------------------------------------------------------


async def test_restart_keeps_work_streams_and_seqs(queue_factory: QueueFactory) -> None:
    q = await queue_factory()
    for i in range(3):
        await q.publish(WORK, b"w%d" % i, msg_id=f"w{i}")
    for i in range(5):
        await q.publish(STREAM, b"s%d" % i, msg_id=f"s{i}")
    leased = await within(q.consume(WORK, lease=60))  # held, never acked
    assert leased.message.msg_id == "w0"
    await queue_factory.stop_broker()
    await q.close()  # the holder goes away while the broker is down (its goodbye is lost)
    await queue_factory.start_broker()
    fresh = await queue_factory()
    it = fresh.consume(WORK, prefetch=3)
    got = {d.message.msg_id: d.attempt for d in [await within(it) for _ in range(3)]}
    # w0's owner never comes back: released after one liveness period, as attempt 2
    assert got == {"w0": 2, "w1": 1, "w2": 1}
    assert await fresh.publish(STREAM, b"s5") == 5
    assert await fresh.publish(STREAM, b"again", msg_id="s1") == 1
    msgs = await read(fresh.subscribe(STREAM), 6)
    assert [m.payload for m in msgs] == [b"s0", b"s1", b"s2", b"s3", b"s4", b"s5"]


async def test_clients_ride_through_a_broker_restart(queue_factory: QueueFactory) -> None:
    if not queue_factory.survives_broker_restart:
        # An in-process client is tied to its broker: after a restart it must fail loudly, not hang.
        old = await queue_factory(publish_timeout=0.5)
        await queue_factory.stop_broker()
        await queue_factory.start_broker()
        with pytest.raises(PublishRejected):
            await old.publish(WORK, b"w0")
        return
    q = await queue_factory()
    await q.publish(WORK, b"w0", msg_id="w0")
    consumer = q.consume(WORK, prefetch=2, lease=60)
    held = await within(consumer)
    await q.publish(STREAM, b"s0")
    sub = q.subscribe(STREAM)
    assert (await within(sub)).seq == 0
    parked = asyncio.create_task(within(sub, timeout=10))
    await queue_factory.stop_broker()
    await queue_factory.start_broker()
    # the client resends the unconfirmed publish, its CONSUME and its parked FETCH
    assert await asyncio.wait_for(q.publish(WORK, b"w1", msg_id="w1"), 10) == 1
    assert (await within(consumer)).message.msg_id == "w1"
    await held.ack()  # the lease survived: its owner came back in time
    assert await q.publish(STREAM, b"s1") == 1
    assert (await parked).payload == b"s1"


# -- factory ---------------------------------------------------------------------------------------


def test_factory_names_the_known_types() -> None:
    with pytest.raises(MessageQueueError, match="zeromq"):
        connect_queue({"type": "kafka"})
    with pytest.raises(MessageQueueError, match="not available yet"):
        connect_queue({"type": "rabbitmq"})
    with pytest.raises(MessageQueueError, match="router"):
        connect_queue({"type": "zeromq"})
