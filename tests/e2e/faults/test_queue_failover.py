"""The deployment's Redis fails over to a replica that lagged (two real `redis-server`s of the
test's own, the second a replica of the first until it takes over; the line to them is a TCP
proxy switched from one to the other, as a DNS name or a load balancer moves on a failover).

The task published after the replica stopped following is not in the new primary, which knows
every client: the server hands it out again, and the task running meanwhile ends once."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from llamactl.server.types import TaskDefinition, TaskStatus
from tests.e2e.waiting import wait_until
from tests.server.mq.private_redis import fail_over, private_redis
from tests.server.mq.tcp_proxy import TcpProxy

from .conftest import Start


async def test_tasks_lost_by_a_failover_to_a_lagging_replica_are_handed_out_again(
    start_app: Start, tmp_path: Path
) -> None:
    async with private_redis(tmp_path / "a") as first, private_redis(tmp_path / "b") as second:
        a, b = urlsplit(first), urlsplit(second)
        proxy = TcpProxy(a.hostname or "127.0.0.1", a.port or 6379)
        await proxy.start()
        try:
            queue = {"type": "redis", "url": f"redis://127.0.0.1:{proxy.port}/0"}
            deployment, app = await start_app(
                {"work": {"path": "funcs:work", "max-concurrency": 1}}, message_queue=queue
            )
            cp = deployment.control_plane
            task = TaskDefinition(service_id="work", input='{"key": "a", "seconds": 3}')
            running = await cp.create_task(task)
            await wait_until(lambda: app.runs_of("a") == 1, 30)
            await fail_over(first, second)  # from now on the second lags
            waiting = await cp.create_task(
                TaskDefinition(service_id="work", input='{"key": "b", "seconds": 0}')
            )
            proxy.target = (b.hostname or "127.0.0.1", b.port or 6379)
            await proxy.stop()
            await proxy.start()
            print("injected: failed over to a replica that lacks the last task published")
            done = [await cp.wait_for_task(t.task_id, timeout=60) for t in (running, waiting)]
            assert [d.status for d in done] == [TaskStatus.COMPLETED, TaskStatus.COMPLETED]
            assert (app.runs_of("a"), app.runs_of("b")) == (1, 1)
        finally:
            await proxy.stop()
