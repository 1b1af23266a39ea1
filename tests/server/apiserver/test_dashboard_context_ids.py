"""``/dashboard/contexts`` checks its session ids as every other route does (docs/http-api.md,
"What a request may carry": an id outside the rule is a 400)."""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROUTE = "/deployments/main/dashboard/contexts"


@pytest.mark.parametrize("bad", ["a/b", "..", "x" * 129, "\x00", "é", "a b"])
async def test_a_session_id_outside_the_rule_is_400(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.get(ROUTE, params={"session_id": ["fine-id", bad]})
    assert response.status_code == 400, response.text
    assert "session id" in response.json()["detail"]


async def test_valid_ids_are_answered_and_an_empty_one_names_no_session(client: httpx.AsyncClient) -> None:
    answered = await client.get(ROUTE, params={"session_id": ["a.b_c:d-1", "a.b_c:d-1", ""]})
    assert answered.status_code == 200, answered.text
    assert answered.json() == {"contexts": {"a.b_c:d-1": None}}
    only_empty = await client.get(ROUTE, params={"session_id": ""})
    assert only_empty.status_code == 400 and "session_id" in only_empty.json()["detail"]
