"""Short human forms of ids, times, sizes and errors for narrow table cells."""

from __future__ import annotations

import re
from pathlib import PurePath

__all__ = ["ago", "duration", "error_location", "id_matches", "one_line", "short_id", "size"]

_LOCATIONS = (
    re.compile(r"(?P<file>[^\s\"'(]+\.py)\s+line\s+(?P<line>\d+)"),
    re.compile(r"(?P<file>[^\s\"'(]+\.py)\"?,?\s*line\s+(?P<line>\d+)"),
    re.compile(r"(?P<file>[^\s\"'(:]+\.py):(?P<line>\d+)"),
)


_NOT_USER_CODE = ("/importlib/", "/site-packages/", "/lib/python3", "<frozen")


def short_id(value: str | None, width: int = 8) -> str:
    """The last ``width`` characters of an id: the random end of the server's UUIDv7 ids (their
    start is the time they were made); ``llamactl`` commands take an id's start or end."""
    if not value:
        return "-"
    return value if len(value) <= width else value[-width:]


def id_matches(value: str, given: str) -> bool:
    """True when ``given`` is the start or the end of the id ``value`` (tables show the end)."""
    return value.startswith(given) or value.endswith(given)


def duration(seconds: float | None) -> str:
    """``850ms``, ``4.2s``, ``3m04s``, ``2h05m``; ``-`` for None."""
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        minutes, rest = divmod(int(seconds), 60)
        return f"{minutes}m{rest:02d}s"
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours}h{rest // 60:02d}m"


def ago(seconds: float | None) -> str:
    """A coarse age: ``now``, ``12s``, ``4m``, ``3h``, ``2d``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return "now"
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def size(count: int | None) -> str:
    """Bytes as ``812 B``, ``4.1 KB``, ``2.0 MB``; ``-`` for None."""
    if count is None:
        return "-"
    value = float(count)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def error_location(error: str | None) -> str | None:
    """The ``file.py:line`` an error names (the file's name only), or None.

    Understands the forms the server writes: ``syntax error in /a/b.py line 3``, ``(at /a/b.py:3
    <- ...)`` and traceback lines (``File "/a/b.py", line 3``). The first place in the user's code
    wins over Python's own modules (importlib, the standard library, site-packages).
    """
    if not error:
        return None
    found: list[tuple[int, str, str]] = []
    for pattern in _LOCATIONS:
        for match in pattern.finditer(error):
            found.append((match.start(), match.group("file"), match.group("line")))
    if not found:
        return None
    found.sort()
    mine = [f for f in found if not any(part in f[1] for part in _NOT_USER_CODE)]
    _, file, line = (mine or found)[0]
    return f"{PurePath(file).name}:{line}"


def one_line(text: str | None, width: int = 80) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: max(width - 1, 0)] + "…"
