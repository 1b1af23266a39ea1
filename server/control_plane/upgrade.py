"""Records written by a llamactl that did not index them: indexed once, at the first start."""

from __future__ import annotations

import logging

from pydantic import ValidationError

from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.control_plane.stored import SessionRecord, StoredTask

__all__ = ["ensure_indexed"]

log = logging.getLogger(__name__)


async def ensure_indexed(records: ControlPlaneRecords) -> int:
    """Index records written by a llamactl that did not index them (once; returns how many).

    A store written before the indexes existed lists nothing until this has run: it reads every
    task and session once, and notes that it did.
    """
    store = records.store
    meta = f"{records.deployment}/meta"
    if await store.get(meta, "indexed") is not None:
        return 0
    done = 0
    for ns, model in ((records.tasks_ns, StoredTask), (records.sessions_ns, SessionRecord)):
        after: str | None = None
        while page := await store.list(ns, after=after, limit=500):
            for key, found in page:
                try:
                    record = model.model_validate_json(found.value)
                except (ValidationError, ValueError):
                    records.unreadable += 1
                    continue
                await store.cas(ns, key, found.value, found.version, index=record.index())
                done += 1
            after = page[-1][0]
    await store.put(meta, "indexed", b"1")
    if done:
        log.info("%s: indexed %d record(s) written by an older llamactl", records.deployment, done)
    return done
