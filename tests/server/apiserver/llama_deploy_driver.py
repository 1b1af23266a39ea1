"""Drives a server with Llama Deploy 0.9.2's own client, unchanged; run by that package's venv.

``python llama_deploy_driver.py URL DEPLOYMENT_YML STEP`` prints one JSON line with what the
step saw. It imports nothing of llamactl: only what a Llama Deploy user would write.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from llama_deploy.client import Client
from llama_deploy.types.core import TaskDefinition
from workflows.events import HumanResponseEvent


async def deploy(client: Client, file: str) -> dict[str, Any]:
    with open(file) as config:  # noqa: ASYNC230 (as a Llama Deploy user writes it)
        deployment = await client.apiserver.deployments.create(
            config, base_path=os.path.dirname(file), reload=False, local=False
        )
    status = await client.apiserver.status()
    got = await client.apiserver.deployments.get(deployment.id)
    return {
        "name": deployment.id,
        "status": status.status.value,
        "deployments": status.deployments,
        "got": got.id,
    }


async def run(client: Client, name: str) -> dict[str, Any]:
    deployment = await client.apiserver.deployments.get(name)
    result = await deployment.tasks.run(TaskDefinition(input=json.dumps({"message": "hi"})))
    return {"result": result}


async def sessions(client: Client, name: str) -> dict[str, Any]:
    deployment = await client.apiserver.deployments.get(name)
    session = await deployment.sessions.create()
    listed = await deployment.sessions.list()
    got = await deployment.sessions.get(session.session_id)
    ran = await deployment.tasks.run(
        TaskDefinition(input=json.dumps({"message": "in session"}), session_id=session.session_id)
    )
    await deployment.sessions.delete(session.session_id)
    after = await deployment.sessions.list()
    return {
        "created": session.session_id,
        "listed": [s["session_id"] for s in listed],
        "got": type(got).__name__,  # 0.9.2 ignores the answer: it only checks the status
        "ran": ran,
        "after": [s["session_id"] for s in after],
    }


async def events(client: Client, name: str) -> dict[str, Any]:
    deployment = await client.apiserver.deployments.get(name)
    task = await deployment.tasks.create(TaskDefinition(input=json.dumps({"count": 3}), service_id="stream"))
    seen = [event async for event in task.events()]
    result = await task.results()
    return {"events": seen, "result": result.model_dump() if result else None}


async def human(client: Client, name: str) -> dict[str, Any]:
    deployment = await client.apiserver.deployments.get(name)
    task = await deployment.tasks.create(TaskDefinition(input="{}", service_id="hitl"))
    async for event in task.events():
        if "prefix" in event:
            break
    sent = await task.send_event(HumanResponseEvent(response="42"), service_name="hitl")
    result = await task.results()
    return {"sent": sent.service_id, "result": result.result if result else None}


STEPS = {"deploy": deploy, "run": run, "sessions": sessions, "events": events, "human": human}


async def main() -> None:
    url, arg, step = sys.argv[1:4]
    client = Client(api_server_url=url, timeout=120)
    print(json.dumps(await STEPS[step](client, arg)), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
