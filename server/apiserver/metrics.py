"""Prometheus text exposition, written by hand (no client library)."""

from __future__ import annotations

import time

from llamactl.server.deployment.manager import DeploymentManager
from llamactl.server.errors import LlamactlError
from llamactl.server.types import ReplicaState, TaskStatus

__all__ = ["render_metrics"]


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


async def render_metrics(manager: DeploymentManager, started_at: float) -> str:
    """Tasks by deployment/service/status, replicas ready and desired, in-flight tasks, uptime."""
    lines = [
        "# HELP llamactl_uptime_seconds Seconds since the API server started.",
        "# TYPE llamactl_uptime_seconds gauge",
        f"llamactl_uptime_seconds {time.time() - started_at:.3f}",
        "# HELP llamactl_deployments Deployments that are running.",
        "# TYPE llamactl_deployments gauge",
        f"llamactl_deployments {len(manager.running())}",
    ]
    tasks: list[str] = []
    ready: list[str] = []
    desired: list[str] = []
    in_flight: list[str] = []
    health: list[str] = []
    reachable: list[str] = []
    store_reachable: list[str] = []
    for deployment in manager.running():
        dep = _label(deployment.name)
        # First: while the store does not answer, the counts below cannot be read, and these say why.
        reachable.append(
            f'llamactl_message_queue_reachable{{deployment="{dep}"}} {int(deployment.queue_outage is None)}'
        )
        store_reachable.append(
            f'llamactl_state_store_reachable{{deployment="{dep}"}} {int(deployment.store_outage is None)}'
        )
        try:
            cp = deployment.control_plane
            counts = await cp.task_counts()  # from the store's counters: no task is read
            statuses = deployment.services()
        except LlamactlError:
            continue  # it is stopping right now
        state = deployment.health()
        for key in (
            "late_results",
            "late_events",
            "superseded_events",
            "malformed_reports",
            "retried_reports",
            "reordered_reports",
            "reports_without_predecessor",
            "pruned_tasks",
        ):
            health.append(f'llamactl_{key}_total{{deployment="{dep}"}} {state[key]}')
        for name, loop in cp.loops.health.items():
            health.append(
                f'llamactl_loop_restarts_total{{deployment="{dep}",loop="{_label(name)}"}} {loop.restarts}'
            )
        for status in statuses:
            svc = _label(status.service_id)
            where = f'deployment="{dep}",service="{svc}"'
            for task_status in TaskStatus:
                n = counts.get(status.service_id, {}).get(task_status.value, 0)
                tasks.append(f'llamactl_tasks{{{where},status="{task_status.value}"}} {n}')
            n_ready = sum(1 for r in status.replicas if r.state is ReplicaState.READY)
            ready.append(f"llamactl_replicas_ready{{{where}}} {n_ready}")
            desired.append(f"llamactl_replicas_desired{{{where}}} {status.desired_replicas}")
            in_flight.append(f"llamactl_tasks_in_flight{{{where}}} {status.in_flight}")
    lines += [
        "# HELP llamactl_tasks Tasks stored, by deployment, service and status.",
        "# TYPE llamactl_tasks gauge",
        *tasks,
        "# HELP llamactl_replicas_ready Replicas ready to take tasks.",
        "# TYPE llamactl_replicas_ready gauge",
        *ready,
        "# HELP llamactl_replicas_desired Replicas the deployment file asks for.",
        "# TYPE llamactl_replicas_desired gauge",
        *desired,
        "# HELP llamactl_tasks_in_flight Tasks running on the service's replicas right now.",
        "# TYPE llamactl_tasks_in_flight gauge",
        *in_flight,
        "# HELP llamactl_message_queue_reachable 1 while the server reaches the deployment's message queue.",
        "# TYPE llamactl_message_queue_reachable gauge",
        *reachable,
        "# HELP llamactl_state_store_reachable 1 while the server reaches the deployment's state store.",
        "# TYPE llamactl_state_store_reachable gauge",
        *store_reachable,
        "# HELP llamactl_late_results_total Results ignored: another attempt had finished the task already.",
        "# TYPE llamactl_late_results_total counter",
        "# HELP llamactl_loop_restarts_total Restarts of a control plane background loop after it failed.",
        "# TYPE llamactl_loop_restarts_total counter",
        *health,
    ]
    return "\n".join(lines) + "\n"
