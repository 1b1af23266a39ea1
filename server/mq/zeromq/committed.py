"""What the broker does with what its journal committed (or could not): confirm publishes,
settle the deliveries that results settle, hand committed work to the dispatcher and stream
messages to their readers, and take journal-free results over (:mod:`.direct`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from llamactl.server.mq.topics import is_work_topic

from . import wire
from .confirms import Publish, SettlingPublish
from .direct import DirectResults
from .dispatch import Dispatcher
from .entries import Entry
from .streams import Streams

__all__ = ["Committed"]


class Committed:
    """Applies a batch of the journal's results (``pub``, ``pass``, ``read``, ``fail``)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        streams: Streams,
        direct: DirectResults,
        send: Callable[[bytes, list[bytes]], bool],
    ) -> None:
        self._dispatcher = dispatcher
        self._streams = streams
        self._direct = direct
        self._send = send
        self.late_results = 0
        """Journaled results for a message that another result had settled already (dropped)."""

    def apply(self, results: list[tuple[Any, ...]]) -> None:
        """Apply ``results`` in order, then let the streams and the dispatcher send what they can."""
        dispatcher, streams = self._dispatcher, self._streams
        for res in results:
            kind = res[0]
            if kind == "pub":
                _, token, topic, seq, dup, msg_id, key, headers, payload = res
                if isinstance(token, SettlingPublish):
                    settled = dispatcher.settle(token.lease, token.topic, token.seq)
                    if settled is None:
                        self.late_results += 1
                    # STALE: the delivered message had been settled before (its result is in).
                    reply = (
                        [wire.PUBACK, token.req, wire.u64(seq)]
                        if settled is not None
                        else [wire.STALE, token.req]
                    )
                    self._send(token.ident, reply)
                elif isinstance(token, Publish):
                    self._send(token.ident, [wire.PUBACK, token.req, wire.u64(seq)])
                if dup:
                    continue
                if is_work_topic(topic):
                    dispatcher.add(Entry(topic, seq, msg_id, key, headers, payload))
                else:
                    streams.committed(topic, (seq, msg_id, key, headers, payload))
            elif kind == "pass":
                self._direct.hand_over(res)
            elif kind == "read":
                streams.on_read(res[1], res[3])
            elif kind == "fail":
                token = res[1]
                if isinstance(token, Publish | SettlingPublish):
                    self._send(token.ident, [wire.PUBNACK, token.req, str(res[2]).encode()])
                elif isinstance(token, tuple):
                    streams.on_read_failed(token)
        streams.flush()
        dispatcher.flush()
