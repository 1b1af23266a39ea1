"""Helper process for the contract tests: take deliveries, say so, never settle them.

Usage: python consumer_proc.py '<client config json>' <work topic> <lease seconds>
Prints ``GOT <msg_id> <attempt>`` for each delivery it holds; the test kills or stops it.
"""

from __future__ import annotations

import asyncio
import json
import sys

from llamactl.server.mq.factory import connect_queue


async def main(config: str, topic: str, lease: float) -> None:
    q = connect_queue(json.loads(config))
    await q.start()
    held = []
    async for d in q.consume(topic, prefetch=10, lease=lease):
        held.append(d)
        print(f"GOT {d.message.msg_id} {d.attempt}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
