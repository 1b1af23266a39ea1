"""The events view holds no more than ``--max-events``, even when a task's log comes in one batch
bigger than that (a long log opened at once)."""

from __future__ import annotations

from llamactl.tui.app import DashboardApp
from llamactl.tui.config import DashboardConfig
from llamactl.tui.events.event_list import EventList
from tests.tui.conftest import until
from tests.tui.fake_api import EVENTS, NOW, SHOWN, TASKS, fake_client

CAP = 3


async def test_a_batch_larger_than_the_cap_leaves_only_the_newest_events_on_show() -> None:
    assert len(EVENTS[SHOWN]) > CAP
    app = DashboardApp(
        DashboardConfig(deployment="demo", max_events=CAP), clock=lambda: NOW, client=fake_client()
    )
    async with app.run_test(size=(160, 40)) as pilot:
        await until(pilot, lambda: len(app.model.tasks) == len(TASKS), "the fixed tasks")
        app.screen.show_task(SHOWN)  # type: ignore[attr-defined]
        await until(pilot, lambda: app.events_book is not None and app.events_book.ended, "the whole log")
        book = app.events_book
        assert book is not None and len(book) == CAP
        events = app.screen.query_one(EventList)
        await until(pilot, lambda: events.option_count > 0, "the events on show")
        assert events.seqs == [e.seq for e in book], "the view shows what the book keeps"
        assert events.option_count == CAP
