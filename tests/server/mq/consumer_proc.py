"""Helper process for the contract tests: take one delivery, say so, then hold it forever.

Usage: python consumer_proc.py '<client config json>' <work topic> <lease seconds>
Prints ``GOT <msg_id> <attempt>`` once it holds a delivery; the test then kills it.
"""

from __future__ import annotations

import asyncio
import json
import sys

from server.mq.factory import connect_queue


async def main(config: str, topic: str, lease: float) -> None:
    q = connect_queue(json.loads(config))
    await q.start()
    async for d in q.consume(topic, lease=lease):
        print(f"GOT {d.message.msg_id} {d.attempt}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
