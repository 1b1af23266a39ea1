"""Short ids: commands take a unique start or end of a task or session id, and tables show the end
of each id, cut to the shortest length that keeps them apart (8 characters at least).

The end, not the start: the ids the server makes are UUIDv7, whose first characters are the time
they were made (the same for every task of the last minute) and whose last ones are random. A
uuid4 or a name of the user's own tells apart by its end as well as by its start.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from llamactl.cli.common import fail
from llamactl.cli.exit_codes import ExitCode

if TYPE_CHECKING:
    from llamactl.client.sync import Sessions, Tasks
    from llamactl.server.types import SessionDefinition, TaskRecord

__all__ = ["SHORT", "resolve_session", "resolve_task", "shorten"]

SHORT = 8
"""Characters of an id a table shows (more when two ids shown together share them)."""
_SHOWN_MATCHES = 5


def shorten(ids: Sequence[str]) -> dict[str, str]:
    """Each id's last characters, as few (at least :data:`SHORT`) as keep ``ids`` distinct."""
    unique = set(ids)
    length = SHORT
    while length < max((len(i) for i in unique), default=0):
        if len({i[-length:] for i in unique}) == len(unique):
            break
        length += 4
    return {i: i[-length:] for i in ids}


def _one(given: str, kind: str, matches: list[str], hint: str) -> str:
    if len(matches) == 1:
        return matches[0]
    shown = ", ".join(sorted(matches)[:_SHOWN_MATCHES]) + (", ..." if len(matches) > _SHOWN_MATCHES else "")
    fail(f"'{given}' is the start or end of several {kind} ids: {shown}", hint, ExitCode.USAGE)


def _not_empty(given: str, kind: str) -> None:
    # Every id starts with "" (so it is no start to match), and the server routes an empty one
    # to the list: a script's unset variable would get a misleading answer.
    if not given.strip():
        hint = f"give its id, or a unique start or end of it (`llamactl {kind}s list` shows them)"
        fail(f"the {kind} id is empty", hint, ExitCode.USAGE)


def _matches(given: str, ids: Iterable[str]) -> list[str]:
    found = []
    for candidate in ids:
        if candidate.startswith(given) or candidate.endswith(given):
            found.append(candidate)
            if len(found) > _SHOWN_MATCHES:
                break
    return found


def resolve_task(tasks: Tasks, given: str) -> TaskRecord:
    """The task whose id is ``given``, else the only one whose id starts or ends with it.

    Raises the client's NotFound (for the caller's error handling) when none does.
    """
    from llamactl.client.errors import NotFound

    _not_empty(given, "task")
    try:
        return tasks.get(given)
    except NotFound as missing:
        try:
            matches = _matches(given, (t.task_id for t in tasks.iter(newest_first=True)))
        except NotFound:
            raise missing from None
        if not matches:
            raise
    return tasks.get(_one(given, "task", matches, "type more of the id (`llamactl tasks list` shows them)"))


def resolve_session(sessions: Sessions, given: str) -> SessionDefinition:
    """The session whose id is ``given``, else the only one whose id starts or ends with it."""
    from llamactl.client.errors import NotFound

    _not_empty(given, "session")
    try:
        return sessions.get(given)
    except NotFound as missing:
        try:
            matches = _matches(given, (s.session_id for s in sessions.iter()))
        except NotFound:
            raise missing from None
        if not matches:
            raise
    hint = "type more of the id (`llamactl sessions list` shows them)"
    return sessions.get(_one(given, "session", matches, hint))
