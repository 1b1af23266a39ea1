"""Keeps a task's reports in the order its worker sent them, whatever order the queue hands them out.

A worker publishes a task's events in order, several on their way at once, numbered from 0
within the attempt, and its final report says how many went before it. The queue may still hand
them to the control plane out of order or at once (a broker without per-key order, several
control planes consuming one topic, a redelivery). So before event ``i`` of an attempt is stored,
event ``i - 1`` must be in the task's log; before the final report, its last event. A report
that comes early waits (its delivery's lease extended) until its predecessor has been stored, by
this control plane or another one sharing the store.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from llamactl.server.control_plane.records import ControlPlaneRecords
from llamactl.server.errors import LeaseLost, MessageQueueError
from llamactl.server.mq.base import Delivery
from llamactl.server.protocol import event_msg_id

__all__ = ["ReportOrder"]

log = logging.getLogger(__name__)

_REMEMBERED = 10_000
"""Tasks whose stored events are remembered here (a miss costs one read of the store)."""
_POLL_MAX = 0.2


class ReportOrder:
    """Waits, for each report, until the task's events before it are stored."""

    def __init__(self, records: ControlPlaneRecords, *, lease: float, give_up_after: float = 60.0) -> None:
        self._records = records
        self._lease = lease
        self._give_up_after = give_up_after
        self._through: collections.OrderedDict[str, dict[int, int]] = collections.OrderedDict()
        """task id -> attempt -> the highest event index known stored."""
        self.waited = 0
        """Reports that came before an earlier one of their task and waited for it."""
        self.gave_up = 0
        """Reports stored without their predecessor, which never came (see ``give_up_after``)."""

    def stored(self, task_id: str, attempt: int, index: int) -> None:
        """Event ``index`` of ``attempt`` is in the task's log."""
        attempts = self._through.get(task_id)
        if attempts is None:
            attempts = self._through[task_id] = {}
            if len(self._through) > _REMEMBERED:
                self._through.popitem(last=False)
        attempts[attempt] = max(attempts.get(attempt, -1), index)

    def forget(self, task_id: str) -> None:
        """The task has finished: nothing more to order."""
        self._through.pop(task_id, None)

    def in_order(self, task_id: str, attempt: int, index: int) -> bool:
        """True when events ``0 .. index - 1`` of ``attempt`` are known stored (nothing to wait for)."""
        return index <= 0 or self._through.get(task_id, {}).get(attempt, -1) >= index - 1

    async def wait_before(self, delivery: Delivery, task_id: str, attempt: int, index: int) -> None:
        """Return once events ``0 .. index - 1`` of ``attempt`` are stored (at once for ``index``
        0). Each was stored only after the one before it, so the last one is enough to look for.
        A predecessor that does not come within ``give_up_after`` seconds is given up on (its
        worker published it before this one, so it exists: only a queue that lost it would); so
        is one of a task that has finished meanwhile (a late report: the caller drops it)."""
        if self.in_order(task_id, attempt, index):
            return
        stream = self._records.events_stream(task_id)
        wanted = event_msg_id(task_id, attempt, index - 1)
        loop = asyncio.get_running_loop()
        started = extended = loop.time()
        delay = 0.005
        first = True
        while await self._records.store.find_idem(stream, wanted) is None:
            if (await self._records.get_task(task_id)).status.is_final:
                return  # its result is in: what is missing never will be, and this one is late
            now = loop.time()
            if first:
                first = False
                self.waited += 1
            if now - started > self._give_up_after:
                self.gave_up += 1
                log.warning(
                    "task %s: event %d of attempt %d never came; storing what followed it without it",
                    task_id,
                    index - 1,
                    attempt,
                )
                return
            if now - extended > self._lease / 3:
                extended = now
                with contextlib.suppress(LeaseLost, MessageQueueError):
                    await delivery.extend()  # lost: a copy goes out again and is applied once
            await asyncio.sleep(delay)
            delay = min(_POLL_MAX, delay * 2)
        self.stored(task_id, attempt, index - 1)
