"""A stateless second service: answers with the message in capitals."""

from workflows import Workflow, step
from workflows.events import StartEvent, StopEvent


class ShoutWorkflow(Workflow):
    @step
    async def shout(self, ev: StartEvent) -> StopEvent:
        return StopEvent(result=str(ev.get("message", "")).upper() + "!")


shout_workflow = ShoutWorkflow(timeout=60)
