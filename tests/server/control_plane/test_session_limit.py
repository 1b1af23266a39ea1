"""Sessions are bounded too: `sessions/create` beyond `control-plane.max-sessions` is refused,
saying how to make room, and nothing is lost (before, each one was kept for ever)."""

from __future__ import annotations

import pytest

from llamactl.server.control_plane import ControlPlaneSettings
from llamactl.server.errors import SessionLimitReached
from llamactl.server.types import TaskDefinition

from .conftest import Harness


async def test_sessions_beyond_the_limit_are_refused_until_one_is_deleted(harness: Harness) -> None:
    plane = await harness.control_plane(ControlPlaneSettings(max_sessions=3))
    made = [await plane.create_session() for _ in range(2)]
    named = await plane.create_session("named")
    with pytest.raises(SessionLimitReached) as caught:
        await plane.create_session()
    message = str(caught.value)
    assert "holds 3 sessions" in message and "max-sessions: 3" in message
    assert "llamactl sessions delete" in message
    # The one named again is there already: no new session, no refusal.
    task = await plane.create_task(TaskDefinition(session_id="named"))
    again = await plane.create_session("named")
    assert again.session_id == named.session_id and again.task_ids == [task.task_id]
    await plane.delete_session(made[0].session_id)
    assert (await plane.create_session()).session_id not in {s.session_id for s in made}
    with pytest.raises(SessionLimitReached):
        await plane.create_session("one-more")
