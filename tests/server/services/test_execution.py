"""execute() over every adapter kind: results, streamed events, Context, HITL, cancel, errors, timeouts."""

from __future__ import annotations

import asyncio
import gc
import inspect
import time
from pathlib import Path
from typing import Any

import pytest
from workflows.context.serializers import JsonSerializer
from workflows.decorators import step
from workflows.events import HumanResponseEvent, StopEvent

from llamactl.server.errors import WorkflowLoadError
from llamactl.server.protocol import TASK_WHERE, WorkerMessageKind
from llamactl.server.services.adapters import Runnable
from llamactl.server.services.execution import TaskOutcome, execute
from tests.step_lookups import count_step_lookups

from .harness import TAKES_RUN_ID, TaskIO

COMPLETED = WorkerMessageKind.TASK_COMPLETED
FAILED = WorkerMessageKind.TASK_FAILED
CANCELLED = WorkerMessageKind.TASK_CANCELLED


async def run(
    runnable: Runnable,
    io: TaskIO | None = None,
    context: dict[str, Any] | None = None,
    timeout: float | None = None,
    **kwargs: Any,
) -> TaskOutcome:
    io = io or TaskIO()
    return await execute(
        runnable, kwargs=kwargs, context=context, emit=io.emit, inputs=io.inputs(), timeout=timeout
    )


# --- workflows ------------------------------------------------------------------------------------


async def test_workflow_result_and_events_in_order(load: Any) -> None:
    io = TaskIO()
    outcome = await run(load("flows:counter"), io, who="ada")
    assert outcome.kind is COMPLETED
    assert outcome.result == {"count": 1, "who": "ada"}
    assert io.types() == ["Progress", "Progress", "Progress", "StopEvent"]
    assert [e["value"] for e in io.events[:3]] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert io.events[0]["qualified_name"] == "flows.Progress"
    assert io.events[-1]["qualified_name"] == "workflows.events.StopEvent"
    assert outcome.context is not None


async def test_a_workflow_run_is_named_by_the_run_id_it_is_given(load: Any) -> None:
    outcome = await execute(
        load("flows:run_ids"), kwargs={"who": "ada"}, context=None, emit=TaskIO().emit, run_id="t-1:1"
    )
    assert outcome.kind is COMPLETED, outcome.error
    # On a workflows that cannot take it, the id stays out of the run's input.
    assert outcome.result["fields"] == ["who"]
    if TAKES_RUN_ID:
        assert outcome.result["run_id"] == "t-1:1"


async def test_an_input_s_own_run_id_wins_over_the_one_given(load: Any) -> None:
    """``workflows`` 2.14 and later read an input field ``run_id`` as the run's id, as they did
    before the worker named its runs; older ones pass it to the StartEvent."""
    outcome = await execute(
        load("flows:run_ids"), kwargs={"run_id": "mine"}, context=None, emit=TaskIO().emit, run_id="t-1:1"
    )
    assert outcome.kind is COMPLETED, outcome.error
    assert outcome.result == (
        {"run_id": "mine", "fields": []} if TAKES_RUN_ID else {"run_id": None, "fields": ["run_id"]}
    )


async def test_a_workflow_s_steps_are_looked_up_once_not_on_every_run(
    load: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``workflows`` looks an instance's steps up with inspect.getmembers several times per run
    (a sixth of a worker's CPU per echo task on 2.x, 4 % on 1.x); the adapter asks it once."""
    lookups = count_step_lookups(monkeypatch)
    runnable = load("flows:counter")
    lookups.clear()  # the module's workflows looked theirs up when they were made
    context = None
    for n in (1, 2, 3):
        outcome = await run(runnable, context=context)
        assert (outcome.kind, outcome.result["count"]) == (COMPLETED, n)
        context = outcome.context
    assert len(lookups) == 1


async def test_a_step_added_to_the_workflow_class_later_is_seen(load: Any) -> None:
    runnable = load("flows:Counter")
    assert (await run(runnable)).kind is COMPLETED
    cls = type(runnable.workflow)

    @step(workflow=cls)
    async def added(ev: HumanResponseEvent) -> StopEvent:
        return StopEvent()

    assert "added" in runnable.workflow._get_steps()
    assert "count" in runnable.workflow._get_steps()


async def test_workflow_subclass_is_instantiated(load: Any) -> None:
    outcome = await run(load("flows:Counter"))
    assert outcome.kind is COMPLETED
    assert outcome.result["count"] == 1


async def test_context_carries_across_runs(load: Any) -> None:
    counter = load("flows:counter")
    first = await run(counter)
    second = await run(counter, context=first.context)
    fresh = await run(counter)
    assert (first.result["count"], second.result["count"], fresh.result["count"]) == (1, 2, 1)


async def test_human_in_the_loop(load: Any) -> None:
    io = TaskIO()
    running = asyncio.create_task(run(load("flows:asker"), io))
    await io.wait_for(lambda: "InputRequiredEvent" in io.types())
    assert io.events[io.types().index("InputRequiredEvent")]["value"] == {"prefix": "name?"}
    io.send(JsonSerializer().serialize(HumanResponseEvent(response="Ada")))
    outcome = await running
    assert outcome.kind is COMPLETED
    assert outcome.result == "hello Ada"


async def test_a_workflow_waiting_for_its_answer_says_so_when_asked_where_it_is(load: Any) -> None:
    """On workflows 1.x the step that asked stays in progress while it waits: `tasks where`
    named its line only ("in step ask (flows.py line 41)"), not that it waits for a person."""
    io = TaskIO()
    running = asyncio.create_task(run(load("flows:asker"), io))
    await io.wait_for(lambda: "InputRequiredEvent" in io.types())
    io.ask_where("w1")
    await io.wait_for(lambda: TASK_WHERE in io.types())
    where = io.events[io.types().index(TASK_WHERE)]["value"]
    assert where["input_id"] == "w1"
    assert where["where"].startswith(
        "waiting for a person's answer to the question it asked (its InputRequiredEvent)"
    ), where["where"]
    io.send(JsonSerializer().serialize(HumanResponseEvent(response="Ada")))
    assert (await running).result == "hello Ada"


async def test_cancel_a_workflow_keeps_its_context(load: Any) -> None:
    io = TaskIO()
    running = asyncio.create_task(run(load("flows:sleeper"), io))
    await io.wait_for(lambda: "Progress" in io.types())
    io.cancel()
    outcome = await running
    assert outcome.kind is CANCELLED
    assert outcome.context is not None
    assert outcome.error is None


async def test_raising_workflow_gives_error_and_short_traceback(load: Any, source_dir: Path) -> None:
    outcome = await run(load("flows:raiser"))
    assert outcome.kind is FAILED
    assert outcome.error == "ValueError: bad input: 7"
    assert outcome.traceback is not None
    assert str(source_dir / "flows.py") in outcome.traceback
    assert "in check" in outcome.traceback and "in fail" in outcome.traceback
    assert "control_loop" not in outcome.traceback
    assert outcome.traceback.endswith("ValueError: bad input: 7")
    assert outcome.context is not None, "the Context is saved on failure too"


async def test_workflow_timeout(load: Any) -> None:
    started = time.monotonic()
    outcome = await run(load("flows:sleeper"), timeout=0.2)
    assert outcome.kind is FAILED
    assert outcome.error is not None
    assert outcome.error.startswith(
        "TimeoutError: timed out after 0.2 s, in step sleep"
    )  # where: test_timeout_where
    assert time.monotonic() - started < 5
    assert outcome.context is not None


async def test_a_stopped_workflow_leaves_no_exception_untaken(
    load: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A workflow stopped by a timeout or a cancel ends its run with WorkflowCancelledByUser;
    left untaken, asyncio logged it with a traceback ("Task exception was never retrieved") in
    the worker's output, on the server's terminal, for every task that timed out."""
    timed_out = await run(load("flows:sleeper"), timeout=0.05)
    io = TaskIO()
    running = asyncio.create_task(run(load("flows:sleeper"), io))
    await io.wait_for(lambda: "Progress" in io.types())
    io.cancel()
    assert (timed_out.kind, (await running).kind) == (FAILED, CANCELLED)
    gc.collect()  # asyncio says so when the task is collected
    assert not [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()]


async def test_pydantic_result_is_dumped(load: Any) -> None:
    outcome = await run(load("flows:modelled"))
    assert outcome.result == {"text": "hi"}


async def test_non_json_result_becomes_strings(load: Any) -> None:
    outcome = await run(load("flows:opaque"))
    assert outcome.result["tuple"] == [1, 2]
    assert outcome.result["obj"].startswith("<object object")


async def test_bad_context_fails_the_task_and_keeps_the_input_context(load: Any) -> None:
    outcome = await run(load("flows:counter"), context={"version": 99})
    assert outcome.kind is FAILED
    assert outcome.error is not None and "ContextSerdeError" in outcome.error
    assert outcome.context == {"version": 99}


# --- functions and generators ---------------------------------------------------------------------


async def test_a_context_that_does_not_serialize_fails_a_session_s_task(load: Any) -> None:
    """Before, the task completed and its Context was dropped with a worker log line: the
    session's next task went on from the one before, its state lost without a word."""
    keeper = load("flows:keeper")
    first = await run(keeper)
    assert (first.kind, first.result) == (COMPLETED, 1)
    locked = await run(keeper, context=first.context, lock=True)
    assert (locked.kind, locked.context) == (FAILED, None)  # the session keeps first.context
    assert locked.error is not None and locked.error.startswith(
        "ContextNotSaved: the workflow Context cannot be saved for the session's next task ("
    )
    assert "keep only values that serialize" in locked.error
    failed = await run(keeper, context=first.context, lock=True, fail=True)
    assert (failed.kind, failed.error, failed.context) == (FAILED, "ValueError: failed too", None)
    io = TaskIO()  # a task of its own (no session): no Context is kept, so nothing to lose
    alone = await execute(
        keeper, kwargs={"lock": True}, context=None, emit=io.emit, inputs=io.inputs(), keep_context=False
    )
    assert (alone.kind, alone.result) == (COMPLETED, 1)


async def test_async_function(load: Any) -> None:
    outcome = await run(load("funcs:add"), a=2, b=3)
    assert (outcome.kind, outcome.result, outcome.context) == (COMPLETED, 5, None)


async def test_async_callable_instance(load: Any) -> None:
    assert (await run(load("funcs:tool"), x=4)).result == 8


async def test_sync_function_runs_off_the_loop(load: Any) -> None:
    outcome = await run(load("funcs:shout"), text="hi")
    assert outcome.result["text"] == "HI"
    assert outcome.result["thread"] != "MainThread"


async def test_sync_function_timeout_does_not_wait_for_the_thread(load: Any) -> None:
    runnable = load("funcs:blocked")
    try:
        outcome = await run(runnable, timeout=0.2)
        assert outcome.kind is FAILED
        assert outcome.error is not None
        assert outcome.error.startswith("TimeoutError: timed out after 0.2 s, in blocked")
    finally:
        runnable.fn.__globals__["release"].set()


async def test_async_generator_streams_and_returns_last_item(load: Any) -> None:
    io = TaskIO()
    outcome = await run(load("funcs:agen"), io, n=2)
    assert outcome.result == "done"
    assert io.events == [
        {"value": {"i": 0}, "type": "dict", "qualified_name": "builtins.dict"},
        {"value": {"i": 1}, "type": "dict", "qualified_name": "builtins.dict"},
        {"value": "done", "type": "str", "qualified_name": "builtins.str"},
    ]


async def test_sync_generator_streams_and_returns_last_item(load: Any) -> None:
    io = TaskIO()
    outcome = await run(load("funcs:sgen"), io, n=3)
    assert outcome.result == "step 2"
    assert [e["value"] for e in io.events] == ["step 0", "step 1", "step 2"]


async def test_sync_generator_failure_after_streaming(load: Any) -> None:
    io = TaskIO()
    outcome = await run(load("funcs:sgen_fails"), io)
    assert outcome.kind is FAILED
    assert outcome.error == "KeyError: 'second'"
    assert io.types() == ["str"]


async def test_an_exception_whose_str_fails_still_fails_the_task(load: Any) -> None:
    outcome = await run(load("funcs:unprintable"))  # before: execute raised (the task ran again)
    assert outcome.kind is FAILED
    assert outcome.error == "Unprintable (its message could not be read: RuntimeError in its __str__)"
    assert outcome.traceback is not None and outcome.traceback.endswith(outcome.error)


async def test_an_error_message_of_megabytes_is_cut(load: Any) -> None:
    outcome = await run(load("funcs:verbose"), size=5 << 20)  # before: all 5 MiB in the error
    assert outcome.kind is FAILED and outcome.error is not None
    assert outcome.error.startswith("ValueError: yyyy")
    assert outcome.error.endswith("... (message cut: 5,242,880 characters in all)")
    assert len(outcome.error) < 4_100
    assert outcome.traceback is not None and len(outcome.traceback) < 5_000


async def test_a_result_that_contains_itself_fails_the_task(load: Any) -> None:
    outcome = await run(load("funcs:returns_itself"))
    assert outcome.kind is FAILED  # before: "RecursionError: maximum recursion depth exceeded ..."
    assert outcome.error is not None and outcome.error.startswith("NotEncodable: the value cannot be")


async def test_cancel_a_function(load: Any) -> None:
    io = TaskIO()
    io.cancel()
    outcome = await run(load("funcs:forever"), io)
    assert outcome.kind is CANCELLED


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [({}, "missing a required argument: 'a'"), ({"a": 1, "c": 2}, "unexpected keyword argument 'c'")],
)
async def test_bad_kwargs_fail_with_the_parameters(load: Any, kwargs: dict[str, Any], problem: str) -> None:
    outcome = await run(load("funcs:add"), **kwargs)
    assert outcome.kind is FAILED
    assert outcome.error is not None
    assert problem in outcome.error
    assert "add takes (a: int, b: int = 1)" in outcome.error
    assert outcome.traceback is None


async def test_a_function_s_signature_is_checked_once_per_set_of_input_names(
    load: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Binding keywords looks only at their names: a set that fitted once fits again, so it is
    not bound again; one that did not fit is refused (and checked) every time."""
    binds: list[frozenset[str]] = []
    bind = inspect.Signature.bind

    def counted(self: inspect.Signature, /, *args: Any, **kwargs: Any) -> inspect.BoundArguments:
        binds.append(frozenset(kwargs))
        return bind(self, *args, **kwargs)

    monkeypatch.setattr(inspect.Signature, "bind", counted)
    add = load("funcs:add")
    assert [(await run(add, a=n)).result for n in (1, 2, 3)] == [2, 3, 4]
    assert (await run(add, a=1, b=5)).result == 6
    assert (await run(add, b=5, a=2)).result == 7  # the same names in another order
    for _ in range(2):
        outcome = await run(add, a=1, c=2)
        assert outcome.kind is FAILED and "unexpected keyword argument 'c'" in (outcome.error or "")
    assert binds == [frozenset({"a"}), frozenset({"a", "b"}), frozenset({"a", "c"}), frozenset({"a", "c"})]


async def test_inputs_a_run_never_opened_are_left_untouched(load: Any) -> None:
    """A run that ends before ``inputs_after`` never reads its inputs: they are not even closed
    (there is nothing to close), while inputs it opened are closed when it ends."""
    io = TaskIO()
    unread = io.inputs()
    outcome = await execute(
        load("funcs:add"), kwargs={"a": 1}, context=None, emit=io.emit, inputs=unread, inputs_after=60
    )
    assert outcome.result == 2
    assert unread.ag_frame is not None  # never started, never closed
    opened = io.inputs()
    outcome = await execute(load("funcs:add"), kwargs={"a": 1}, context=None, emit=io.emit, inputs=opened)
    assert outcome.result == 2
    assert opened.ag_frame is None  # closed


async def test_a_function_failing_on_an_input_of_the_wrong_type_names_that_input(load: Any) -> None:
    """`llamactl run -a b x` to `add(a: int, b: int)` failed with only Python's own words
    ("unsupported operand type(s) for +: 'int' and 'str'"), pointing into the user's code."""
    outcome = await run(load("funcs:add"), a=2, b="x")
    assert outcome.kind is FAILED and outcome.error is not None
    assert outcome.error.startswith("TypeError: unsupported operand type(s) for +: 'int' and 'str'")
    assert outcome.error.endswith("(the task's input: b='x' is a str where add declares b: int)")
    assert outcome.traceback is not None and "b='x' is a str" in outcome.traceback


async def test_a_function_that_takes_an_input_of_another_type_still_runs(load: Any) -> None:
    """Nothing is refused before the call: `shout(text: str)` given a number fails in its own
    code, but a function that copes with it (here, add with floats) is not stopped."""
    assert (await run(load("funcs:add"), a=2.5, b=1)).result == 3.5
    outcome = await run(load("funcs:shout"), text=3)
    assert outcome.error is not None
    assert outcome.error.startswith("AttributeError: 'int' object has no attribute 'upper'")
    assert "text=3 is an int where shout declares text: str" in outcome.error


async def test_events_sent_to_a_function_are_ignored(load: Any) -> None:
    io = TaskIO()
    io.send(JsonSerializer().serialize(HumanResponseEvent(response="x")))
    outcome = await run(load("funcs:add"), io, a=1)
    assert outcome.result == 2


# --- what cannot be adapted -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("funcs:NOT_CALLABLE", "is a int"),
        ("funcs:Plain", "is the class Plain"),
        ("flows:NeedsArgs", "could not instantiate Workflow subclass NeedsArgs with no arguments"),
    ],
)
def test_unsupported_targets(load: Any, path: str, problem: str) -> None:
    with pytest.raises(WorkflowLoadError) as err:
        load(path)
    assert problem in str(err.value)
    assert path in str(err.value)
    if "instantiate" not in problem:
        assert "a workflows.Workflow instance, a Workflow subclass, an async or sync function" in str(
            err.value
        )
