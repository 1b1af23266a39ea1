"""Query parameters as the routes read them (``validation.query_param`` and its users)."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from llamactl.server.apiserver.validation import query_param, query_seconds
from llamactl.server.errors import InvalidRequest


def _request(query: bytes) -> Request:
    return Request({"type": "http", "method": "POST", "path": "/", "query_string": query, "headers": []})


def test_a_request_without_a_query_string_is_not_parsed_for_one() -> None:
    request = _request(b"")
    assert query_param(request, "timeout") is None
    assert query_seconds(request, "timeout") is None
    assert "_query_params" not in vars(request)  # Starlette's QueryParams never built


def test_a_query_string_is_read_as_before() -> None:
    request = _request(b"timeout=2.5&session_id=a&session_id=b&empty=")
    assert query_param(request, "timeout") == "2.5"
    assert query_seconds(request, "timeout") == 2.5
    assert query_param(request, "session_id") == "b"  # the last of repeated values, as before
    assert query_param(request, "empty") == ""
    assert query_param(request, "missing") is None
    with pytest.raises(InvalidRequest, match="query parameter 'session_id' must be a number of seconds"):
        query_seconds(request, "session_id")
