"""The SQLite store's disk fills up (a real tmpfs): an outage whose state is "refusing writes",
saying why and what to do, which a read answered does not end and the next write through does."""

from __future__ import annotations

from pathlib import Path

from llamactl.server.errors import StateStoreError
from llamactl.server.state import SQLiteStateStore
from tests.faults import small_disk, use_up


async def test_a_full_disk_is_an_outage_of_the_store_until_a_write_goes_through(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        path = disk.path / "state.db"
        async with SQLiteStateStore(path) as store:
            await store.put("ns", "before", b"v")
            assert store.outage is None
            disk.fill()
            await use_up(lambda n, value: store.put("ns", f"full{n}", value), StateStoreError)
            outage = store.outage
            assert outage is not None and outage.state == "refusing writes"
            assert (outage.what, outage.where) == ("state store", f"sqlite:///{path}")
            assert outage.error.startswith("its disk is full: free some space on its disk (")
            assert await store.get("ns", "before") is not None
            assert store.outage is outage, "a read answered does not end it"
            disk.free()
            await store.put("ns", "after", b"v")
            assert store.outage is None
