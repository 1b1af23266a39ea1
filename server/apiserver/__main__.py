"""``python -m llamactl.server.apiserver [--host H] [--port P] [--token T] [deployment.yml ...]``.

Also ``--allowed-host NAME``, ``--allow-origin ORIGIN``, ``--deployments-root DIR`` (each
repeatable), ``--max-body-size SIZE`` and ``--allow-install``, as for ``llamactl serve``.

The same server as ``llamactl serve``, without the CLI: handy for debugging the API alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from llamactl.server.apiserver.policy import parse_size
from llamactl.server.apiserver.runner import serve
from llamactl.server.errors import LlamactlError
from llamactl.server.process_limits import raise_open_files_limit
from llamactl.server.stop_signals import stop_signals


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals():
        loop.add_signal_handler(sig, stop.set)
    await serve(
        host=args.host,
        port=args.port,
        token=args.token or os.environ.get("LLAMACTL_API_TOKEN") or None,
        deployment_files=[Path(f) for f in args.files],
        allowed_hosts=args.allowed_hosts,
        allowed_origins=args.allow_origins,
        max_body_size=parse_size(args.max_body_size),
        deployments_roots=[Path(d) for d in args.deployments_roots],
        allow_install=args.allow_install,
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
    parser.add_argument(
        "--allowed-host",
        dest="allowed_hosts",
        action="append",
        default=[],
        metavar="NAME",
        help="also serve requests for this Host name (loopback names and --host always are)",
    )
    parser.add_argument(
        "--allow-origin",
        dest="allow_origins",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages of this origin call the API (none by default)",
    )
    parser.add_argument(
        "--max-body-size", default="4M", metavar="SIZE", help="largest body (bytes, 16M, ...)"
    )
    parser.add_argument(
        "--deployments-root",
        dest="deployments_roots",
        action="append",
        default=[],
        metavar="DIR",
        help="let /deployments/create load deployments from under this folder too",
    )
    parser.add_argument(
        "--allow-install",
        action="store_true",
        help="install python-dependencies (into each deployment's venv)",
    )
    args = parser.parse_args()
    run: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop  # noqa: PLC0415  (optional, faster)

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    try:
        raise_open_files_limit()
        run(_main(args))
    except (LlamactlError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
