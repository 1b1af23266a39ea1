"""``python -m llamactl.server.apiserver [--host H] [--port P] [--token T] [deployment.yml ...]``.

The same server as ``llamactl serve``, without the CLI: handy for debugging the API alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from llamactl.server.apiserver.runner import serve
from llamactl.server.errors import LlamactlError


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await serve(
        host=args.host,
        port=args.port,
        token=args.token or os.environ.get("LLAMACTL_API_TOKEN") or None,
        deployment_files=[Path(f) for f in args.files],
        on_ready=lambda url: print(f"API server ready on {url}", flush=True),
        on_event=lambda line: print(line, flush=True),
        stop=stop,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m llamactl.server.apiserver", description=__doc__)
    parser.add_argument("files", nargs="*", help="deployment files to deploy at start")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4501, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="bearer token (default: $LLAMACTL_API_TOKEN)")
    args = parser.parse_args()
    run: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop  # noqa: PLC0415  (optional, faster)

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        run(_main(args))
    except (LlamactlError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
