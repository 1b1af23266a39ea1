"""An echo workflow: answers with the message it was given."""

from workflows import Context, Workflow, step
from workflows.events import StartEvent, StopEvent


class EchoWorkflow(Workflow):
    @step
    async def echo(self, ctx: Context, ev: StartEvent) -> StopEvent:
        message = ev.get("message", "")
        return StopEvent(result=f"Message received: {message}")


echo_workflow = EchoWorkflow(timeout=60)
