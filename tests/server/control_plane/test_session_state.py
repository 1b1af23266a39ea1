"""The free-form state the control-plane port keeps per session goes with its session: deleted
with it, and not kept when the session was gone before the state was written."""

from __future__ import annotations

import pytest

from llamactl.server.control_plane.changes import ChangeFeed
from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.errors import SessionNotFound
from llamactl.server.state.memory import MemoryStateStore

D = "stateful"


async def _records() -> ControlPlaneRecords:
    store = MemoryStateStore()
    await store.start()
    return ControlPlaneRecords(store, D, ChangeFeed(store, D, f"{D}/changes"))


async def test_a_sessions_state_is_deleted_with_it() -> None:
    records = await _records()
    await records.create_session("s1")
    await records.set_session_state("s1", b'{"a": 1}')
    assert await records.session_state("s1") == b'{"a": 1}'
    _, version = await records.get_session_versioned("s1")
    assert await records.delete_session("s1", version)
    assert await records.store.get(records.session_state_ns, "s1") is None


async def test_state_written_for_a_session_deleted_before_is_not_kept() -> None:
    """The route checks the session first; a delete may still come before the write."""
    records = await _records()
    with pytest.raises(SessionNotFound):
        await records.set_session_state("gone", b'{"a": 1}')
    assert await records.store.get(records.session_state_ns, "gone") is None
