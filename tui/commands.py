"""The dashboard's entries in the command palette (ctrl+p): every action, found by typing its name."""

from __future__ import annotations

from collections.abc import Iterator

from textual.app import SystemCommand

from llamactl.tui.events.event_list import EventList
from llamactl.tui.user_actions import UserActions

__all__ = ["dashboard_commands"]


def dashboard_commands(screen: UserActions) -> Iterator[SystemCommand]:
    """The palette entries for ``screen`` (they call the same actions as the keys)."""
    yield SystemCommand("Run a task", "Pick a service and type its input (r)", screen.action_run_task)
    yield SystemCommand(
        "Answer the task on show", "Send the answer a waiting workflow asks for (a)", screen.action_answer
    )
    yield SystemCommand("Cancel the task on show", "Asks first (c)", screen.action_cancel_task)
    yield SystemCommand(
        "Where is the task on show",
        "The line of its code it waits on; its stacks come as an event (w)",
        screen.action_where_task,
    )
    yield SystemCommand(
        "Copy the task id", "Of the task on show, to the clipboard (y)", screen.action_copy_task_id
    )
    yield SystemCommand("Open a task by id", "Show its record and events (o)", screen.action_open_task)
    yield SystemCommand(
        "New session", "Tasks in it share the workflow Context (n)", screen.action_create_session
    )
    yield SystemCommand(
        "Delete the picked session",
        "The one picked in the sessions list; asks first (x)",
        screen.action_delete_session,
    )
    yield SystemCommand(
        "Switch deployment", "Show another deployment of the server (d)", screen.action_switch_deployment
    )
    yield SystemCommand(
        "Filter tasks", "By words, status:, service:, session: (/)", screen.tasks_region.open_filter
    )
    yield SystemCommand(
        "Follow the events",
        "Toggle follow mode of the event stream (f)",
        screen.query_one(EventList).action_follow,
    )
    yield SystemCommand(
        "Reconnect now", "Skip the wait before the next attempt (ctrl+r)", screen.action_retry_now
    )
    yield SystemCommand("Zoom the focused region", "Or give the others back (z)", screen.action_zoom)
