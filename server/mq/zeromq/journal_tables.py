"""The broker journal's tables and the statements of each op (see :mod:`.journal` for the ops).

Tables::

    msg  (topic, seq, msg_id, key, headers, payload,   every accepted publish; PK (topic, seq),
          at)                                          UNIQUE (topic, msg_id) absorbs duplicates;
                                                       ``at``: when it was published (wall clock)
    work (topic, seq, attempts, failures, suspect,     one row per work message not yet acked or
          lease_id, owner, lease_until, not_before)    dead-lettered; leased iff lease_id is set

The journal is the single sequencer: a publish takes ``seq = max + 1`` of its topic inside the
transaction, so seqs are gap-free; the next seq of recently used topics is remembered instead of
looked up, and forgotten after a rollback or a prune.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from pathlib import Path
from typing import Any, NamedTuple

__all__ = ["JournalTables", "Op", "PendingRow", "Result", "connect"]

Op = tuple[Any, ...]
Result = tuple[Any, ...]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS msg (
    topic TEXT NOT NULL, seq INTEGER NOT NULL, msg_id TEXT NOT NULL, key TEXT NOT NULL,
    headers BLOB NOT NULL, payload BLOB NOT NULL, at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, seq)) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS msg_by_id ON msg (topic, msg_id);
CREATE TABLE IF NOT EXISTS work (
    topic TEXT NOT NULL, seq INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0, suspect INTEGER NOT NULL DEFAULT 0,
    lease_id TEXT, owner BLOB, lease_until REAL, not_before REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, seq)) WITHOUT ROWID;
"""
# Columns added after the first release; journals made before get them on open.
_ADDED_COLUMNS = {
    "msg": {"at": "REAL NOT NULL DEFAULT 0"},
    "work": {"failures": "INTEGER NOT NULL DEFAULT 0", "suspect": "INTEGER NOT NULL DEFAULT 0"},
}


class PendingRow(NamedTuple):
    """A work message not settled yet, as the journal holds it."""

    topic: str
    seq: int
    msg_id: str
    key: str
    headers: bytes
    payload: bytes
    attempts: int
    failures: int
    suspect: bool
    lease_id: str | None
    owner: bytes | None
    lease_until: float | None
    not_before: float


_SEQ_CACHE = 4096
"""Topics whose next seq is remembered; others are looked up (one index probe)."""


def connect(path: Path | None) -> sqlite3.Connection:
    """Open the journal at ``path`` (None: in memory) in WAL mode, with its tables."""
    target = ":memory:" if path is None else str(path)
    db = sqlite3.connect(target, isolation_level=None, check_same_thread=True)
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # takes effect on a new file only
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(_SCHEMA)
    for table, columns in _ADDED_COLUMNS.items():
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        for name, definition in columns.items():
            if name not in have:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {definition}")
    db.execute("CREATE INDEX IF NOT EXISTS msg_by_at ON msg (at)")
    return db


class JournalTables:
    """The statements of each op on one connection, inside the transaction its caller opened."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._next_seq: OrderedDict[str, int] = OrderedDict()

    def pending(self) -> list[PendingRow]:
        """The work messages not settled yet, by topic and seq."""
        rows = self._db.execute(
            "SELECT w.topic, w.seq, m.msg_id, m.key, m.headers, m.payload, w.attempts, w.failures,"
            " w.suspect, w.lease_id, w.owner, w.lease_until, w.not_before"
            " FROM work w JOIN msg m USING (topic, seq) ORDER BY w.topic, w.seq"
        ).fetchall()
        return [
            PendingRow(t, s, i, k, h, p, a, f, bool(sus), lid, o, lu, nb)
            for t, s, i, k, h, p, a, f, sus, lid, o, lu, nb in rows
        ]

    def forget_seqs(self) -> None:
        """Look every topic's next seq up again (after a rollback, or rows deleted)."""
        self._next_seq.clear()

    def apply(self, op: Op, now: float) -> Result | None:
        """Run ``op`` (published at wall time ``now``); its result, if it has one."""
        db = self._db
        kind = op[0]
        if kind == "pub":
            _, token, topic, msg_id, key, headers, payload, is_work = op
            seq = self._next_seq.pop(topic, None)
            if seq is None:
                row = db.execute("SELECT MAX(seq) FROM msg WHERE topic = ?", (topic,)).fetchone()
                seq = 0 if row[0] is None else int(row[0]) + 1
            cur = db.execute(
                "INSERT OR IGNORE INTO msg (topic, seq, msg_id, key, headers, payload, at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (topic, seq, msg_id, key, headers, payload, now),
            )
            if cur.rowcount == 0:
                self._remember_seq(topic, seq)
                old = db.execute(
                    "SELECT seq FROM msg WHERE topic = ? AND msg_id = ?", (topic, msg_id)
                ).fetchone()
                return ("pub", token, topic, int(old[0]), True, msg_id, key, headers, payload)
            self._remember_seq(topic, seq + 1)
            if is_work:
                db.execute("INSERT INTO work (topic, seq) VALUES (?, ?)", (topic, seq))
            return ("pub", token, topic, seq, False, msg_id, key, headers, payload)
        if kind == "lease":
            _, topic, seq, attempts, lease_id, owner, until = op
            db.execute(
                "UPDATE work SET attempts = ?, lease_id = ?, owner = ?, lease_until = ?"
                " WHERE topic = ? AND seq = ?",
                (attempts, lease_id, owner, until, topic, seq),
            )
        elif kind == "ready":
            _, topic, seq, attempts, failures, suspect, not_before = op
            db.execute(
                "UPDATE work SET attempts = ?, failures = ?, suspect = ?, lease_id = NULL, owner = NULL,"
                " lease_until = NULL, not_before = ? WHERE topic = ? AND seq = ?",
                (attempts, failures, suspect, not_before, topic, seq),
            )
        elif kind in ("done", "settled"):
            db.execute("DELETE FROM work WHERE topic = ? AND seq = ?", (op[1], op[2]))
            # A settled message is never read again: keep only its id (duplicates are still
            # absorbed), so the file stops growing with every payload ever sent.
            db.execute(
                "UPDATE msg SET headers = x'', payload = x'' WHERE topic = ? AND seq = ?", (op[1], op[2])
            )
        elif kind == "read":
            _, token, topic, from_seq, limit = op
            rows = db.execute(
                "SELECT seq, msg_id, key, headers, payload FROM msg WHERE topic = ? AND seq >= ?"
                " ORDER BY seq LIMIT ?",
                (topic, from_seq, limit),
            ).fetchall()
            return ("read", token, topic, rows)
        elif kind == "sync":
            return ("sync", op[1])
        elif kind == "pass":
            return op
        return None

    def _remember_seq(self, topic: str, seq: int) -> None:
        self._next_seq[topic] = seq
        if len(self._next_seq) > _SEQ_CACHE:
            self._next_seq.popitem(last=False)

    def prune(self, settled_before: float, streams_before: float, limit: int) -> int:
        """Delete up to ``limit`` settled work messages published before ``settled_before`` (but
        the last of each topic) and stream messages published before ``streams_before`` (wall
        times); how many, the larger."""
        db = self._db
        # The last message of a work topic stays (its payload is gone already): the next seq is
        # MAX + 1, and a seq handed out again would let a slow worker's late result, which names
        # its message by seq, settle a newer message. One row per work topic, not per message.
        settled = db.execute(
            "DELETE FROM msg WHERE (topic, seq) IN (SELECT topic, seq FROM msg m WHERE at < ? "
            "AND topic >= 'work.' AND topic < 'work/' "
            "AND NOT EXISTS (SELECT 1 FROM work w WHERE w.topic = m.topic AND w.seq = m.seq) "
            "AND seq < (SELECT MAX(seq) FROM msg l WHERE l.topic = m.topic) LIMIT ?)",
            (settled_before, limit),
        ).rowcount
        streams = db.execute(
            "DELETE FROM msg WHERE (topic, seq) IN (SELECT topic, seq FROM msg WHERE at < ? "
            "AND topic >= 'stream.' AND topic < 'stream/' LIMIT ?)",
            (streams_before, limit),
        ).rowcount
        db.execute("PRAGMA incremental_vacuum(256)")
        self._next_seq.clear()  # a topic whose messages are all gone starts again from MAX(seq)
        return max(int(settled), int(streams))
