"""ZeroMQ-specific: a subscription kept idle for a suspect serves again once no suspect waits.

When a consumer dies holding several deliveries, each runs again alone; while one waits for an
idle subscription, one subscription is reserved for it. If other subscriptions turn idle first
and take every suspect, the reservation has nothing left to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from llamactl.server.mq.base import Delivery, MessageQueue
from llamactl.server.mq.factory import connect_queue
from llamactl.server.mq.zeromq import ZeroMQBroker
from llamactl.server.mq.zeromq.dispatch import Dispatcher

from .test_contract import REPO, got_line
from .test_zeromq_direct import next_delivery, until

WORK = "work.reserved.svc.a"


@dataclass
class Suspects:
    """A broker and a client, with a consumer process holding s1 and s2 that ``kill`` ends."""

    broker: ZeroMQBroker
    queue: MessageQueue
    proc: asyncio.subprocess.Process

    @property
    def dispatcher(self) -> Dispatcher:
        assert self.broker._dispatcher is not None
        return self.broker._dispatcher

    async def kill(self, leases_left: int) -> None:
        """SIGKILL the holder of s1 and s2: both become suspects (each to run again alone)."""
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await until(lambda: len(self.dispatcher.leases) == leases_left, "the dead consumer's leases released")


@contextlib.asynccontextmanager
async def two_suspects_held(tmp_path: Path) -> AsyncIterator[Suspects]:
    broker = ZeroMQBroker(journal_path=tmp_path / "mq.sqlite", heartbeat_interval=0.2)
    await broker.start()
    queue = connect_queue(broker.client_config)
    await queue.start()
    await queue.publish(WORK, b"s", msg_id="s1")
    await queue.publish(WORK, b"s", msg_id="s2")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("consumer_proc.py")),
        json.dumps(broker.client_config),
        WORK,
        "60",
        "2",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert sorted([await got_line(proc) for _ in range(2)]) == [["GOT", "s1", "1"], ["GOT", "s2", "1"]]
        yield Suspects(broker, queue, proc)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await queue.close()
        await broker.close()


async def test_the_reserved_subscription_takes_work_again_once_every_suspect_went_elsewhere(
    tmp_path: Path,
) -> None:
    async with two_suspects_held(tmp_path) as held:
        queue = held.queue
        for i in range(5):
            await queue.publish(WORK, b"w", msg_id=f"w{i}")
        # Three subscriptions, each full: A holds one, B and D two each.
        a = aiter(queue.consume(WORK, prefetch=1, lease=60))
        held_a = [await next_delivery(a)]
        b = aiter(queue.consume(WORK, prefetch=2, lease=60))
        held_b = [await next_delivery(b), await next_delivery(b)]
        d = aiter(queue.consume(WORK, prefetch=2, lease=60))
        held_d = [await next_delivery(d), await next_delivery(d)]

        # Nobody is idle to run a suspect alone, so A (holding the least) is reserved for them.
        await held.kill(leases_left=5)

        # B and D turn idle first and take one suspect each: no suspect waits any more.
        suspects: list[Delivery] = []
        for it, theirs in ((b, held_b), (d, held_d)):
            for delivery in theirs:
                await delivery.ack()
            suspects.append(await next_delivery(it))
        assert sorted((s.message.msg_id, s.attempt) for s in suspects) == [("s1", 2), ("s2", 2)]

        # A finishes its work: it has room, nothing waits for it to stay idle, so it serves.
        await held_a[0].ack()
        await queue.publish(WORK, b"x", msg_id="x")
        delivery = await next_delivery(a)
        assert delivery.message.msg_id == "x"
        for done in (delivery, *suspects):
            await done.ack()


async def test_a_reservation_ended_puts_its_subscription_back_in_turn(tmp_path: Path) -> None:
    """A reserved subscription with room leaves the turn when work comes meanwhile; once no
    suspect waits it is back in turn at once, not only after its next ack."""
    async with two_suspects_held(tmp_path) as held:
        queue = held.queue
        for i in range(4):
            await queue.publish(WORK, b"w", msg_id=f"w{i}")
        b = aiter(queue.consume(WORK, prefetch=2, lease=60))
        held_b = [await next_delivery(b), await next_delivery(b)]
        d = aiter(queue.consume(WORK, prefetch=2, lease=60))
        held_d = [await next_delivery(d), await next_delivery(d)]
        await queue.publish(WORK, b"w", msg_id="w4")
        a = aiter(queue.consume(WORK, prefetch=2, lease=60))  # holds one, room for another
        held_a = await next_delivery(a)

        await held.kill(leases_left=5)
        # Work comes while A is reserved (B and D are full): A leaves the turn, y waits.
        await queue.publish(WORK, b"y", msg_id="y")
        topic = held.dispatcher.topics.get(WORK)
        assert topic is not None
        await until(lambda: not any(s.queued for s in topic.subs), "A out of the turn")

        # B takes y when it has room, then each of B and D, idle, runs a suspect alone.
        await held_b[0].ack()
        took_y = await next_delivery(b)
        assert took_y.message.msg_id == "y"
        for delivery in (held_b[1], took_y):
            await delivery.ack()
        suspects = [await next_delivery(b)]
        for delivery in held_d:
            await delivery.ack()
        suspects.append(await next_delivery(d))
        assert sorted(s.message.msg_id for s in suspects) == ["s1", "s2"]

        # A still holds w4 and has room: new work goes to it now.
        await queue.publish(WORK, b"z", msg_id="z")
        delivery = await next_delivery(a)
        assert delivery.message.msg_id == "z"
        for done in (delivery, held_a, *suspects):
            await done.ack()
