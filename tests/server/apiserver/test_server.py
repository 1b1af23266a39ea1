"""Server routes, deployments (create as Llama Deploy's client uploads, reload, delete), the change
feed, the control-plane port and the 503 of a deployment that is still starting."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest

from tests.server.apiserver.conftest import OTHER_YML, Running, SseReader, read_sse, task_input

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def deploy(
    client: httpx.AsyncClient, running: Running, yml: str, *, reload: bool = False
) -> httpx.Response:
    """Upload ``yml`` exactly as Llama Deploy's client does."""
    return await client.post(
        "/deployments/create",
        params={"base_path": str(running.app_dir), "reload": str(reload).lower(), "local": "false"},
        files={"config_file": ("upload", yml.encode(), "application/octet-stream")},
    )


async def test_root_status_health_and_docs(client: httpx.AsyncClient, running: Running) -> None:
    root = (await client.get("/")).json()
    assert root == {"swagger_docs": f"{running.url}/docs", "status": f"{running.url}/status/"}
    status = (await client.get("/status/")).json()
    assert status["status"] == "Healthy" and status["status_message"] == ""
    assert "main" in status["deployments"]
    redirect = await client.get("/status")
    assert redirect.status_code == 307 and redirect.headers["location"].endswith("/status/")
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    openapi = (await client.get("/openapi.json")).json()
    assert "/deployments/{name}/tasks/run" in openapi["paths"]
    assert openapi["paths"]["/deployments/{name}/tasks/run"]["post"]["summary"].startswith("Run a task")
    docs = await client.get("/docs")
    assert docs.headers["content-type"].startswith("text/html") and "/openapi.json" in docs.text


async def test_metrics_count_tasks_and_replicas(client: httpx.AsyncClient) -> None:
    await client.post("/deployments/main/tasks/run", json={"input": task_input(message="m")})
    text = (await client.get("/metrics")).text
    assert "# TYPE llamactl_tasks gauge" in text
    completed = [
        line
        for line in text.splitlines()
        if line.startswith('llamactl_tasks{deployment="main",service="echo",status="completed"}')
    ]
    assert completed and int(completed[0].split()[-1]) >= 1
    assert 'llamactl_replicas_ready{deployment="main",service="echo"} 1' in text
    assert "llamactl_uptime_seconds " in text


async def test_serve_reported_each_service_as_it_came_up(running: Running) -> None:
    for service in ("echo", "stream", "hitl", "counter", "boom"):
        assert any(line.startswith(f"main/{service} ") and "is up" in line for line in running.events)


async def test_deployment_list_get_services_and_state(client: httpx.AsyncClient) -> None:
    assert {"name": "main"} in (await client.get("/deployments/")).json()
    assert (await client.get("/deployments/main")).json() == {"name": "main"}
    services = (await client.get("/deployments/main/services")).json()
    assert [s["service_id"] for s in services] == ["echo", "stream", "hitl", "counter", "boom"]
    assert services[0]["replicas"][0]["state"] == "ready"
    sessions = (await client.get("/deployments/main/state")).json()["sessions"]
    await client.post("/deployments/main/tasks/create", json={"input": "{}"})
    await client.post("/deployments/main/tasks/run", json={"input": task_input(message="s")})
    state = (await client.get("/deployments/main/state")).json()
    assert state["deployment"] == "main"
    assert set(state["tasks"]) == {"queued", "running", "completed", "failed", "cancelled"}
    # tasks/create's session is kept; tasks/run's own session has no record
    assert state["tasks"]["completed"] >= 1 and state["sessions"] == sessions + 1
    assert state["recent_tasks"][0]["input"] == task_input(message="s")
    assert state["changes_seq"] > 0


async def test_change_feed_shows_services_and_task_status(client: httpx.AsyncClient) -> None:
    sse = {"accept": "text/event-stream"}
    async with client.stream(
        "GET", "/deployments/main/changes", params={"from_seq": 0}, headers=sse
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        frames = await read_sse(stream, until="service.up")
    assert frames[-1].event == "service.up"
    assert [f.id for f in frames] == list(range(len(frames)))

    start = (await client.get("/deployments/main/state")).json()["changes_seq"]
    created = (await client.post("/deployments/main/tasks/create", json={"input": "{}"})).json()
    statuses: list[str] = []
    last_id = -1
    async with client.stream(
        "GET", "/deployments/main/changes", params={"from_seq": start}, headers=sse
    ) as stream:
        reader = SseReader(stream)
        while "completed" not in statuses:
            frame = await reader.next()
            assert frame is not None and frame.id is not None and frame.id >= start
            last_id = frame.id
            change = json.loads(frame.data)
            if frame.event == "task.status" and change["data"]["task_id"] == created["task_id"]:
                statuses.append(change["data"]["status"])
    # An echo ends well within STARTED_AFTER, so it does not report "running" (unless the machine
    # is so loaded that it takes longer).
    assert statuses in (["queued", "completed"], ["queued", "running", "completed"])
    headers = {**sse, "Last-Event-ID": str(last_id - 1)}
    async with client.stream("GET", "/deployments/main/changes", headers=headers) as stream:
        (frame,) = await read_sse(stream, limit=1)
    assert frame.id == last_id


async def test_the_control_plane_port_answers_llama_deploy_08_routes(running: Running) -> None:
    async with httpx.AsyncClient(base_url=running.cp_url, timeout=30) as cp:
        assert (await cp.get("/")).json()["services_store_key"] == "services"
        services = (await cp.get("/services")).json()
        assert services["echo"]["service_name"] == "echo"
        assert (await cp.get("/services/nope")).status_code == 404
        queue = (await cp.get("/queue_config")).json()["ZeroMQMessageQueueConfig"]
        assert queue["router"]  # where, but never the keys that let a process in
        assert "curve" not in queue and "secret" not in json.dumps(queue)
        session_id = (await cp.post("/sessions/create")).json()
        assert isinstance(session_id, str)
        task_id = (
            await cp.post(f"/sessions/{session_id}/tasks", json={"input": task_input(message="cp")})
        ).json()
        async with cp.stream("GET", f"/sessions/{session_id}/tasks/{task_id}/result_stream") as stream:
            lines = [json.loads(line) async for line in stream.aiter_lines() if line]
        assert lines == [{"result": "Message received: cp"}]
        result = (await cp.get(f"/sessions/{session_id}/tasks/{task_id}/result")).json()
        assert result["result"] == "Message received: cp"
        assert [t["task_id"] for t in (await cp.get(f"/sessions/{session_id}/tasks")).json()] == [task_id]
        assert (await cp.get(f"/sessions/{session_id}/current_task")).json()["task_id"] == task_id
        assert session_id in (await cp.get("/sessions")).json()
        assert (await cp.post(f"/sessions/{session_id}/state", json={"k": 1})).json() is None
        assert (await cp.get(f"/sessions/{session_id}/state")).json() == {"k": 1}
        assert (await cp.post(f"/sessions/{session_id}/delete")).json() is None
        assert (await cp.get(f"/sessions/{session_id}")).status_code == 404


async def test_deploy_two_at_once_then_reload_and_delete(client: httpx.AsyncClient, running: Running) -> None:
    created = await deploy(client, running, OTHER_YML.format(name="other", path="flows:echo_workflow"))
    assert created.status_code == 200, created.text
    assert created.json() == {"name": "other"}
    assert set((await client.get("/status/")).json()["deployments"]) >= {"main", "other"}
    both = await asyncio.gather(
        client.post("/deployments/main/tasks/run", json={"input": task_input(message="a")}),
        client.post("/deployments/other/tasks/run", json={"input": task_input(message="b")}),
    )
    assert [r.json() for r in both] == ["Message received: a", "Message received: b"]
    before = (
        await client.post("/deployments/other/tasks/create", json={"input": task_input(message="c")})
    ).json()
    await client.get(f"/deployments/other/tasks/{before['task_id']}/results")

    again = await deploy(client, running, OTHER_YML.format(name="other", path="flows:echo_workflow"))
    assert again.status_code == 409 and "reload" in again.json()["detail"]

    reloaded = await deploy(
        client, running, OTHER_YML.format(name="other", path="flows:echo_workflow"), reload=True
    )
    assert reloaded.status_code == 200, reloaded.text
    kept = (await client.get(f"/deployments/other/tasks/{before['task_id']}")).json()
    assert kept["result"] == "Message received: c"
    after = await client.post("/deployments/other/tasks/run", json={"input": task_input(message="d")})
    assert after.json() == "Message received: d"

    deleted = await client.delete("/deployments/other")
    assert deleted.status_code == 200 and deleted.json() == {"name": "other"}
    assert (await client.get("/deployments/other")).status_code == 404
    assert "other" not in (await client.get("/status/")).json()["deployments"]


async def test_a_deployment_being_deleted_answers_reads_and_waiters_and_refuses_new_tasks(
    client: httpx.AsyncClient, running: Running
) -> None:
    """Its workers finish their tasks before it goes, but every request answered 503 meanwhile:
    `llamactl run --stream` printed a task's last event, then failed to read its result."""
    created = await deploy(client, running, OTHER_YML.format(name="leaving", path="lingers:linger"))
    assert created.status_code == 200, created.text
    task_id = str(uuid.uuid4())
    run = asyncio.create_task(
        client.post(
            "/deployments/leaving/tasks/run",
            json={"input": task_input(seconds=3), "task_id": task_id},
            timeout=30,
        )
    )
    deadline = time.monotonic() + 10
    while (await client.get(f"/deployments/leaving/tasks/{task_id}")).json().get("status") != "running":
        assert time.monotonic() < deadline, "the task did not start"
        await asyncio.sleep(0.02)
    deleting = asyncio.create_task(client.delete("/deployments/leaving", timeout=30))
    while True:
        refused = await client.post(
            "/deployments/leaving/tasks/create", json={"input": task_input(seconds=0)}
        )
        if refused.status_code == 503:
            break
        assert refused.status_code == 200 and time.monotonic() < deadline, refused.text
        await asyncio.sleep(0.02)
    assert refused.json() == {
        "detail": "deployment 'leaving' is being deleted: it takes no new tasks",
        "state": "deleting",
    }
    record = await client.get(f"/deployments/leaving/tasks/{task_id}")
    assert record.status_code == 200 and record.json()["status"] == "running", record.text
    assert not deleting.done()
    answered = await run
    assert answered.status_code == 200 and answered.json() == "done", answered.text
    assert (await deleting).status_code == 200
    assert (await client.get(f"/deployments/leaving/tasks/{task_id}")).status_code == 404


async def test_reload_of_an_unknown_deployment_is_404(client: httpx.AsyncClient, running: Running) -> None:
    response = await deploy(
        client, running, OTHER_YML.format(name="ghost", path="flows:echo_workflow"), reload=True
    )
    assert response.status_code == 404 and "ghost" in response.json()["detail"]


async def test_bad_yaml_is_400_with_the_line(client: httpx.AsyncClient, running: Running) -> None:
    bad = "name: broken\nservices:\n  echo:\n    source: {type: local, location: src}\n    replicas: lots\n"
    response = await deploy(client, running, bad)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert ":5:" in detail and "services.echo.replicas" in detail
    unparsable = await deploy(client, running, "name: [unclosed\n")
    assert unparsable.status_code == 400 and "not valid YAML" in unparsable.json()["detail"]


async def test_bad_import_path_is_400_and_leaves_nothing_behind(
    client: httpx.AsyncClient, running: Running
) -> None:
    response = await deploy(client, running, OTHER_YML.format(name="noimport", path="flows:no_such_workflow"))
    assert response.status_code == 400
    assert "no_such_workflow" in response.json()["detail"]
    assert (await client.get("/deployments/noimport")).status_code == 404


async def test_upload_errors_say_what_to_send(client: httpx.AsyncClient, running: Running) -> None:
    wrong_field = await client.post(
        "/deployments/create",
        params={"base_path": str(running.app_dir)},
        files={"file": ("upload", b"name: x\n", "application/octet-stream")},
    )
    assert wrong_field.status_code == 400 and "config_file" in wrong_field.json()["detail"]
    no_folder = await client.post(
        "/deployments/create",
        params={"base_path": str(running.app_dir / "missing")},
        files={"config_file": ("upload", b"name: x\n", "application/octet-stream")},
    )
    assert no_folder.status_code == 400 and "not a folder" in no_folder.json()["detail"]
    bad_bool = await client.post("/deployments/create", params={"reload": "maybe"})
    assert bad_bool.status_code == 400 and "true or false" in bad_bool.json()["detail"]


async def test_a_starting_deployment_answers_503(client: httpx.AsyncClient, running: Running) -> None:
    creating = asyncio.create_task(
        deploy(client, running, OTHER_YML.format(name="slow", path="slow:workflow"))
    )
    deadline = time.monotonic() + 30
    statuses: set[int] = set()
    while 503 not in statuses and not creating.done():
        assert time.monotonic() < deadline, "never saw the deployment starting"
        response = await client.get("/deployments/slow/tasks")
        statuses.add(response.status_code)
        if response.status_code == 503:
            assert "starting" in response.json()["detail"]
        await asyncio.sleep(0.02)
    assert 503 in statuses
    assert "slow" in (await client.get("/status/")).json()["deployments"]
    assert (await creating).status_code == 200
    assert (await client.get("/deployments/slow/tasks")).json() == []
    assert (await client.delete("/deployments/slow")).status_code == 200
