"""The Lua shared by every operation of the Redis backend: key names, publish, lease, release,
settle.

Each operation's body (see :mod:`.scripts`) runs after this library, as a function of one
library (:func:`function_library`) or a script of its own (:func:`script`), and starts with
``begin(ARGV)``; so everything a call changes happens in one atomic step on the server.
Conventions:

* ``ARGV[1]`` is the key prefix, ``ARGV[2]`` ``max_attempts``, ``ARGV[3]`` the retention of a
  settled message's ``msg_id`` (ms); a script's own arguments start at ``ARGV[4]``.
* ``NOW`` is the server's clock (``TIME``, ms): every deadline (lease, heartbeat, delay) is on the
  server's clock, so clients on hosts with skewed clocks agree.
* A message's stream entry id is ``0-<seq + 1>`` (``XADD key 0-*``): the topic's seq is the id's
  sequence part, kept by the stream itself (also across ``XDEL``), so seqs are gap-free and a seq
  maps to its entry without a lookup.
* The delivery state of a work message that was read from the stream (its consumer group) is a
  JSON object in the hash ``st:<topic>``, field ``<seq>``::

      a  attempts (deliveries so far)     f  failures (lease ends that count against it)
      s  1 if a suspect (see release)      p  1 if parked: read, but an earlier message of its
      l  lease id ("" if not leased)          key is not settled yet
      o  client holding the lease          u  lease deadline (ms, server clock)
      k  ordering key                       i  msg_id
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

__all__ = ["LIB", "function_library", "script"]

LIB = r"""
local STREAM_KEEP = 7 * 24 * 3600 * 1000
local DEAD_KEEP = 24 * 3600 * 1000
local GROUP = 'g'
local READER = 'c'

-- What one call sees: set by begin() before its body runs (a script runs alone on Redis).
local P, MAX_ATTEMPTS, RETENTION, NOW, K_CLIENTS, K_LEASES, K_BEAT, woken

local function begin(argv)
  P = argv[1]
  MAX_ATTEMPTS = tonumber(argv[2])
  RETENTION = tonumber(argv[3])
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  K_CLIENTS = P .. 'clients'
  K_LEASES = P .. 'leases'
  K_BEAT = P .. 'beat'
  woken = {}
end

local function k_stream(t) return P .. 't:' .. t end
local function k_state(t) return P .. 'st:' .. t end
local function k_ready(t) return P .. 'r:' .. t end
local function k_delayed(t) return P .. 'd:' .. t end
local function k_suspects(t) return P .. 's:' .. t end
local function k_wake(t) return P .. 'n:' .. t end
local function k_keyq(t, key) return P .. 'q:' .. t .. ' ' .. key end
local function k_id(t, msg_id) return P .. 'i:' .. t .. ' ' .. msg_id end
local function k_held(c) return P .. 'h:' .. c end
local function k_gone(c) return P .. 'x:' .. c end
local function k_dead(c) return P .. 'z:' .. c end

local function is_work(t) return string.sub(t, 1, 5) == 'work.' end
local function is_dead_topic(t) return is_work(t) and string.sub(t, -5) == '.dead' end
local function entry_id(seq) return '0-' .. string.format('%d', seq + 1) end
local function seq_of(id) return tonumber(string.sub(id, 3)) - 1 end
local function member(t, seq) return string.format('%d', seq) .. ' ' .. t end
local function split_member(m)
  local sp = string.find(m, ' ', 1, true)
  return string.sub(m, sp + 1), tonumber(string.sub(m, 1, sp - 1))
end

local function field(flat, name)
  for j = 1, #flat, 2 do
    if flat[j] == name then return flat[j + 1] end
  end
  return nil
end

local function wake(t)
  if not woken[t] then
    woken[t] = true
    redis.call('XADD', k_wake(t), 'MAXLEN', 8, '*', 'w', '1')
  end
end

local function get_state(t, seq)
  local raw = redis.call('HGET', k_state(t), string.format('%d', seq))
  if not raw then return nil end
  return cjson.decode(raw)
end
local function put_state(t, seq, st)
  redis.call('HSET', k_state(t), string.format('%d', seq), cjson.encode(st))
end

-- Add ``gap`` ms to every client's heartbeat deadline and every lease's: time in which no client
-- could reach Redis (or write to it) does not count against any of them.
local function pause_deadlines(gap)
  local clients = redis.call('ZRANGE', K_CLIENTS, 0, -1, 'WITHSCORES')
  for j = 1, #clients, 2 do
    redis.call('ZADD', K_CLIENTS, tonumber(clients[j + 1]) + gap, clients[j])
  end
  for _, m in ipairs(redis.call('ZRANGE', K_LEASES, 0, -1)) do
    local t, seq = split_member(m)
    local st = get_state(t, seq)
    if st and st.l ~= '' then
      st.u = st.u + gap
      put_state(t, seq, st)
      redis.call('ZADD', K_LEASES, st.u, m)
    end
  end
end

local function entry(t, seq)
  local id = entry_id(seq)
  local r = redis.call('XRANGE', k_stream(t), id, id)
  if #r == 0 then return nil end
  return r[1][2]
end

-- Stream topics keep 7 days: every 64th publish drops what is older from the head.
local function trim_old(s, seq)
  if seq % 64 ~= 0 then return end
  local old = {}
  for _, e in ipairs(redis.call('XRANGE', s, '-', '+', 'COUNT', 64)) do
    local at = field(e[2], 'a')
    if at and tonumber(at) < NOW - STREAM_KEEP then table.insert(old, e[1]) else break end
  end
  if #old > 0 then redis.call('XDEL', s, unpack(old)) end
end

-- Returns seq, 1 if msg_id was known (nothing stored) else 0.
local function publish(t, msg_id, key, headers, payload)
  local idk = k_id(t, msg_id)
  local known = redis.call('GET', idk)
  if known then return tonumber(known), 1 end
  local s = k_stream(t)
  local id, seq
  if is_work(t) then
    id = redis.call('XADD', s, '0-*', 'i', msg_id, 'k', key, 'h', headers, 'p', payload)
    seq = seq_of(id)
    redis.call('SET', idk, seq)
    if key ~= '' then redis.call('RPUSH', k_keyq(t, key), seq) end
  else
    id = redis.call('XADD', s, '0-*', 'i', msg_id, 'k', key, 'h', headers, 'p', payload, 'a', NOW)
    seq = seq_of(id)
    redis.call('SET', idk, seq, 'PX', STREAM_KEEP)
    redis.call('PEXPIRE', s, STREAM_KEEP)
    trim_old(s, seq)
  end
  return seq, 0
end

-- Refresh a client's heartbeat deadline: 0 if it was registered, 1 if it had been declared dead,
-- 2 if Redis did not know it (a new client; for one that was registered, Redis lost its data).
local function alive(c, window)
  local was = redis.call('ZSCORE', K_CLIENTS, c)
  redis.call('ZADD', K_CLIENTS, NOW + window, c)
  if was then return 0 end
  if redis.call('DEL', k_dead(c)) == 1 then return 1 end
  return 2
end

local function lease(t, seq, st, c, lease_id, lease_ms)
  st.a = st.a + 1
  st.l = lease_id
  st.o = c
  st.u = NOW + lease_ms
  st.p = 0
  put_state(t, seq, st)
  local m = member(t, seq)
  redis.call('ZADD', K_LEASES, st.u, m)
  redis.call('SADD', k_held(c), m)
end

local function end_lease(t, seq, st)
  if st.l ~= '' then
    local m = member(t, seq)
    redis.call('ZREM', K_LEASES, m)
    redis.call('SREM', k_held(st.o), m)
    st.l = ''
    st.o = ''
  end
end

-- The next message of a key may go once the one before it is settled.
local function advance_key(t, seq, key)
  local q = k_keyq(t, key)
  local s = string.format('%d', seq)
  if redis.call('LINDEX', q, 0) ~= s then
    redis.call('LREM', q, 1, s)
    return
  end
  redis.call('LPOP', q)
  local head = redis.call('LINDEX', q, 0)
  if not head then return end
  local hs = get_state(t, tonumber(head))
  if hs and hs.p == 1 then
    hs.p = 0
    put_state(t, tonumber(head), hs)
    redis.call('ZADD', k_ready(t), tonumber(head), head)
    wake(t)
  end
end

-- The message is done (acked, has its result, discarded or dead-lettered): forget it, keep its
-- msg_id for RETENTION ms so that a resent publish is still absorbed.
local function settle(t, seq, st)
  end_lease(t, seq, st)
  local s = string.format('%d', seq)
  redis.call('ZREM', k_ready(t), s)
  redis.call('ZREM', k_delayed(t), s)
  redis.call('ZREM', k_suspects(t), s)
  redis.call('HDEL', k_state(t), s)
  local id = entry_id(seq)
  redis.call('XACK', k_stream(t), GROUP, id)
  redis.call('XDEL', k_stream(t), id)
  redis.call('PEXPIRE', k_id(t, st.i), RETENTION)
  if st.k ~= '' then advance_key(t, seq, st.k) end
end

local function dead_letter(t, seq, st, reason)
  local e = entry(t, seq)
  if e then
    -- Appended to the headers' JSON, not decoded and encoded again: cjson refuses some JSON that
    -- Python writes (a lone surrogate's escape), and an error here would leave the lease half
    -- ended. A name given twice reads as its last value, so these override earlier ones.
    local body = string.match(field(e, 'h'), '^(.-)%s*}%s*$') or '{'
    local added = string.format('"x-dead-reason":%s,"x-attempts":"%d","x-failures":"%d"}',
      cjson.encode(reason), st.a, st.f)
    local h
    if string.match(body, '^%s*{%s*$') then h = '{' .. added else h = body .. ',' .. added end
    publish(t .. '.dead', field(e, 'i'), field(e, 'k'), h, field(e, 'p'))
  end
  settle(t, seq, st)
end

-- A lease ends without the message being done. ``charge``: it counts against the message (to the
-- dead-letter topic after MAX_ATTEMPTS). ``suspect``: its consumer died holding several, so
-- it runs again alone (a poison message then fails alone).
local function release(t, seq, st, reason, charge, suspect, delay_ms)
  end_lease(t, seq, st)
  if suspect then st.s = 1 else st.s = 0 end
  if charge then
    st.f = st.f + 1
    if st.f >= MAX_ATTEMPTS and not is_dead_topic(t) then
      dead_letter(t, seq, st, reason)
      return
    end
  end
  put_state(t, seq, st)
  local s = string.format('%d', seq)
  if delay_ms > 0 then
    redis.call('ZADD', k_delayed(t), NOW + delay_ms, s)
  elseif st.s == 1 then
    redis.call('ZADD', k_suspects(t), seq, s)
  else
    redis.call('ZADD', k_ready(t), seq, s)
  end
  wake(t)
end

-- The leases of a client that is gone: held alone, the message is charged; held with others,
-- none is, and each becomes a suspect.
local function drop_client(c, reason, crashed)
  local held = {}
  for _, m in ipairs(redis.call('SMEMBERS', k_held(c))) do
    local t, seq = split_member(m)
    local st = get_state(t, seq)
    if st and st.l ~= '' and st.o == c then table.insert(held, {t, seq, st}) end
  end
  for _, h in ipairs(held) do
    local alone = #held == 1
    release(h[1], h[2], h[3], reason, crashed and alone, crashed and not alone, 0)
  end
  redis.call('DEL', k_held(c))
  redis.call('ZREM', K_CLIENTS, c)
  -- What tells a client declared dead from one that Redis forgot (see alive).
  if crashed then redis.call('SET', k_dead(c), '1', 'PX', DEAD_KEEP) end
end

-- Only one place checks a fencing token: the state names the lease, or the caller lost it.
local function current(t, seq, lease_id)
  local st = get_state(t, seq)
  if st and st.l == lease_id then return st end
  return nil
end
"""


def script(body: str) -> str:
    """One operation as a script of its own (``EVAL``/``EVALSHA``): the library, then the body."""
    return f"{LIB}begin(ARGV)\n{body}"


def function_library(bodies: Mapping[str, str]) -> tuple[str, dict[str, str]]:
    """The operations as one Redis 7 function library (``FUNCTION LOAD``): its code and the name
    of each operation's function (for ``FCALL``).

    Its top level (the helpers) runs once, when Redis loads it, rather than at each call as a
    script's does. The library is named by a hash of its code, so versions of llamactl that share
    one Redis each load their own and never replace another's."""
    digest = hashlib.sha1(LIB.encode())
    for name, body in bodies.items():
        digest.update(f"\0{name}\0{body}".encode())
    library = f"llamactl_{digest.hexdigest()[:16]}"
    names = {name: f"{library}_{name}" for name in bodies}
    functions = "".join(
        f"redis.register_function('{names[name]}', function(keys, ARGV)\nbegin(ARGV)\n{body}\nend)\n"
        for name, body in bodies.items()
    )
    return f"#!lua name={library}\n{LIB}{functions}", names
