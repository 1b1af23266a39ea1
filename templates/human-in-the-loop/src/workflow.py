"""A workflow that asks a human before it goes on (human in the loop).

It streams an `InputRequiredEvent` with the question, then waits for a `HumanResponseEvent`. Type
the answer where `llamactl run` asks it, or send it with `llamactl tasks send-event TASK --json
'{"response": "yes"}'`, from the dashboard, or over HTTP (`POST
/deployments/<name>/tasks/<task>/events`).
"""

from workflows import Context, Workflow, step
from workflows.events import HumanResponseEvent, InputRequiredEvent, StartEvent, StopEvent


class ApprovalWorkflow(Workflow):
    @step
    async def ask(self, ctx: Context, ev: StartEvent) -> StopEvent:
        request = str(ev.get("message", "go ahead"))
        answer = await ctx.wait_for_event(
            HumanResponseEvent,
            waiter_event=InputRequiredEvent(prefix=f"May I {request}? Answer yes or no."),
        )
        response = str(answer.get("response", "")).strip().lower()
        verdict = "approved" if response in {"y", "yes"} else "declined"
        return StopEvent(result=f"{request}: {verdict} (the human said {response!r})")


approval_workflow = ApprovalWorkflow(timeout=3600)
