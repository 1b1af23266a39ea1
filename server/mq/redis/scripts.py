"""The Lua of the Redis backend's operations, one body each, and :class:`Scripts` to call them.

Each body runs after :data:`~.lua_lib.LIB` (as a function of one library, or a script of its
own: :mod:`.library`); ``ARGV[1..3]`` are the prefix, ``max_attempts`` and the retention (ms) of
a settled ``msg_id`` (see :mod:`.lua_lib`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from .library import Library
from .pipelining import ScriptPipeline

__all__ = ["KEEPALIVE", "PUBLISH", "Scripts"]

PUBLISH = r"""
local seq, dup = publish(ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
return {seq, dup}
"""

# ARGV: topic, client, count, lease_ms, outstanding, lease id base, heartbeat window ms.
# Returns {known, exclusive, deliveries, wait} (``known``: what ``alive`` said): a delivery is
# {seq, msg_id, key, headers, payload, attempt, lease_id}; ``wait`` (only when nothing was
# taken) is {"idle"} when this consumer must settle what it holds before it may take a suspect,
# else {group's last-read id, last id of the wake stream, ms to the next delayed message or -1}.
TAKE = r"""
local t, c = ARGV[4], ARGV[5]
local n, lease_ms, outstanding = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local base, window = ARGV[9], tonumber(ARGV[10])
-- A take that arrives after its client said goodbye must not register it again.
if redis.call('EXISTS', k_gone(c)) == 1 then return {0, 0, {}, {'idle'}} end
local known = alive(c, window)
local out = {}
local taken = 0

local function hand_out(seq, st, fields)
  taken = taken + 1
  local lease_id = base .. '.' .. taken
  lease(t, seq, st, c, lease_id, lease_ms)
  table.insert(out, {seq, st.i, st.k, field(fields, 'h'), field(fields, 'p'), st.a, lease_id})
end

local function redeliver(zkey, limit)
  for _, s in ipairs(redis.call('ZRANGE', zkey, 0, limit - 1)) do
    redis.call('ZREM', zkey, s)
    local seq = tonumber(s)
    local st = get_state(t, seq)
    local e = entry(t, seq)
    if st and e and st.l == '' then
      hand_out(seq, st, e)
    elseif st and not e then
      redis.call('HDEL', k_state(t), s)
    end
  end
end

local delayed = k_delayed(t)
for _, s in ipairs(redis.call('ZRANGEBYSCORE', delayed, '-inf', NOW, 'LIMIT', 0, 256)) do
  redis.call('ZREM', delayed, s)
  local st = get_state(t, tonumber(s))
  if st then
    if st.s == 1 then
      redis.call('ZADD', k_suspects(t), tonumber(s), s)
    else
      redis.call('ZADD', k_ready(t), tonumber(s), s)
    end
  end
end

if redis.call('ZCARD', k_suspects(t)) > 0 then
  if outstanding > 0 then return {known, 0, out, {'idle'}} end
  redeliver(k_suspects(t), 1)
  if taken > 0 then return {known, 1, out, {}} end
end

redeliver(k_ready(t), n)
local stream = k_stream(t)
local rounds = 0
while taken < n and rounds < 8 do
  rounds = rounds + 1
  local ok, r = pcall(redis.call, 'XREADGROUP', 'GROUP', GROUP, READER, 'COUNT', n - taken,
    'STREAMS', stream, '>')
  if not ok then
    redis.call('XGROUP', 'CREATE', stream, GROUP, '0', 'MKSTREAM')
    r = redis.call('XREADGROUP', 'GROUP', GROUP, READER, 'COUNT', n - taken, 'STREAMS', stream, '>')
  end
  if not r then break end
  local entries = r[1][2]
  if #entries == 0 then break end
  for _, e in ipairs(entries) do
    local seq = seq_of(e[1])
    local fields = e[2]
    local key = field(fields, 'k')
    local st = {a = 0, f = 0, s = 0, p = 0, l = '', o = '', u = 0, k = key, i = field(fields, 'i')}
    if key ~= '' and redis.call('LINDEX', k_keyq(t, key), 0) ~= string.format('%d', seq) then
      st.p = 1
      put_state(t, seq, st)
    else
      hand_out(seq, st, fields)
    end
  end
end
if taken > 0 then return {known, 0, out, {}} end

local last_read = '0-0'
for _, g in ipairs(redis.call('XINFO', 'GROUPS', stream)) do
  if field(g, 'name') == GROUP then last_read = field(g, 'last-delivered-id') end
end
local w = redis.call('XREVRANGE', k_wake(t), '+', '-', 'COUNT', 1)
local last_wake = '0-0'
if #w > 0 then last_wake = w[1][1] end
local due = -1
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if #first > 0 then due = math.max(0, tonumber(first[2]) - NOW) end
return {known, 0, out, {last_read, last_wake, due}}
"""

# ARGV: topic, seq, lease id. 1 if acked, 0 if the lease was not current.
ACK = r"""
local t, seq = ARGV[4], tonumber(ARGV[5])
local st = current(t, seq, ARGV[6])
if not st then return 0 end
settle(t, seq, st)
return 1
"""

# ARGV: topic, seq, lease id, then the publish: topic, msg_id, key, headers, payload, then the
# delivered message's msg_id. Returns {seq of the published message, 1 if this settled the
# delivered message else 0}.
ACK_AND_PUBLISH = r"""
local t, seq = ARGV[4], tonumber(ARGV[5])
local pseq = publish(ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11])
local st = get_state(t, seq)
-- Not the lease: a late result settles its message all the same. The msg_id: a Redis that lost
-- its data numbers a topic from 0 again, so the seq may name another message now.
if not st or st.i ~= ARGV[12] then return {pseq, 0} end
settle(t, seq, st)
return {pseq, 1}
"""

# ARGV: topic, seq, lease id, delay ms.
NACK = r"""
local t, seq = ARGV[4], tonumber(ARGV[5])
local st = current(t, seq, ARGV[6])
if not st then return 0 end
release(t, seq, st, 'nacked', true, false, tonumber(ARGV[7]))
return 1
"""

# ARGV: topic, seq, lease id, lease ms.
EXTEND = r"""
local t, seq = ARGV[4], tonumber(ARGV[5])
local st = current(t, seq, ARGV[6])
if not st then return 0 end
st.u = NOW + tonumber(ARGV[7])
put_state(t, seq, st)
redis.call('ZADD', K_LEASES, st.u, member(t, seq))
return 1
"""

# ARGV: topic, then (seq, lease id) pairs: deliveries taken but never handed out: not attempts.
GIVE_BACK = r"""
local t = ARGV[4]
for j = 5, #ARGV, 2 do
  local seq = tonumber(ARGV[j])
  local st = current(t, seq, ARGV[j + 1])
  if st then
    st.a = st.a - 1
    release(t, seq, st, 'returned', false, st.s == 1, 0)
  end
end
return 1
"""

# ARGV: topic, msg_id, 1 to remove a leased message too. 1 if removed.
DISCARD = r"""
local t, msg_id, leased = ARGV[4], ARGV[5], ARGV[6] == '1'
local known = redis.call('GET', k_id(t, msg_id))
if not known then return 0 end
local seq = tonumber(known)
local st = get_state(t, seq)
if st then
  if st.l ~= '' and not leased then return 0 end
  settle(t, seq, st)
  return 1
end
local e = entry(t, seq)
if not e then return 0 end
-- Not read by the group yet: deleting the entry is enough (XREADGROUP skips deleted entries).
redis.call('XDEL', k_stream(t), entry_id(seq))
redis.call('PEXPIRE', k_id(t, msg_id), RETENTION)
local key = field(e, 'k')
if key ~= '' then redis.call('LREM', k_keyq(t, key), 1, string.format('%d', seq)) end
return 1
"""

# ARGV: client, heartbeat window ms, heartbeat interval ms. Heartbeat, then janitor duty: release
# the leases of clients whose heartbeat deadline passed and the leases that ran out. When no
# heartbeat got through for two intervals, Redis was out of everyone's reach (or refused writes),
# and silence says nothing of anyone: every deadline first moves on by that gap. Returns what
# ``alive`` said, and the server's run id ('' where INFO is not allowed).
BEAT = r"""
local last = redis.call('GET', K_BEAT)
redis.call('SET', K_BEAT, NOW)
if last and NOW - tonumber(last) > 2 * tonumber(ARGV[6]) then pause_deadlines(NOW - tonumber(last)) end
local known = alive(ARGV[4], tonumber(ARGV[5]))
for _, c in ipairs(redis.call('ZRANGEBYSCORE', K_CLIENTS, '-inf', '(' .. NOW, 'LIMIT', 0, 16)) do
  drop_client(c, 'consumer lost', true)
end
for _, m in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', NOW, 'LIMIT', 0, 128)) do
  local t, seq = split_member(m)
  local st = get_state(t, seq)
  if st and st.l ~= '' and st.u <= NOW then
    release(t, seq, st, 'lease expired', true, false, 0)
  else
    redis.call('ZREM', K_LEASES, m)
  end
end
local info = redis.pcall('INFO', 'server')
local run_id = type(info) == 'string' and string.match(info, 'run_id:(%x+)') or ''
return {known, run_id}
"""

# ARGV: client, heartbeat window ms. Renew a live client's deadline for its blocked event loop.
KEEPALIVE = r"""
if redis.call('ZADD', K_CLIENTS, 'XX', 'CH', NOW + tonumber(ARGV[5]), ARGV[4]) == 1 then
  redis.call('SET', K_BEAT, NOW)  -- a heartbeat got through
end
return 1
"""

# ARGV: client. The client closes: its leases go back, not counted against their messages.
BYE = r"""
drop_client(ARGV[4], 'closed', false)
redis.call('SET', k_gone(ARGV[4]), '1', 'PX', 60000)
return 1
"""


class Scripts:
    """The backend's operations on one client; ``call`` runs one by name."""

    NAMES = (
        "publish",
        "take",
        "ack",
        "ack_and_publish",
        "nack",
        "extend",
        "give_back",
        "discard",
        "beat",
        "bye",
    )

    def __init__(self, redis: Redis, prefix: str, max_attempts: int, retention: float) -> None:
        self._common: list[Any] = [prefix, max_attempts, int(retention * 1000)]
        bodies = {
            "publish": PUBLISH,
            "take": TAKE,
            "ack": ACK,
            "ack_and_publish": ACK_AND_PUBLISH,
            "nack": NACK,
            "extend": EXTEND,
            "give_back": GIVE_BACK,
            "discard": DISCARD,
            "beat": BEAT,
            "bye": BYE,
        }
        self.library = Library(bodies)
        self._pipeline = ScriptPipeline(redis, self.library)

    @property
    def pipelines(self) -> int:
        """Pipelines of more than one call sent so far."""
        return self._pipeline.pipelines

    async def call(self, name: str, args: Sequence[Any]) -> Any:
        """Run operation ``name`` with ``args`` after the common arguments; return its reply.

        Calls made in the same turn of the event loop go to Redis in one pipeline."""
        return await self._pipeline.call(name, [*self._common, *args])

    async def aclose(self) -> None:
        """Wait for the calls under way to be answered (or to fail)."""
        await self._pipeline.aclose()
