"""Short, user-facing descriptions of exceptions: one line for ``error``, a few frames for ``traceback``."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import traceback
from pathlib import Path

import workflows

__all__ = ["ERROR_MESSAGE_LIMIT", "error_line", "frame_locations", "traceback_summary"]

ERROR_MESSAGE_LIMIT = 4_000
"""Characters of an exception's message kept in a task's error (and its worker's log line): a
message of megabytes (a whole input echoed back, say) would otherwise be stored with the task,
listed with every listing of tasks and logged in one line."""

# Frames inside these places are machinery, not the user's code: a traceback that only shows the
# workflow runtime's control loop tells the user nothing about where their step failed.
_MACHINERY = (
    *(str(Path(m.__file__).parent) + os.sep for m in (asyncio, concurrent.futures, workflows) if m.__file__),
    str(Path(__file__).parent) + os.sep,
    threading.__file__ or "threading.py",
    "<frozen importlib",
    f"{os.sep}llama_index_instrumentation{os.sep}",
)


def error_line(exc: BaseException, limit: int = ERROR_MESSAGE_LIMIT) -> str:
    """``"ExcType: message"`` on a single line (just the type when there is no message), the
    message cut to about ``limit`` characters; an exception whose ``str()`` fails still has one."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except Exception as str_exc:  # user code's __str__: it must not keep the task from ending
        return f"{name} (its message could not be read: {type(str_exc).__name__} in its __str__)"
    message = " ".join(text[: limit * 2].split())  # a cut first: the whole may be megabytes
    if len(message) > limit or len(text) > limit * 2:
        message = f"{message[:limit]}... (message cut: {len(text):,} characters in all)"
    return f"{name}: {message}" if message else name


def _frames(exc: BaseException, limit: int) -> list[traceback.FrameSummary]:
    frames = traceback.extract_tb(exc.__traceback__)
    user = [f for f in frames if not any(m in f.filename for m in _MACHINERY)]
    return (user or list(frames))[-limit:]


def traceback_summary(exc: BaseException, limit: int = 5) -> str:
    """The last ``limit`` frames (preferring the user's code over runtime internals) and the error line."""
    lines = traceback.format_list(_frames(exc, limit))
    return "".join(lines) + error_line(exc)


def frame_locations(exc: BaseException, limit: int = 3) -> str:
    """The last frames as ``file:line`` joined by `` <- `` (innermost first), or ``""``."""
    return " <- ".join(f"{f.filename}:{f.lineno}" for f in reversed(_frames(exc, limit)))
