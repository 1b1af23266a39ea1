"""What the contract suite does not show about the redis backend: what stays in Redis (retention,
nothing growing), the janitor duty every client does, and per-key order across clients."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis
from redis.exceptions import OutOfMemoryError, ResponseError

from llamactl.server.errors import LeaseLost, PublishRejected
from llamactl.server.mq.redis import RedisQueue
from llamactl.server.mq.redis.link import refused_for_now
from tests.faults import small_disk

from .conftest import REDIS_URL, delete_keys, lost_cancels, redis_reachable
from .private_redis import private_redis
from .tcp_proxy import TcpProxy
from .test_contract import STREAM, WORK, within

Make = Callable[..., Awaitable[RedisQueue]]


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Wait until ``check()`` is true, or fail the test after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    if not await redis_reachable(REDIS_URL):
        pytest.fail(
            f"no Redis server answers at {REDIS_URL}: start one (CI does) or set LLAMACTL_TEST_REDIS_URL"
        )
    name = f"llamactl-test-{uuid.uuid4().hex}:"
    yield name
    await delete_keys(REDIS_URL, name)


@pytest.fixture
async def raw() -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(REDIS_URL)
    yield r
    await r.aclose()


@pytest.fixture
async def make(prefix: str) -> AsyncIterator[Make]:
    clients: list[RedisQueue] = []

    async def make(**overrides: Any) -> RedisQueue:
        config = {
            "type": "redis",
            "url": REDIS_URL,
            "prefix": prefix,
            "heartbeat_interval": 0.2,
            "liveness": 2,
        }
        q = RedisQueue.from_config({**config, **overrides})
        await q.start()
        clients.append(q)
        return q

    yield make
    for q in clients:
        await q.close()


async def test_a_msg_id_is_remembered_for_the_retention_after_it_is_settled(
    make: Make, raw: aioredis.Redis, prefix: str
) -> None:
    q = await make(retention=0.3)
    assert await q.publish(WORK, b"a", msg_id="a") == 0
    d = await within(q.consume(WORK))
    await d.ack()
    assert await q.publish(WORK, b"again", msg_id="a") == 0  # within the window: absorbed

    async def forgotten() -> bool:
        return not await raw.exists(f"{prefix}i:{WORK} a")

    await eventually(forgotten)
    assert await q.publish(WORK, b"again", msg_id="a") == 1  # past it: a new message
    again = await within(q.consume(WORK))
    assert (again.message.seq, again.message.payload) == (1, b"again")
    await again.ack()


async def test_settled_work_leaves_nothing_behind(make: Make, raw: aioredis.Redis, prefix: str) -> None:
    q = await make(retention=0.2)
    n = 300
    await asyncio.gather(*(q.publish(WORK, b"x", msg_id=f"m{i}", key=f"k{i % 7}") for i in range(n)))
    it = q.consume(WORK, prefetch=50)
    for _ in range(n):
        await (await within(it)).ack()
    assert await raw.xlen(f"{prefix}t:{WORK}") == 0
    assert await raw.hlen(f"{prefix}st:{WORK}") == 0
    assert (await raw.xpending(f"{prefix}t:{WORK}", "g"))["pending"] == 0
    assert await raw.zcard(f"{prefix}leases") == 0

    async def only_fixed_keys_left() -> bool:
        keys = {k.decode() async for k in raw.scan_iter(match=f"{prefix}*")}
        return keys <= {f"{prefix}{k}" for k in ("clients", "beat", f"t:{WORK}", f"n:{WORK}")}

    await eventually(only_fixed_keys_left)


async def test_stream_topics_expire_after_seven_days(make: Make, raw: aioredis.Redis, prefix: str) -> None:
    q = await make()
    await q.publish(STREAM, b"s", msg_id="s0")
    week = 7 * 24 * 3600 * 1000
    for key in (f"t:{STREAM}", f"i:{STREAM} s0"):
        assert week - 60_000 < await raw.pttl(f"{prefix}{key}") <= week


async def test_any_client_reaps_one_that_stopped_heartbeating(
    make: Make, raw: aioredis.Redis, prefix: str
) -> None:
    frozen = await make()
    producer = await make()  # never consumes: its heartbeats do the janitor's work all the same
    await producer.publish(WORK, b"job", msg_id="job")
    held = await within(frozen.consume(WORK, lease=60))
    assert frozen._beats is not None
    frozen._beats.cancel()  # its process is frozen: no more heartbeats

    async def back_in_the_queue() -> bool:
        return await raw.zscore(f"{prefix}r:{WORK}", "0") is not None

    await eventually(back_in_the_queue)
    assert await raw.zscore(f"{prefix}clients", frozen.client_id) is None
    assert not await raw.exists(f"{prefix}h:{frozen.client_id}")
    other = await make()
    d = await within(other.consume(WORK))
    assert (d.message.msg_id, d.attempt) == ("job", 2)
    with pytest.raises(LeaseLost):
        await held.ack()
    await d.ack()


async def test_a_key_waits_for_its_earlier_message_held_by_another_client(make: Make) -> None:
    a, b = await make(), await make()
    await a.publish(WORK, b"1", msg_id="k1", key="k")
    await a.publish(WORK, b"2", msg_id="k2", key="k")
    await a.publish(WORK, b"x", msg_id="free")
    first = await within(a.consume(WORK, prefetch=1))
    assert first.message.msg_id == "k1"
    from_b = b.consume(WORK, prefetch=5)
    assert (await within(from_b)).message.msg_id == "free"  # k2 is held back while k1 is out
    nxt = asyncio.ensure_future(anext(from_b))
    done, _ = await asyncio.wait({nxt}, timeout=0.3)
    assert not done
    await first.ack()
    assert (await asyncio.wait_for(nxt, 5)).message.msg_id == "k2"


async def test_the_side_line_keeps_a_blocked_client_s_deliveries_and_publishes_for_it(
    make: Make, raw: aioredis.Redis, prefix: str
) -> None:
    blocked = await make()
    watcher = await make()  # its janitor would reap ``blocked`` without the side line
    await watcher.publish(WORK, b"job", msg_id="job")
    held = await within(blocked.consume(WORK, lease=60))
    assert blocked._beats is not None
    blocked._beats.cancel()  # as if its event loop were blocked: the watchdog's thread speaks for it
    side = blocked.sidecar()
    try:
        for _ in range(10):  # 2 s: twice its liveness window
            await asyncio.to_thread(side.keepalive)
            await asyncio.sleep(0.2)  # the point: time passes while only the side line speaks
        assert await raw.zscore(f"{prefix}clients", blocked.client_id) is not None
        assert await raw.zcard(f"{prefix}r:{WORK}") == 0
        assert await asyncio.to_thread(side.publish, STREAM, b"started", msg_id="job:started")
        assert (await within(watcher.subscribe(STREAM))).payload == b"started"
    finally:
        await asyncio.to_thread(side.close)
    await held.ack()


async def test_a_take_that_arrives_after_close_does_not_revive_the_client(
    make: Make, raw: aioredis.Redis, prefix: str
) -> None:
    closing, other = await make(), await make()
    await other.publish(WORK, b"job", msg_id="job")
    await closing.close()
    assert other._scripts is not None  # the late take, as the closed client's iterator would send it
    reply = await other._scripts.call("take", [WORK, closing.client_id, 1, 60_000, 0, "late", 400])
    assert reply[2] == []
    assert await raw.zscore(f"{prefix}clients", closing.client_id) is None
    d = await within(other.consume(WORK))
    assert (d.message.msg_id, d.attempt) == ("job", 1)
    await d.ack()


async def test_close_returns_even_when_a_heartbeat_swallowed_its_cancel(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Python 3.11's wait_for can swallow a cancel that lands as its command completes: close()
    awaits the heartbeat task, which must then still end (it once hung a test's teardown)."""
    q = await make()
    swallowed = asyncio.Event()

    async def beat_swallowing_cancel(*, raise_errors: bool) -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # returns normally: the loop around it goes on

    monkeypatch.setattr(q, "_beat", beat_swallowing_cancel)
    await asyncio.sleep(0.3)  # one heartbeat interval (0.2 s): the loop is inside _beat now
    async with asyncio.timeout(10):
        await q.close()
    assert swallowed.is_set()


async def test_a_cancel_of_the_caller_is_not_lost_while_a_wait_is_wound_down(make: Make) -> None:
    """``_until`` cancels what it waited on when the client closes and waits for it to end; a
    cancel of the caller arriving meanwhile must reach the caller, not be taken for the inner one."""
    q = await make()
    winding_down = asyncio.Event()

    async def slow_to_cancel() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            winding_down.set()
            await asyncio.sleep(0.2)
            raise

    caller = asyncio.create_task(q._until(slow_to_cancel()))
    await asyncio.sleep(0.05)
    close = asyncio.create_task(q.close())  # the wait ends: _until cancels slow_to_cancel
    await winding_down.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await close


async def test_a_cancel_that_lands_as_a_command_completes_still_cancels_the_caller(make: Make) -> None:
    """Python 3.11's wait_for returns the result when a cancel lands in the same loop turn as its
    inner command completes, and the cancel is lost: a consume iterator once ran on after its task
    was cancelled (CI hung on test_competing_consumers_share_work). A call must raise it instead."""
    q = await make()
    assert q._link is not None
    answered: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def command() -> str:
        return await answered

    caller = asyncio.create_task(q._link.call(command, what="a command", timeout=5.0))
    await asyncio.sleep(0.05)  # the caller waits on the command now
    answered.set_result("done")  # the command completes ...
    caller.cancel()  # ... and its caller is cancelled in the same loop turn
    with pytest.raises(asyncio.CancelledError):
        await caller


async def test_no_loop_turn_loses_a_cancel_of_a_command(make: Make) -> None:
    """redis-py sends a command under ``asyncio.wait_for`` when the connection has a socket timeout,
    and Python 3.11's wait_for loses a cancel that lands in the turn the send completes. Cancel a
    command at every loop turn of its course in turn: each cancel must reach the caller."""
    q = await make()
    link = q._link
    assert link is not None
    lost = await lost_cancels(lambda: link.call(link.short.ping, what="ping", timeout=5.0))
    assert lost == [], f"cancels after {lost} loop turns were lost: the caller ran on"


async def test_a_client_says_while_redis_is_unreachable_and_when_it_answers_again(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = TcpProxy(urlsplit(REDIS_URL).hostname or "127.0.0.1", urlsplit(REDIS_URL).port or 6379)
    await proxy.start()
    db = urlsplit(REDIS_URL).path.strip("/") or "0"
    q = await make(url=f"redis://:secret@127.0.0.1:{proxy.port}/{db}")
    try:
        assert q.outage is None
        before = time.time()
        await proxy.stop()  # Redis is gone, as far as the client can tell
        await eventually(lambda: _true(q.outage is not None))
        outage = q.outage
        assert outage is not None and outage.since >= before
        assert outage.where == f"redis://***@127.0.0.1:{proxy.port}/{db}"
        assert "secret" not in outage.describe() and outage.where in outage.describe()
        unreachable = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(unreachable) == 1, "said once, not on every heartbeat"
        await proxy.start()
        await eventually(lambda: _true(q.outage is None))
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        await proxy.stop()


async def _true(value: bool) -> bool:
    return value


async def test_a_client_tells_redis_losing_its_data_from_being_declared_dead(
    make: Make, raw: aioredis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    frozen = await make()
    other = await make()
    assert frozen._beats is not None
    frozen._beats.cancel()  # silent: the other's heartbeat declares it dead

    async def declared_dead() -> bool:
        return await raw.zscore(f"{prefix}clients", frozen.client_id) is None

    await eventually(declared_dead)
    await frozen._beat(raise_errors=False)  # back from a pause: it was declared dead, nothing lost
    assert frozen.losses == 0
    assert not await raw.exists(f"{prefix}z:{frozen.client_id}"), "the mark is gone once read"
    assert any("declared dead" in r.getMessage() for r in caplog.records)
    caplog.clear()
    await delete_keys(REDIS_URL, prefix)  # a FLUSHALL: every connection stays up
    await eventually(lambda: _true(other.losses == 1))
    said = [r.getMessage() for r in caplog.records]
    assert any("lost what it held" in line and prefix in line for line in said), said
    assert not any("declared dead" in line for line in said), said


async def test_deadlines_stand_still_while_no_heartbeat_gets_through(
    make: Make, raw: aioredis.Redis, prefix: str
) -> None:
    """Redis out of everyone's reach for longer than the window (here: nobody beats): the first
    client back must not take the other for dead, nor end the lease the other holds."""
    first = await make()
    other = await make()
    await first.publish(WORK, b"job", msg_id="job")
    held = await within(other.consume(WORK, lease=0.6))
    for q in (first, other):
        assert q._beats is not None
        q._beats.cancel()

    async def window_and_lease_over() -> bool:
        seconds, micros = await raw.time()
        deadline = max(await raw.zscore(f"{prefix}clients", other.client_id) or 0, 0)
        return seconds * 1000 + micros / 1000 > deadline + 300

    await eventually(window_and_lease_over)
    await first._beat(raise_errors=False)  # the first heartbeat after the gap: janitor duty
    assert await raw.zscore(f"{prefix}clients", other.client_id) is not None
    await held.extend()  # still its lease
    await held.ack()


async def test_a_redis_out_of_memory_is_an_outage_until_it_takes_writes(tmp_path: Path) -> None:
    async with private_redis(tmp_path / "redis") as url:
        q = RedisQueue.from_config({"type": "redis", "url": url, "publish_timeout": 0.5})
        admin = aioredis.Redis.from_url(url)
        await q.start()
        try:
            await admin.config_set("maxmemory", 1)
            with pytest.raises(PublishRejected, match=r"refused writes for 0.5s: its maxmemory is reached"):
                await q.publish(WORK, b"job", msg_id="job")
            outage = q.outage
            assert outage is not None and outage.state == "refusing writes"
            assert "refusing writes for" in outage.describe()
            await q._blocking_read({f"{q.config.prefix}t:{WORK}": "0-0"}, 10, count=1)
            assert q.outage is outage, "a read answered does not end it: writes are still refused"
            await admin.config_set("maxmemory", 0)
            await q.publish(WORK, b"job", msg_id="job")
            assert q.outage is None
        finally:
            await q.close()
            await admin.aclose()


def test_refusals_that_last_only_as_long_as_a_condition_of_the_server() -> None:
    misconf = ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's currently unable")
    assert refused_for_now(misconf) == (
        "it cannot save to disk (is its disk full?): "
        "MISCONF Redis is configured to save RDB snapshots, but it's currently unable"
    )
    oom = OutOfMemoryError(
        "command not allowed when used memory > 'maxmemory'. script: 1f2e, on @user_script:9."
    )
    assert refused_for_now(oom) == (
        "its maxmemory is reached: raise maxmemory or free memory: "
        "command not allowed when used memory > 'maxmemory'"
    )
    assert (
        refused_for_now(ResponseError("ERR user_script:1: Script attempted to access nonexistent global"))
        is None
    )


async def test_a_redis_that_cannot_save_to_its_full_disk_is_an_outage(tmp_path: Path) -> None:
    """A real full disk (tmpfs) under a Redis with save points: its snapshot fails, and it refuses
    every write (MISCONF) until one succeeds."""
    with small_disk(tmp_path / "disk", "4m") as disk:
        async with private_redis(disk.path, save="3600 1") as url:
            q = RedisQueue.from_config({"type": "redis", "url": url, "publish_timeout": 0.5})
            admin = aioredis.Redis.from_url(url)
            await q.start()
            try:
                disk.fill()
                await admin.bgsave()

                async def snapshot_failed() -> bool:
                    return (await admin.info("persistence"))["rdb_last_bgsave_status"] == "err"

                await eventually(snapshot_failed, 10)
                with pytest.raises(
                    PublishRejected, match=r"it cannot save to disk \(is its disk full\?\): MISCONF"
                ):
                    await q.publish(WORK, b"job", msg_id="job")
                outage = q.outage
                assert outage is not None and outage.state == "refusing writes"
                disk.free()
                await admin.bgsave()

                async def snapshot_saved() -> bool:
                    return (await admin.info("persistence"))["rdb_last_bgsave_status"] == "ok"

                await eventually(snapshot_saved, 10)
                await q.publish(WORK, b"job", msg_id="job")
                assert q.outage is None
            finally:
                await q.close()
                await admin.aclose()
