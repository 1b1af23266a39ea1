"""A two-folder deployment for ``llamactl serve --watch`` tests, and that server as a subprocess."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.llamactl.serving import Server

__all__ = ["DEPLOYMENT", "NAME", "SERVICE_C", "WatchServer", "service_code", "write_app"]

NAME = "watched"

DEPLOYMENT = f"""\
name: {NAME}
default-service: a
services:
  a:
    name: A
    source: {{type: local, location: a}}
    path: svc:handle
  ticks:
    name: Ticks
    source: {{type: local, location: a}}
    path: svc:ticks
  b:
    name: B
    source: {{type: local, location: b}}
    path: svc:handle
"""

SERVICE_C = """\
  c:
    name: C
    source: {type: local, location: c}
    path: svc:handle
"""


def service_code(version: str) -> str:
    """A service module: ``handle()`` returns ``version``; ``ticks()`` streams ``count`` events."""
    return textwrap.dedent(
        f"""\
        import asyncio

        VERSION = "{version}"


        async def handle() -> str:
            return VERSION


        async def ticks(count: int = 10, delay: float = 0.05):
            for n in range(count):
                await asyncio.sleep(delay)
                yield {{"n": n, "version": VERSION}}
        """
    )


def write_app(root: Path) -> Path:
    """``deployment.yml`` with services ``a`` and ``ticks`` (folder ``a/``) and ``b`` (``b/``)."""
    for folder, version in (("a", "a1"), ("b", "b1")):
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "svc.py").write_text(service_code(version))
    file = root / "deployment.yml"
    file.write_text(DEPLOYMENT)
    return file


class WatchServer(Server):
    """`llamactl serve FILE --watch --port 0`; stopped like :class:`Server` (SIGINT, no worker left)."""

    def __init__(self, file: Path, ready_timeout: float = 90) -> None:
        super().__init__(file, ready_timeout=ready_timeout, extra=["--watch"])
