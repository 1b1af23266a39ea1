"""The iterator behind ``RedisQueue.subscribe``.

A message's entry id is ``0-<seq + 1>``, so "every message from seq n on" is exactly ``XREAD``
after the id ``0-<n>``: the iterator reads a batch, hands it out, and asks again after the last
id it handed out, blocking when it has read everything. The id it asks after is all its state,
so a reconnect or a slow reader loses nothing and sees nothing twice. A stream topic keeps its
messages 7 days (see the package docstring); a subscriber asking for older ones starts at the
oldest kept.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from redis.typing import KeyT, StreamIdT

from llamactl.server.mq.base import Message

if TYPE_CHECKING:
    from .client import RedisQueue

__all__ = ["subscribe_iter"]

_BATCH = 1000


async def subscribe_iter(client: RedisQueue, topic: str, from_seq: int) -> AsyncIterator[Message]:
    key = f"{client.config.prefix}t:{topic}"
    next_seq = from_seq
    block = max(1, int(client.config.window * 1000))
    while True:
        client._check_open()
        streams: dict[KeyT, StreamIdT] = {key: b"0-%d" % next_seq}
        reply = await client._blocking_read(streams, block, count=_BATCH)
        if not reply:
            continue
        batch: list[Message] = []
        for entry_id, fields in reply[0][1]:
            seq = int(entry_id.split(b"-", 1)[1]) - 1
            if seq < next_seq:
                continue
            batch.append(
                Message(
                    topic,
                    fields[b"i"].decode(),
                    fields[b"p"],
                    fields[b"k"].decode(),
                    seq,
                    json.loads(fields[b"h"]),
                )
            )
            next_seq = seq + 1
        for m in batch:
            yield m
