"""What the dashboard's "disconnected" banner says for each kind of failure (no server needed)."""

from __future__ import annotations

from llamactl.client.errors import error_for_status
from llamactl.tui.feed import describe_error, is_connection_error


def test_an_unreachable_store_or_queue_is_named_and_retried() -> None:
    body = {
        "detail": "the server cannot answer this right now (...): try again",
        "unavailable": "state_store",
    }
    error = error_for_status(503, body)
    assert describe_error(error) == (
        "the server cannot reach the deployment's state store (`llamactl status` says more)"
    )
    assert is_connection_error(error)
    queue = error_for_status(503, {**body, "unavailable": "message_queue"})
    assert "deployment's message queue" in describe_error(queue)
