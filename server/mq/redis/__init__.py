"""The Redis backend of the message queue: Redis Streams, one consumer group per work topic, and
Lua scripts for everything a consumer group cannot say.

Config (``message-queue`` of a deployment, or :func:`~llamactl.server.mq.factory.connect_queue`)::

    {"type": "redis", "url": "redis://127.0.0.1:6379/0", "prefix": "llamactl:",
     "heartbeat_interval": 1.0, "liveness": 3, "max_attempts": 5, "publish_timeout": 10.0,
     "retention": 60.0}

``url`` may be replaced by Llama Deploy's ``host``/``port``/``db``/``username``/``password``/``ssl``.
Needs Redis >= 7.0 (``XADD key 0-*``), standalone or a primary with replicas; not Redis Cluster
(scripts touch keys of several topics). Every client of one ``prefix`` must use the same
``max_attempts``: whichever client's script ends a lease applies it.

Keys (``P`` is the prefix, ``T`` a topic; topics never hold spaces)::

    P t:T            the topic's stream. Entry id 0-<seq+1>, fields i (msg_id), k (key),
                     h (headers, JSON), p (payload), a (publish time, stream topics)
    P i:T <msg_id>   the msg_id's seq: absorbs a duplicate publish. Work topics: kept while the
                     message is pending, then ``retention`` seconds; stream topics: 7 days
    P st:T           hash seq -> delivery state (JSON: attempts, failures, lease, owner, deadline,
                     key, suspect, parked) of each work message read and not settled
    P r:T, P s:T     sorted sets (score seq) of messages ready again: redeliveries and next-of-key,
                     and suspects (see below)
    P d:T            sorted set of nacked messages by due time (server clock, ms)
    P q:T <key>      list of the pending seqs of one key, oldest first (per-key order)
    P n:T            wake stream (8 entries at most): XADDed when a message becomes ready again
    P clients        sorted set: client id -> heartbeat deadline
    P beat           when a heartbeat last got through (server clock, ms)
    P h:<client>     set of the "<seq> <topic>" a client holds;  P leases: zset of lease deadlines
    P x:<client>     a client that closed (60 s): a take still on its way must not revive it
    P z:<client>     a client declared dead (a day, or until it is back): what tells it from a
                     client that Redis forgot (its data was lost: a FLUSHALL, an empty restart)

How the contract maps:

* ``publish``: one script checks ``i:``, ``XADD t:T 0-* ...`` and stores the seq. The seq *is* the
  entry id's sequence part, kept by the stream itself (also across ``XDEL``), so seqs are gap-free
  per topic without a counter, and a stream subscriber's position is an entry id.
* ``consume``: the ``take`` script gives at most the iterator's free credit (``prefetch`` minus what
  it holds): first messages ready again (``r:``, oldest first), then new ones by ``XREADGROUP ... >``
  (one reader name for all clients: the group is the shared cursor and its PEL the set of read,
  unsettled messages; who holds what is in ``st:`` and ``h:``, so no consumer entries pile up in the
  group). Each delivery is a lease with a fresh id (the fencing token) and a deadline in ``leases``.
  A consumer with nothing to take blocks on ``XREAD`` of ``t:T`` (after the group's last read id)
  and ``n:T`` (after its last id), both given by the take, so nothing in between is missed; a nacked
  message's due time bounds the wait.
* Why not the consumer group's own leases (``XCLAIM``/``XAUTOCLAIM`` on idle time)? The contract
  has a lease per ``consume`` call, ``extend(seconds)``, ``nack(delay)``, fencing tokens, per-key
  one-at-a-time and poison isolation, and the PEL has one idle clock per entry and no place for
  any of them. So the group hands out new messages and counts what is unsettled (``XINFO GROUPS``
  shows lag and pending to an operator), and the rest lives beside it, changed by the same scripts.
* ``ack`` = ``XACK`` + ``XDEL`` + forget the state; ``nack(delay)``: into ``d:`` (then ``r:``);
  ``extend`` moves the deadline; ``ack_and_publish`` is one script (publish with idempotency, then
  settle), and settles the message even if its lease ended meanwhile (the late result wins, the
  current holder's ack raises LeaseLost).
* Liveness: each client renews its deadline in ``clients`` every ``heartbeat_interval`` (deadline =
  server time + interval x ``liveness``), and the same script does janitor duty for everyone:
  clients past their deadline lose their leases (a SIGKILLed consumer is noticed within about
  ``liveness + 1`` intervals), leases past their deadline end. Every client does it, so there is no
  janitor process to run or to lose, and scripts are atomic, so two janitors cannot collide.
  When no heartbeat got through for two intervals (``beat``: Redis was out of everyone's reach, or
  refused writes), the first one after moves every client's and lease's deadline on by that gap,
  so the first client back does not take the others for dead nor end the leases of running tasks.
  A client that held one delivery when it died has that message charged; one that held several
  charges none: each becomes a *suspect* and runs alone, on a consumer holding nothing else, which
  takes nothing more until it settles it (so a poison message fails alone). After
  ``max_attempts`` charges a message moves to ``<topic>.dead`` with ``x-dead-reason``,
  ``x-attempts`` and ``x-failures`` headers. A client whose event loop was blocked past its window
  hands out none of what it had buffered (others may run it); ``sidecar()`` keeps a worker alive
  while user code blocks its loop.
* Per-key order (``key=``, which the workers rely on for a task's reports on the control topic):
  ``q:T <key>`` lists the key's pending messages; only the head may be leased. A message read
  while it is not the head is *parked* (state only); settling the head moves the next one to ``r:``.
* ``subscribe(topic, from_seq)``: ``XREAD`` after id ``0-<from_seq>``, batch after batch, blocking
  at the end: no gaps, no duplicates, whatever the reader's pace or a reconnect.
* ``discard``: settles a read message, or ``XDEL``s one not read yet (the group skips it); the
  msg_id stays known for the retention, so a resent publish is still absorbed.

Retention: nothing grows with the number of messages sent. A settled work message leaves no
entry, state or PEL entry, only its ``i:`` key for ``retention`` seconds. Stream topics keep 7
days: every key of one expires 7 days after its last publish, and a live one drops entries older
than that from its head as it goes.

What differs from the embedded ZeroMQ broker (properties of this backend, not gaps in the tests):

* Durability is Redis's: a publish is confirmed once Redis has it in memory; whether it survives a
  Redis crash depends on its persistence (``appendonly yes`` with ``appendfsync everysec`` loses at
  most about a second). The contract tests stop "the broker" by cutting every connection to the
  shared Redis and refusing new ones (a TCP proxy), which is what clients see of a Redis restart;
  they do not restart Redis itself.
* A call that times out may have happened: a publish sent again is absorbed by its ``msg_id``, an
  ack sent again after the first one took effect raises LeaseLost, and a take whose answer was
  lost leaves its leases to run out (at-least-once allows all three).
* Transport security is Redis's (``rediss://``, ACL users and passwords), not CURVE keys.
"""

from __future__ import annotations

from .client import RedisQueue
from .config import RedisQueueConfig

__all__ = ["RedisQueue", "RedisQueueConfig"]
