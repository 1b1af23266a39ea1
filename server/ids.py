"""The ids a caller may choose: task, session, service and deployment ids.

An id is 1 to 128 characters from ``A-Z a-z 0-9 . _ : -`` and is neither ``.`` nor ``..``. That
covers uuids (what every client generates), deployment and service names of deployment files,
and keeps ids safe wherever they end up: URL paths, topic names, state-store keys, file names
and error messages. The API checks every id it is given; the engine can call :func:`check_id`
on ids that reach it another way (the Python API).
"""

from __future__ import annotations

import re

from llamactl.server.errors import InvalidRequest

__all__ = ["ID_RULE", "MAX_ID_LENGTH", "check_id", "id_problem"]

MAX_ID_LENGTH = 128
ID_RULE = f"1 to {MAX_ID_LENGTH} characters from A-Z a-z 0-9 . _ : - (not '.' or '..')"
"""The rule in words, for error messages and docs."""

_ID = re.compile(rf"[A-Za-z0-9._:-]{{1,{MAX_ID_LENGTH}}}")


def id_problem(value: object, what: str) -> str | None:
    """What is wrong with ``value`` as an id (``what`` names it: "task id"), or None if it is fine.

    The message never repeats a long or unprintable value back.
    """
    if not isinstance(value, str):
        return f"{what} must be a string of {ID_RULE}"
    if _ID.fullmatch(value) and value not in {".", ".."}:
        return None
    shown = repr(value) if len(value) <= 40 and value.isprintable() else f"of {len(value)} characters"
    return f"{what} {shown} is not valid: use {ID_RULE}"


def check_id(value: str, what: str) -> str:
    """``value`` if it is a valid id.

    Raises:
        InvalidRequest: it is not (the message names ``what`` and the rule).
    """
    problem = id_problem(value, what)
    if problem is not None:
        raise InvalidRequest(problem)
    return value
