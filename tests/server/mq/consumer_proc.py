"""Helper process for the contract tests: take deliveries, say so, never settle them.

Usage: python consumer_proc.py '<client config json>' <work topic> <lease seconds> [prefetch] [block]
Prints ``GOT <msg_id> <attempt>`` for each delivery it holds; the test kills or stops it. With
``block`` > 0 it blocks its own event loop for that many seconds right after the first delivery
(a blocking call in async code), then goes on taking deliveries.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from llamactl.server.mq.factory import connect_queue


async def main(config: str, topic: str, lease: float, prefetch: int, block: float) -> None:
    q = connect_queue(json.loads(config))
    await q.start()
    held = []
    async for d in q.consume(topic, prefetch=prefetch, lease=lease):
        held.append(d)
        print(f"GOT {d.message.msg_id} {d.attempt}", flush=True)
        if block > 0 and len(held) == 1:
            time.sleep(block)  # noqa: ASYNC251  (the point: a loop that cannot run)
            print("AWAKE", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    prefetch = int(args[3]) if len(args) > 3 else 10
    block = float(args[4]) if len(args) > 4 else 0.0
    asyncio.run(main(args[0], args[1], float(args[2]), prefetch, block))
