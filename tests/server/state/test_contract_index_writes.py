"""Indexed writes at the edges of the contract, against every backend: a commit that raises writes
nothing, a commit that fails leaves no trace in the index, and a record's new sort moves every
one of its fields."""

from __future__ import annotations

import pytest

from llamactl.server.errors import StateStoreError
from llamactl.server.state import StateStore
from llamactl.server.state.base import Cas, Index, Put


async def test_a_commit_that_gives_a_new_namespace_too_many_fields_writes_nothing(store: StateStore) -> None:
    writes = [
        Put("n", "k1", b"1", Index("1", {"a": "1", "b": "1", "c": "1"})),
        Put("n", "k2", b"2", Index("2", {"d": "1", "e": "1"})),
    ]
    with pytest.raises(StateStoreError, match="at most 4"):
        await store.commit(writes)
    assert await store.get("n", "k1") is None
    assert await store.count("n", "a") == {}
    assert await store.query("n", "a") == []


async def test_a_commit_whose_first_indexed_write_has_no_sort_writes_all_or_nothing(
    store: StateStore,
) -> None:
    # Backends may refuse a first indexed write without a sort; refused, the commit writes nothing.
    writes = [Put("c", "first", b"1"), Put("c", "k", b"v", Index(None, {"f": "1"}))]
    try:
        result = await store.commit(writes)
    except ValueError:
        assert await store.get("c", "first") is None
        assert await store.get("c", "k") is None
    else:
        assert result.ok and await store.get("c", "first") is not None


async def test_a_commit_whose_condition_fails_gives_no_field_a_column(store: StateStore) -> None:
    await store.put("t", "k", b"v", index=Index("1:k", {"a": "1", "b": "1", "c": "1"}))
    failed = await store.commit(
        [Put("t", "k2", b"v", Index("2:k2", {"x": "1"})), Cas("t", "missing", b"", 5)]
    )
    assert not failed.ok and failed.failed == 1
    await store.put("t", "k3", b"v", index=Index("3:k3", {"y": "1"}))  # the fourth field, not a fifth
    assert [k for k, _, _ in await store.query("t", "y", "1")] == ["k3"]
    assert await store.query("t", "x") == []


async def test_a_new_sort_moves_the_fields_it_does_not_name_too(store: StateStore) -> None:
    await store.put("t", "k", b"v", index=Index("a:k", {"x": "1", "y": "2"}))
    await store.put("t", "k2", b"v", index=Index("b:k2", {"x": "1", "y": "2"}))
    await store.put("t", "k", b"v", index=Index("c:k", {"x": "1"}))
    expected = [("k2", "b:k2"), ("k", "c:k")]
    assert [(k, s) for k, _, s in await store.query("t", "x", "1")] == expected
    assert [(k, s) for k, _, s in await store.query("t", "y", "2")] == expected
    assert [(k, s) for k, _, s in await store.query("t", "y")] == expected
    assert [k for k, _, _ in await store.query("t", "y", "2", after="b:k2")] == ["k"]
    assert await store.count("t", "y") == {"2": 2}
    await store.put("t", "k", b"v", index=Index(None, {"x": "3"}))  # keeps the new sort
    assert [(k, s) for k, _, s in await store.query("t", "x", "3")] == [("k", "c:k")]


async def test_a_namespace_keeps_its_fields_when_its_last_key_is_deleted(store: StateStore) -> None:
    await store.put("d", "k", b"v", index=Index("1:k", {"a": "1", "b": "1", "c": "1", "d": "1"}))
    assert await store.delete("d", "k")
    with pytest.raises(StateStoreError, match="at most 4"):
        await store.put("d", "k", b"v", index=Index("1:k", {"e": "1"}))
    await store.put("d", "k", b"v", index=Index("1:k", {"a": "2"}))
    assert await store.count("d", "a") == {"2": 1}
