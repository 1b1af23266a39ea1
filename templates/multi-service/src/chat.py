"""A chat workflow that remembers the conversation of its session.

`ctx.store` is part of the workflow Context. llamactl saves a session's Context after each task
and restores it before the next task of the same session, so whatever one task stores the next
one reads. A task run without `--session` gets a new session, and so a fresh memory.
"""

from workflows import Context, Workflow, step
from workflows.events import StartEvent, StopEvent


class ChatWorkflow(Workflow):
    @step
    async def reply(self, ctx: Context, ev: StartEvent) -> StopEvent:
        message = str(ev.get("message", ""))
        history: list[str] = list(await ctx.store.get("history", default=[]))
        earlier = f"; earlier: {', '.join(history)}" if history else ""
        history.append(message)
        await ctx.store.set("history", history)
        return StopEvent(result=f"Message {len(history)} of this session: {message}{earlier}")


chat_workflow = ChatWorkflow(timeout=60)
