"""The state tree's labels, built without a running app."""

from __future__ import annotations

from llamactl.server.types import ReplicaState, ReplicaStatus
from llamactl.tui.model.dashboard import DashboardModel
from llamactl.tui.state.tree import StateTree


def _label(**fields: object) -> str:
    tree = StateTree(DashboardModel(max_tasks=10, max_sessions=10), 5)
    replica = ReplicaStatus(replica_id="wf#1", service_id="wf", state=ReplicaState.READY, **fields)  # type: ignore[arg-type]
    return str(tree._replica_label(replica))


def test_a_replica_shows_how_many_it_starts_at_once_when_fewer_than_its_maximum() -> None:
    assert "3/64 busy (4 at once)" in _label(in_flight=3, max_concurrency=64, concurrency_limit=4)


def test_a_replica_at_its_maximum_or_not_reporting_shows_only_its_maximum() -> None:
    assert _label(in_flight=2, max_concurrency=8, concurrency_limit=8).endswith("2/8 busy")
    assert _label(in_flight=2, max_concurrency=8).endswith("2/8 busy")
