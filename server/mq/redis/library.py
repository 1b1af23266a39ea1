"""How the backend's operations run on one Redis: as functions of one library, else as scripts.

The operations are functions of one library (``FUNCTION LOAD`` once, ``FCALL`` per call): the
helpers every operation shares are defined when Redis loads the library, not again at each call
as a script's top level is (about a sixth of a call's time in Redis, measured). Where this client
may not use functions (an ACL that denies ``FUNCTION`` or ``FCALL``; a server without them),
each operation is a script of its own, run by its SHA1 (``EVALSHA``) and loaded when Redis does
not know it.

The first call tells which: a Redis that does not know the library yet answers it "function
not found", one without functions for us "unknown command" or "NOPERM". A call answered so
(as after a restart or a flush, which forget functions and scripts alike) is sent again once
:meth:`Library.recover` has loaded the library or the scripts.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoPermissionError, NoScriptError, ResponseError

from .lua_lib import function_library, script

__all__ = ["Library"]

log = logging.getLogger(__name__)

_NOT_LOADED = "function not found"
_DENIED = ("'fcall'", "'function")
"""What an ACL's refusal names when it denies this client ``FCALL`` or ``FUNCTION``."""


class Library:
    """The operations by name, as the commands that run them on one Redis."""

    def __init__(self, bodies: Mapping[str, str]) -> None:
        self._code, self._functions = function_library(bodies)
        self._scripts = {name: script(body) for name, body in bodies.items()}
        self._shas = {
            name: hashlib.sha1(source.encode()).hexdigest() for name, source in self._scripts.items()
        }
        self.functions = True
        """Whether the operations run as functions (until Redis shows it has none for us)."""

    def __contains__(self, name: object) -> bool:
        return name in self._scripts

    def command(self, name: str, args: Sequence[Any]) -> tuple[Any, ...]:
        """The command that runs operation ``name`` with ``args``."""
        if self.functions:
            return ("FCALL", self._functions[name], 0, *args)
        return ("EVALSHA", self._shas[name], 0, *args)

    @staticmethod
    def missing(reply: object) -> bool:
        """Whether ``reply`` says Redis did not know the code or would not run it as a function
        (the call ran nothing: send it again after :meth:`recover`)."""
        return isinstance(reply, NoScriptError) or _not_loaded(reply) or _no_functions(reply)

    async def recover(self, redis: Redis, names: set[str], replies: Sequence[object]) -> None:
        """Make Redis know operations ``names`` again, after ``replies`` (each :meth:`missing`)."""
        denied = [reply for reply in replies if _no_functions(reply)]
        if denied:
            self._use_scripts(f"Redis answered {denied[0]}")
        elif self.functions and any(_not_loaded(reply) for reply in replies):
            await self._load_functions(redis)
        if not self.functions:
            pipe = redis.pipeline(transaction=False)
            for name in sorted(names):
                pipe.execute_command("SCRIPT LOAD", self._scripts[name])
            await pipe.execute()

    async def _load_functions(self, redis: Redis) -> None:
        try:
            await redis.execute_command("FUNCTION LOAD", self._code)  # type: ignore[no-untyped-call]
        except ResponseError as exc:
            if "already exists" not in str(exc):
                self._use_scripts(f"FUNCTION LOAD answered {exc}")
                return
        self.functions = True

    def _use_scripts(self, why: str) -> None:
        log.info("Redis message queue: running scripts, not functions (%s)", why)
        self.functions = False


def _not_loaded(reply: object) -> bool:
    return isinstance(reply, ResponseError) and str(reply).lower().startswith(_NOT_LOADED)


def _no_functions(reply: object) -> bool:
    """Whether ``reply`` says this Redis has no functions (before 7.0: "unknown command") or does
    not let this client use them (an ACL)."""
    if isinstance(reply, NoPermissionError):
        return any(name in str(reply).lower() for name in _DENIED)
    return isinstance(reply, ResponseError) and str(reply).lower().startswith("unknown command")
