"""Serve Llama Deploy's API server on a free loopback port (run by the anchor's own Python).

``<anchor venv>/bin/python bench/anchor_server.py RC_FOLDER`` deploys every ``*.yml`` of
``RC_FOLDER`` (Llama Deploy's startup folder), serves ``llama_deploy.apiserver.app:app`` on
uvicorn with uvloop and httptools and no access log (as the baseline server is), and prints
``Listening on http://127.0.0.1:PORT`` on stderr once the deployments are up.

It imports nothing from ``bench`` or ``llamactl``: it runs in a virtual environment that has
only ``llama-deploy`` (see :mod:`bench.anchor`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import tempfile

ACCESS_LOG = os.environ.get("ANCHOR_ACCESS_LOG", "1") == "1"


async def _serve(rc_folder: str, deployments_folder: str) -> None:
    os.environ["LLAMA_DEPLOY_APISERVER_RC_PATH"] = rc_folder
    os.environ["LLAMA_DEPLOY_APISERVER_DEPLOYMENTS_PATH"] = deployments_folder
    os.environ["LLAMA_DEPLOY_APISERVER_PROMETHEUS_ENABLED"] = "false"
    import uvicorn  # noqa: PLC0415
    from llama_deploy.apiserver.app import app  # type: ignore[import-not-found]  # noqa: PLC0415

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, loop="none", http="httptools", access_log=ACCESS_LOG, log_level="info")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.005)
    print(f"Listening on http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    await serving


def main() -> None:
    """Serve until SIGINT/SIGTERM."""
    import uvloop  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="llama-deploy-anchor-") as deployments:
        uvloop.run(_serve(os.path.abspath(sys.argv[1]), deployments))


if __name__ == "__main__":
    main()
