"""The dispatcher's per-session memory stays bounded and forgets what went stale."""

from __future__ import annotations

from llamactl.server.control_plane.session_turns import FreshTurns
from llamactl.server.control_plane.stored import SessionRecord


def test_fresh_turns_keep_at_most_their_limit_and_answer_only_for_their_task() -> None:
    turns = FreshTurns(limit=2)
    for n in range(3):
        turns.remember(f"s{n}", f"t{n}", SessionRecord(session_id=f"s{n}", active=f"t{n}"), n + 1)
    assert set(turns.keys()) == {"s1", "s2"}  # the oldest went
    assert turns.take("s1", "another task") is None  # and is forgotten all the same
    assert turns.take("s1", "t1") is None
    found = turns.take("s2", "t2")
    assert found is not None and found[1] == 3 and found[0].active == "t2"
    assert set(turns.keys()) == set()
