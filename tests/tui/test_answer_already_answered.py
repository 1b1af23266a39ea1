"""An answer typed into the ``a`` dialog is not sent when, meanwhile, the question was answered
elsewhere (another dashboard, ``llamactl tasks send-event``): a second HumanResponseEvent would reach
the workflow as the answer to a question it has not asked."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
from textual.message import Message
from textual.notifications import Notify

from llamactl.client import AsyncClient
from llamactl.tui.app import DashboardApp
from llamactl.tui.dialogs.prompt import AnswerDialog
from llamactl.tui.feed import Feed
from tests.tui import fake_api
from tests.tui.conftest import until, workers_done
from tests.tui.fake_api import EVENTS, NOW, WAITING


def _frame(event: dict[str, object]) -> bytes:
    return f"id: {event['seq']}\nevent: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


class _Questions(httpx.AsyncByteStream):
    """The waiting task's question; its answer from elsewhere once ``answered`` is set."""

    def __init__(self, answered: asyncio.Event) -> None:
        self._answered = answered

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n" + b"".join(_frame(e) for e in EVENTS[WAITING])
        await self._answered.wait()
        yield _frame(
            {
                "value": {"response": "yes"},
                "type": "HumanResponseEvent",
                "qualified_name": "workflows.events.HumanResponseEvent",
                "seq": 1,
                "attempt": 1,
            }
        )
        await asyncio.Event().wait()


async def test_an_answer_to_a_question_answered_meanwhile_is_not_sent() -> None:
    answered = asyncio.Event()
    sent: list[bytes] = []

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith(f"/tasks/{WAITING}/events"):
            if request.method == "POST":
                sent.append(request.content)
                return httpx.Response(200, json={"service_id": "hitl", "event_obj_str": "{}"})
            return httpx.Response(
                200, headers={"content-type": "text/event-stream"}, stream=_Questions(answered)
            )
        return fake_api._handle(request)

    notices: list[str] = []

    def hook(message: Message) -> None:
        if isinstance(message, Notify):
            notices.append(message.notification.message)

    client = AsyncClient("http://demo.invalid:4501", transport=httpx.MockTransport(handle))
    app = DashboardApp(clock=lambda: NOW, client=client)
    async with app.run_test(size=(160, 40), notifications=True, message_hook=hook) as pilot:
        await until(pilot, lambda: app.screen.query_one(Feed).connected, "the snapshot")
        app.screen.show_task(WAITING)  # type: ignore[attr-defined]
        await until(pilot, lambda: app.events_book and app.events_book.waiting_for(), "the question")
        await pilot.press("a")
        await until(pilot, lambda: isinstance(app.screen, AnswerDialog), "the answer dialog")

        answered.set()
        await until(pilot, lambda: app.events_book and len(app.events_book) == 2, "the answer from elsewhere")
        await pilot.press(*"no", "enter")
        await until(pilot, lambda: not isinstance(app.screen, AnswerDialog), "the dialog to close")
        await workers_done(pilot, "actions", "the actions to end")
        assert sent == [], "a second answer was sent to a question already answered"
        assert not [n for n in notices if "Answer sent" in n], notices
