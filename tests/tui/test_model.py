"""The dashboard's model: bounded books fed by listings and the change feed (no Textual, no server)."""

from __future__ import annotations

from llamactl.client import DeploymentState
from llamactl.server.types import (
    ChangeEvent,
    EventEnvelope,
    ReplicaState,
    ReplicaStatus,
    ServiceStatus,
    SessionDefinition,
    TaskRecord,
    TaskStatus,
)
from llamactl.tui.model.dashboard import BackendOutage, DashboardModel
from llamactl.tui.model.events import EventBook
from llamactl.tui.model.format import ago, duration, error_location, size
from llamactl.tui.model.query import TaskQuery, select_tasks
from llamactl.tui.model.services import ServiceBook
from llamactl.tui.model.sessions import SessionBook
from llamactl.tui.model.tasks import TaskBook
from llamactl.tui.model.throughput import Throughput


def record(
    task_id: str, status: str = "completed", *, created: float = 100.0, **fields: object
) -> TaskRecord:
    values: dict[str, object] = {
        "task_id": task_id,
        "deployment": "demo",
        "service_id": "echo",
        "session_id": f"s-{task_id}",
        "status": status,
        "created_at": created,
    }
    values.update(fields)
    return TaskRecord.model_validate(values)


def status_change(task_id: str, status: str, at: float, seq: int = 0, **data: object) -> ChangeEvent:
    payload = {"task_id": task_id, "session_id": f"s-{task_id}", "service_id": "echo", "status": status}
    payload.update(data)
    return ChangeEvent(kind="task.status", deployment="demo", data=payload, at=at, seq=seq)


def envelope(seq: int, type_: str = "Progress", value: object = None, attempt: int = 1) -> EventEnvelope:
    return EventEnvelope(
        value=value or {}, type=type_, qualified_name=f"flows.{type_}", seq=seq, attempt=attempt
    )


def test_the_task_book_never_holds_more_than_its_cap() -> None:
    book = TaskBook(cap=50)
    for n in range(500):
        book.apply_status(status_change(f"t{n}", "completed", float(n)).data, float(n))
    assert len(book) <= 50
    assert "t499" in book and "t0" not in book


def test_the_task_book_drops_finished_tasks_before_running_ones() -> None:
    book = TaskBook(cap=10)
    book.apply_status(status_change("old-running", "running", 1.0).data, 1.0)
    for n in range(30):
        book.apply_status(status_change(f"done{n}", "completed", 2.0 + n).data, 2.0 + n)
    assert "old-running" in book


def test_the_task_book_never_drops_the_pinned_task() -> None:
    book = TaskBook(cap=10)
    book.apply_status(status_change("shown", "completed", 0.0).data, 0.0)
    book.pinned = {"shown"}
    for n in range(100):
        book.apply_status(status_change(f"t{n}", "completed", 1.0 + n).data, 1.0 + n)
    assert "shown" in book


def test_a_finished_task_does_not_go_back_to_running_on_a_replayed_change() -> None:
    book = TaskBook(cap=10)
    book.load([record("a", "completed")])
    assert book.apply_status(status_change("a", "running", 200.0).data, 200.0) == set()
    row = book.get("a")
    assert row is not None and row.status is TaskStatus.COMPLETED


def test_status_changes_set_the_start_and_end_times() -> None:
    book = TaskBook(cap=10)
    book.apply_status(status_change("a", "queued", 10.0).data, 10.0)
    book.apply_status(status_change("a", "running", 11.0, replica_id="echo#1", attempts=1).data, 11.0)
    book.apply_status(status_change("a", "completed", 13.5).data, 13.5)
    row = book.get("a")
    assert row is not None
    assert (row.created_at, row.started_at, row.finished_at) == (10.0, 11.0, 13.5)
    assert row.duration(99.0) == 2.5 and row.replica_id == "echo#1"


def test_a_task_that_asks_shows_asking_and_keeps_its_start_time() -> None:
    book = TaskBook(cap=10)
    book.apply_status(status_change("a", "running", 11.0, attempts=1).data, 11.0)
    book.apply_status(status_change("a", "running", 15.0, attempts=1, waiting_for_answer=True).data, 15.0)
    row = book.get("a")
    assert row is not None and (row.shown_status, row.started_at) == ("asking", 11.0)
    book.apply_status(status_change("a", "running", 20.0, attempts=1).data, 20.0)  # answered
    assert (row.shown_status, row.started_at) == ("running", 11.0)
    book.apply_status(status_change("a", "running", 30.0, attempts=2).data, 30.0)  # a new attempt
    assert (row.shown_status, row.started_at) == ("running", 30.0)
    book.apply_status(status_change("a", "completed", 31.0, waiting_for_answer=True).data, 31.0)
    assert row.shown_status == "completed"


def test_the_session_book_counts_each_task_once() -> None:
    book = SessionBook(cap=10)
    book.add_task("s", "t1", 1.0)
    book.add_task("s", "t1", 2.0)
    book.add_task("s", "t2", 3.0)
    row = book.get("s")
    assert row is not None and len(row.task_ids) == 2


def test_the_session_book_keeps_the_newest_sessions_within_its_cap() -> None:
    book = SessionBook(cap=20)
    book.load([SessionDefinition(session_id=f"s{n}") for n in range(100)], now=0.0)
    assert len(book) <= 20
    assert [r.session_id for r in book.newest(2)] == ["s99", "s98"]


def test_the_event_book_skips_events_it_has_seen() -> None:
    book = EventBook("t", cap=100)
    fresh, _ = book.add([envelope(0), envelope(1), envelope(2)])
    assert len(fresh) == 3
    fresh, _ = book.add([envelope(1), envelope(2), envelope(3)])  # a resumed stream overlaps
    assert [e.seq for e in fresh] == [3]
    assert [e.seq for e in book] == [0, 1, 2, 3] and book.next_seq == 4


def test_the_event_book_keeps_the_newest_events_within_its_cap() -> None:
    book = EventBook("t", cap=10)
    _, dropped = book.add([envelope(n) for n in range(25)])
    assert dropped == 15 and len(book) == 10 and book.first_seq == 15 and book.dropped == 15


def test_a_task_waits_for_a_human_until_answered_or_finished() -> None:
    book = EventBook("t", cap=10)
    book.add([envelope(0, "InputRequiredEvent", {"prefix": "What is the answer?"})])
    waiting = book.waiting_for()
    assert waiting is not None and waiting.seq == 0
    book.answered.add(0)
    assert book.waiting_for() is None
    book.answered.clear()
    book.end("completed")
    assert book.waiting_for() is None


def test_throughput_counts_finished_tasks_per_second() -> None:
    meter = Throughput(window=10)
    for at in (100.1, 100.5, 101.2, 103.9):
        meter.add(at)
    assert meter.series(104.0)[-4:] == [2.0, 1.0, 0.0, 1.0]
    assert meter.rate(104.0, seconds=4) == 1.0
    assert not meter.active(200.0)


def test_the_query_matches_words_and_fields() -> None:
    book = TaskBook(cap=10)
    book.load(
        [
            record("aa", "failed", service_id="boom", error="ValueError: nope"),
            record("bb", "completed", service_id="echo"),
            record("cc", "running", service_id="echo"),
            record("dd", "running", service_id="hitl", waiting_for_answer=True),
        ]
    )
    pick = lambda text: {r.task_id for r in select_tasks(book, query=TaskQuery.parse(text), limit=10)}  # noqa: E731
    assert pick("status:failed,running") == {"aa", "cc", "dd"}
    assert pick("service:echo running") == {"cc"}
    assert pick("valueerror") == {"aa"}
    assert pick("status:ask") == pick("asking") == {"dd"}  # as the table shows it


def test_the_query_finds_an_id_by_its_start_or_its_end() -> None:
    book = TaskBook(cap=10)
    book.load([record("01a2-start-x1", "completed"), record("01a2-start-y2", "completed")])
    pick = lambda text: {r.task_id for r in select_tasks(book, query=TaskQuery.parse(text), limit=10)}  # noqa: E731
    assert pick("task:01a2") == {"01a2-start-x1", "01a2-start-y2"}
    assert pick("task:y2") == {"01a2-start-y2"}  # the end, as the tables show it
    assert pick("service:ho") == set()  # other fields match by their start only


def test_tasks_sort_newest_first_by_default_and_cap_at_the_limit() -> None:
    book = TaskBook(cap=100)
    book.load([record(f"t{n}", created=float(n)) for n in range(20)])
    shown = select_tasks(book, limit=3)
    assert [r.task_id for r in shown] == ["t19", "t18", "t17"]
    assert [r.task_id for r in select_tasks(book, limit=2, reverse=True)] == ["t0", "t1"]


def test_the_model_measures_throughput_from_the_servers_counters() -> None:
    clock = [100.0]
    model = DashboardModel(max_tasks=10, max_sessions=10, clock=lambda: clock[0])
    state = lambda done: DeploymentState(deployment="demo", tasks={"completed": done})  # noqa: E731
    model.load_state(state(1000))  # the first snapshot is the baseline: no burst of 1000
    clock[0] = 101.0
    model.load_state(state(1300))
    clock[0] = 102.0
    model.load_state(state(1600))
    assert sum(model.throughput.series(103.0)) == 600.0
    assert model.throughput.rate(102.0, seconds=2) == 300.0


def test_a_replayed_finish_marks_its_session_once() -> None:
    model = DashboardModel(max_tasks=100, max_sessions=100)
    delta = model.apply(
        [
            status_change("a", "queued", 10.0, 0),
            status_change("a", "completed", 10.2, 1),
            status_change("a", "completed", 10.3, 2),
        ]
    )
    assert delta.tasks == {"a"} and delta.finished_sessions == {"s-a"}


def test_a_task_in_a_session_of_its_own_adds_no_session_row() -> None:
    """Its session has no record (`tasks/run` naming none): a row for it could show nothing."""
    model = DashboardModel(max_tasks=100, max_sessions=100)
    delta = model.apply(
        [
            status_change("a", "running", 10.0, 0, own_session=True),
            status_change("a", "completed", 10.2, 1, own_session=True),
            status_change("b", "running", 10.3, 2),
        ]
    )
    assert delta.tasks == {"a", "b"} and delta.finished_sessions == set()
    assert [row.session_id for row in model.sessions.newest(10)] == ["s-b"]


def test_the_model_asks_for_the_services_again_when_one_is_added() -> None:
    model = DashboardModel(max_tasks=10, max_sessions=10)
    delta = model.apply([ChangeEvent(kind="service.added", deployment="demo", data={"service_id": "new"})])
    assert delta.services_stale


def test_human_forms() -> None:
    assert (duration(0.0123), duration(4.21), duration(184), duration(7500)) == (
        "12ms",
        "4.2s",
        "3m04s",
        "2h05m",
    )
    assert (ago(0.2), ago(42), ago(300), ago(7200)) == ("now", "42s", "5m", "2h")
    assert (size(812), size(4200), size(None)) == ("812 B", "4.1 KB", "-")


def test_error_locations_name_the_file_and_line() -> None:
    assert error_location("echo: syntax error in /app/src/flows.py line 12: invalid syntax") == "flows.py:12"
    assert error_location("importing 'flows' raised NameError: x (at /app/src/flows.py:7 <- a.py:3)") == (
        "flows.py:7"
    )
    assert error_location('File "/app/src/flows.py", line 9, in run') == "flows.py:9"
    assert error_location("no location here") is None
    traceback = (
        "importing 'flows' raised NameError (at /app/src/flows.py:61 <- /usr/lib/python3.11/importlib/"
        '__init__.py:126)\n  File "/usr/lib/python3.11/importlib/__init__.py", line 126, in import_module'
    )
    assert error_location(traceback) == "flows.py:61"


def test_a_service_left_to_remote_workers_is_remote_until_one_is_up() -> None:
    book = ServiceBook()
    book.load([ServiceStatus(service_id="echo", name="Echo", desired_replicas=0)])
    row = book.get("echo")
    assert row is not None and (row.state, row.ready, row.wanted) == ("remote", 0, 0)
    remote = ReplicaStatus(replica_id="echo#host-7-1", service_id="echo", state=ReplicaState.READY)
    book.load([ServiceStatus(service_id="echo", name="Echo", desired_replicas=0, replicas=[remote])])
    row = book.get("echo")
    assert row is not None and (row.state, row.ready) == ("up", 1)


def test_the_queue_outage_comes_from_the_snapshot_and_the_change_feed() -> None:
    model = DashboardModel(max_tasks=10, max_sessions=10, clock=lambda: 1000.0)
    health = {
        "message_queue": {
            "reachable": False,
            "where": "redis://q/0",
            "unreachable_since": 990.0,
            "error": "refused",
        }
    }
    delta = model.load_state(DeploymentState(deployment="demo", health=health))
    assert delta.outage and (queue := model.outages.get("message_queue")) is not None
    assert (queue.where, queue.since, queue.error) == (
        "redis://q/0",
        990.0,
        "refused",
    )
    assert not model.load_state(DeploymentState(deployment="demo", health=health)).outage  # unchanged
    back = ChangeEvent(kind="queue.reachable", deployment="demo", data={"where": "redis://q/0"}, seq=1)
    assert model.apply([back]).outage and "message_queue" not in model.outages
    lost = ChangeEvent(
        kind="queue.unreachable",
        deployment="demo",
        data={"where": "redis://q/0", "since": 995.0, "error": "timed out"},
        seq=2,
    )
    assert model.apply([lost]).outage
    assert (queue := model.outages.get("message_queue")) is not None and queue.error == "timed out"
    assert queue.state == "unreachable"  # a server before `state` meant this
    full = ChangeEvent(
        kind="queue.unreachable",
        deployment="demo",
        data={"where": "redis://q/0", "since": 996.0, "error": "its maxmemory", "state": "refusing writes"},
        seq=3,
    )
    model.apply([back.model_copy(update={"seq": 3}), full.model_copy(update={"seq": 4})])
    assert (queue := model.outages.get("message_queue")) is not None and queue.state == "refusing writes"
    # an older server's snapshot says nothing of the queue: nothing is shown
    assert model.load_state(DeploymentState(deployment="demo")).outage and not model.outages


def test_the_store_s_outage_comes_from_the_snapshot_and_the_feed_s_health_notices() -> None:
    """A store refusing writes cannot log its outage in the change feed: the server pushes it."""
    model = DashboardModel(max_tasks=10, max_sessions=10, clock=lambda: 1000.0)
    full = {"reachable": False, "where": "postgresql://db/x", "unreachable_since": 990.0, "error": "its disk"}
    health = {"message_queue": {"reachable": True}, "state_store": {**full, "state": "refusing writes"}}
    assert model.load_state(DeploymentState(deployment="demo", health=health)).outage
    assert model.outages == {
        "state_store": BackendOutage("state_store", "postgresql://db/x", 990.0, "its disk", "refusing writes")
    }
    both = {**health, "message_queue": {"reachable": False, "where": "redis://q/0", "state": "unreachable"}}
    notice = ChangeEvent(kind="health", deployment="demo", data=both, seq=-1)
    assert model.apply([notice]).outage and list(model.outages) == ["message_queue", "state_store"]
    assert not model.apply([notice]).outage  # unchanged
    well = ChangeEvent(kind="health", deployment="demo", data={"state_store": {"reachable": True}}, seq=-1)
    assert model.apply([well]).outage and not model.outages
