"""``python -m bench.transport``: the floor's hop over ZeroMQ against the same hop over a Unix socket.

Both floors (``python -m bench.floor_server`` and ``... --transport unix``) run at once, and the
load goes to one, then the other, in short bursts, as :mod:`bench.ab` does for two checkouts
(A is ZeroMQ, B the Unix socket). What it shows is what ZeroMQ's I/O threads cost each message on
this machine (see :mod:`bench.floor_unix`), and so what a transport for local workers that wakes
no thread of its own could take off llamactl's path.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Sequence

from bench.ab import Comparison, Target, add_burst_options, alternate, burst_clients
from bench.cached_env import REPO_ROOT
from bench.http_client import build_request
from bench.measure import ECHO_BODY
from bench.server_proc import ServerProcess

__all__ = ["compare", "main"]

PATHS = ("/echo", "/workflow")


async def compare(
    *, clients: Sequence[int], seconds: float, bursts: int, paths: Sequence[str] = PATHS
) -> list[tuple[str, Comparison]]:
    """Serve both floors at once; per path and client count, alternate ``bursts`` bursts each."""
    async with contextlib.AsyncExitStack() as stack:
        floors = []
        for transport in ("zeromq", "unix"):
            argv = [sys.executable, "-m", "bench.floor_server", "--transport", transport]
            floors.append(await stack.enter_async_context(ServerProcess(argv, cwd=REPO_ROOT)))
        out = []
        for path in paths:
            zeromq, unix = (Target(p, build_request("POST", p.host, p.port, path, ECHO_BODY)) for p in floors)
            for n in clients:
                out.append((path, await alternate(zeromq, unix, n, seconds, bursts)))
        return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.transport", description=__doc__.split("\n\n")[0])
    add_burst_options(parser, bursts=8, per="side, path and client count")
    args = parser.parse_args(argv)
    clients = burst_clients(parser, args)
    print("A: the floor over ZeroMQ (ipc://), B: the floor over a Unix socket the event loops drive")
    for path, comparison in asyncio.run(compare(clients=clients, seconds=args.seconds, bursts=args.bursts)):
        print(path, "\n".join(comparison.report()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
