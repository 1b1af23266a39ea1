"""Short, user-facing descriptions of exceptions: one line for ``error``, a few frames for ``traceback``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib
import importlib.util
import os
import threading
import traceback
from pathlib import Path

from llamactl.server.errors import exception_line as error_line

__all__ = ["error_line", "frame_locations", "traceback_summary"]

# Frames inside these places are machinery, not the user's code: a traceback that only shows the
# workflow runtime's control loop tells the user nothing about where their step failed.
_MACHINERY = (
    *(str(Path(m.__file__).parent) + os.sep for m in (asyncio, concurrent.futures, importlib) if m.__file__),
    *(  # where ``workflows`` is, without importing it (a function service's worker does not)
        str(Path(spec.origin).parent) + os.sep
        for spec in [importlib.util.find_spec("workflows")]
        if spec is not None and spec.origin
    ),
    str(Path(__file__).parent) + os.sep,
    threading.__file__ or "threading.py",
    "<frozen importlib",
    f"{os.sep}llama_index_instrumentation{os.sep}",
)


def _frames(exc: BaseException, limit: int, *, user_only: bool = False) -> list[traceback.FrameSummary]:
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not any(m in f.filename for m in _MACHINERY)]
    return (user if user or user_only else list(frames))[-limit:]


def traceback_summary(exc: BaseException, limit: int = 5) -> str:
    """The last ``limit`` frames (preferring the user's code over runtime internals) and the error
    line; for a syntax error, the user's frames (an import's: often none) and the line with the
    mistake, marked, as Python shows it."""
    if isinstance(exc, SyntaxError) and exc.filename:
        frames = _frames(exc, limit, user_only=True)
        return "".join(traceback.format_list(frames) + traceback.format_exception_only(exc))
    lines = traceback.format_list(_frames(exc, limit))
    return "".join(lines) + error_line(exc)


def frame_locations(exc: BaseException, limit: int = 3) -> str:
    """The last frames as ``file:line`` joined by `` <- `` (innermost first), or ``""``."""
    return " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(_frames(exc, limit)))
