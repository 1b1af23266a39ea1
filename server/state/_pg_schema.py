"""The PostgreSQL state store's schema: tables, counters, the append function, and migrations.

Everything lives in one PostgreSQL schema (``?schema=`` of the URI, ``llamactl`` by default), so
several deployments, or test runs, can share a database without seeing each other. ``migrate``
creates or upgrades it under an advisory lock, so servers starting together do not race, and
refuses a schema written by a newer llamactl.

Text columns use the "C" collation: keys, sort strings and index values order by code point,
as in the embedded backends (UTF-8 byte order is code point order).
"""

from __future__ import annotations

import hashlib

import asyncpg

from llamactl.server.errors import StateStoreError

__all__ = ["SCHEMA_VERSION", "channel_name", "migrate"]

SCHEMA_VERSION = 3

_V1 = """
CREATE TABLE kv (
    ns      text   COLLATE "C" NOT NULL,
    key     text   COLLATE "C" NOT NULL,
    value   bytea  NOT NULL,
    version bigint NOT NULL,
    sort    text   COLLATE "C",
    i0      text   COLLATE "C",
    i1      text   COLLATE "C",
    i2      text   COLLATE "C",
    i3      text   COLLATE "C",
    PRIMARY KEY (ns, key)
);
CREATE INDEX kv_sorted ON kv (ns, sort) WHERE sort IS NOT NULL;
CREATE INDEX kv_i0 ON kv (ns, i0, sort) WHERE i0 IS NOT NULL;
CREATE INDEX kv_i1 ON kv (ns, i1, sort) WHERE i1 IS NOT NULL;
CREATE INDEX kv_i2 ON kv (ns, i2, sort) WHERE i2 IS NOT NULL;
CREATE INDEX kv_i3 ON kv (ns, i3, sort) WHERE i3 IS NOT NULL;

CREATE TABLE kv_fields (
    ns    text COLLATE "C" NOT NULL,
    field text COLLATE "C" NOT NULL,
    col   integer NOT NULL,
    PRIMARY KEY (ns, field),
    UNIQUE (ns, col)
);

CREATE TABLE kv_count (
    ns    text COLLATE "C" NOT NULL,
    col   integer NOT NULL,
    value text COLLATE "C" NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (ns, col, value)
);

CREATE FUNCTION llamactl_count(p_ns text, p_col integer, p_value text, p_delta integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_value IS NULL THEN
        RETURN;
    END IF;
    INSERT INTO kv_count AS c (ns, col, value, n) VALUES (p_ns, p_col, p_value, p_delta)
        ON CONFLICT (ns, col, value) DO UPDATE SET n = c.n + p_delta;
    IF p_delta < 0 THEN
        DELETE FROM kv_count WHERE ns = p_ns AND col = p_col AND value = p_value AND n <= 0;
    END IF;
END $$;

CREATE FUNCTION llamactl_kv_counts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM llamactl_count(NEW.ns, 0, NEW.i0, 1);
        PERFORM llamactl_count(NEW.ns, 1, NEW.i1, 1);
        PERFORM llamactl_count(NEW.ns, 2, NEW.i2, 1);
        PERFORM llamactl_count(NEW.ns, 3, NEW.i3, 1);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM llamactl_count(OLD.ns, 0, OLD.i0, -1);
        PERFORM llamactl_count(OLD.ns, 1, OLD.i1, -1);
        PERFORM llamactl_count(OLD.ns, 2, OLD.i2, -1);
        PERFORM llamactl_count(OLD.ns, 3, OLD.i3, -1);
    ELSE
        IF OLD.i0 IS DISTINCT FROM NEW.i0 THEN
            PERFORM llamactl_count(OLD.ns, 0, OLD.i0, -1);
            PERFORM llamactl_count(NEW.ns, 0, NEW.i0, 1);
        END IF;
        IF OLD.i1 IS DISTINCT FROM NEW.i1 THEN
            PERFORM llamactl_count(OLD.ns, 1, OLD.i1, -1);
            PERFORM llamactl_count(NEW.ns, 1, NEW.i1, 1);
        END IF;
        IF OLD.i2 IS DISTINCT FROM NEW.i2 THEN
            PERFORM llamactl_count(OLD.ns, 2, OLD.i2, -1);
            PERFORM llamactl_count(NEW.ns, 2, NEW.i2, 1);
        END IF;
        IF OLD.i3 IS DISTINCT FROM NEW.i3 THEN
            PERFORM llamactl_count(OLD.ns, 3, OLD.i3, -1);
            PERFORM llamactl_count(NEW.ns, 3, NEW.i3, 1);
        END IF;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER kv_counts AFTER INSERT OR UPDATE OF i0, i1, i2, i3 OR DELETE ON kv
    FOR EACH ROW EXECUTE FUNCTION llamactl_kv_counts();

CREATE TABLE log_head (
    stream text COLLATE "C" PRIMARY KEY,
    next   bigint NOT NULL
);

CREATE TABLE log (
    stream text COLLATE "C" NOT NULL,
    off    bigint NOT NULL,
    idem   text COLLATE "C",
    value  bytea NOT NULL,
    PRIMARY KEY (stream, off)
);
CREATE UNIQUE INDEX log_idem ON log (stream, idem) WHERE idem IS NOT NULL;

-- Append one entry: the stream's head row is locked first, so offsets are gap-free and an
-- idempotency key is checked against every append committed before, in any process.
CREATE FUNCTION llamactl_append(p_stream text, p_idem text, p_value bytea, p_channel text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    nxt   bigint;
    known bigint;
BEGIN
    INSERT INTO log_head AS h (stream, next) VALUES (p_stream, 0)
        ON CONFLICT (stream) DO UPDATE SET next = h.next
        RETURNING h.next INTO nxt;
    IF p_idem IS NOT NULL THEN
        SELECT off INTO known FROM log WHERE stream = p_stream AND idem = p_idem;
        IF known IS NOT NULL THEN
            RETURN known;
        END IF;
    END IF;
    UPDATE log_head SET next = nxt + 1 WHERE stream = p_stream;
    INSERT INTO log (stream, off, idem, value) VALUES (p_stream, nxt, p_idem, p_value);
    PERFORM pg_notify(p_channel, p_stream);
    RETURN nxt;
END $$;

-- Append several entries (no idempotency keys) after the stream's last one.
CREATE FUNCTION llamactl_append_many(p_stream text, p_values bytea[], p_channel text)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    first bigint;
    n     integer := coalesce(array_length(p_values, 1), 0);
BEGIN
    INSERT INTO log_head AS h (stream, next) VALUES (p_stream, n)
        ON CONFLICT (stream) DO UPDATE SET next = h.next + n
        RETURNING h.next - n INTO first;
    INSERT INTO log (stream, off, idem, value)
        SELECT p_stream, first + v.i - 1, NULL, v.value
        FROM unnest(p_values) WITH ORDINALITY AS v(value, i);
    PERFORM pg_notify(p_channel, p_stream);
    RETURN first;
END $$;
"""

_V2 = """
-- Append several entries to one stream in one call, each with its idempotency key (or NULL):
-- a known key (committed before, or earlier in the same call) gives its original offset and
-- appends nothing. One head-row lock, one notification, whatever the count (a run's events
-- stored together: one call instead of one per event).
CREATE FUNCTION llamactl_append_each(p_stream text, p_idems text[], p_values bytea[], p_channel text)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    nxt   bigint;
    known bigint;
    offs  bigint[] := '{}';
BEGIN
    INSERT INTO log_head AS h (stream, next) VALUES (p_stream, 0)
        ON CONFLICT (stream) DO UPDATE SET next = h.next
        RETURNING h.next INTO nxt;
    FOR i IN 1 .. coalesce(array_length(p_values, 1), 0) LOOP
        known := NULL;
        IF p_idems[i] IS NOT NULL THEN
            SELECT off INTO known FROM log WHERE stream = p_stream AND idem = p_idems[i];
        END IF;
        IF known IS NULL THEN
            INSERT INTO log (stream, off, idem, value) VALUES (p_stream, nxt, p_idems[i], p_values[i]);
            known := nxt;
            nxt := nxt + 1;
        END IF;
        offs := offs || known;
    END LOOP;
    UPDATE log_head SET next = nxt WHERE stream = p_stream;
    PERFORM pg_notify(p_channel, p_stream);
    RETURN offs;
END $$;
"""

_V3 = """
-- Counters without a hot row. Every task written or moved to another status changed the one
-- kv_count row of that status and held it to its commit, so commits of tasks of one status
-- queued behind each other. A write now adds a delta row, which nothing else waits for, and
-- llamactl_fold_counts() (each store runs it every second) moves committed deltas into kv_count.
-- Counting reads both.
CREATE TABLE kv_count_delta (
    ns    text COLLATE "C" NOT NULL,
    col   integer NOT NULL,
    value text COLLATE "C" NOT NULL,
    n     bigint NOT NULL
);
CREATE INDEX kv_count_delta_of ON kv_count_delta (ns, col);
CREATE INDEX kv_count_spent ON kv_count (ns) WHERE n <= 0;

CREATE OR REPLACE FUNCTION llamactl_count(p_ns text, p_col integer, p_value text, p_delta integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_value IS NOT NULL THEN
        INSERT INTO kv_count_delta (ns, col, value, n) VALUES (p_ns, p_col, p_value, p_delta);
    END IF;
END $$;

-- Fold the committed deltas into kv_count; returns how many counters changed. One fold at a time
-- per schema (another that finds one running returns 0 at once), so folds never wait for each
-- other; a delta of a transaction still open is not visible yet and waits for the next fold.
CREATE FUNCTION llamactl_fold_counts() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    folded bigint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('llamactl-fold:' || current_schema())) THEN
        RETURN 0;
    END IF;
    WITH moved AS (DELETE FROM kv_count_delta RETURNING ns, col, value, n),
         sums AS (SELECT ns, col, value, sum(n)::bigint AS n FROM moved GROUP BY ns, col, value)
    INSERT INTO kv_count AS c (ns, col, value, n) SELECT ns, col, value, n FROM sums
        ON CONFLICT (ns, col, value) DO UPDATE SET n = c.n + excluded.n;
    GET DIAGNOSTICS folded = ROW_COUNT;
    DELETE FROM kv_count WHERE n <= 0;
    RETURN folded;
END $$;

-- Entries numbered as their transaction commits (Append(..., at_commit=True)): an entry of a log
-- every commit shares (the change feed) waits for the log's head row only while its transaction
-- commits, not from its statement through every round trip the rest of the transaction makes.
-- A deferred trigger appends each pending row, in insertion order, at COMMIT.
CREATE TABLE log_pending (
    id      bigserial PRIMARY KEY,
    stream  text COLLATE "C" NOT NULL,
    value   bytea NOT NULL,
    channel text NOT NULL
);

CREATE FUNCTION llamactl_number_pending() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM log_pending WHERE id = NEW.id;
    PERFORM llamactl_append(NEW.stream, NULL, NEW.value, NEW.channel);
    RETURN NULL;
END $$;

CREATE CONSTRAINT TRIGGER log_pending_numbered AFTER INSERT ON log_pending
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION llamactl_number_pending();
"""

_MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3}
"""version -> the SQL that brings the schema from version - 1 to it."""


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel that wakes readers of this schema's logs (a valid identifier)."""
    return "llamactl_" + hashlib.sha1(schema.encode()).hexdigest()[:16]


async def migrate(conn: asyncpg.Connection, schema: str) -> None:
    """Create ``schema`` and its tables, or bring them up to :data:`SCHEMA_VERSION`.

    Runs in one transaction under an advisory lock on the schema's name: a server that starts
    while another migrates waits, then finds the work done.
    """
    quoted = '"' + schema.replace('"', '""') + '"'
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", "llamactl:" + schema)
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
        await conn.execute(f"SET LOCAL search_path TO {quoted}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS llamactl_meta (name text PRIMARY KEY, value text NOT NULL)"
        )
        found = await conn.fetchval("SELECT value FROM llamactl_meta WHERE name = 'schema_version'")
        version = int(found) if found is not None else 0
        if version > SCHEMA_VERSION:
            raise StateStoreError(
                f"PostgreSQL schema {schema!r} has state store schema version {version}, newer than this "
                f"llamactl understands ({SCHEMA_VERSION}): upgrade llamactl or use another schema (?schema=)"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            await conn.execute(_MIGRATIONS[step])
        if version != SCHEMA_VERSION:
            await conn.execute(
                "INSERT INTO llamactl_meta (name, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                str(SCHEMA_VERSION),
            )
