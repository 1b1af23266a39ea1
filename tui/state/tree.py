"""The control-plane state as a tree: registry (services and their replicas), sessions and Context sizes.

Nodes are updated in place, so what the user expanded or collapsed stays that way as the state moves.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import BindingType
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from llamactl.server.types import ReplicaStatus
from llamactl.tui.model.dashboard import DashboardModel
from llamactl.tui.model.format import ago, short_id, size
from llamactl.tui.model.services import ServiceRow
from llamactl.tui.model.sessions import SessionRow
from llamactl.tui.palette import Palette

__all__ = ["StateTree"]


class StateTree(Tree[str]):
    """``deployment`` → ``registry`` → services → replicas; ``sessions`` → each with its Context size."""

    BINDINGS: ClassVar[list[BindingType]] = []

    DEFAULT_CSS = """
    StateTree { height: 1fr; padding: 0 1; background: $surface; }
    """

    def __init__(self, model: DashboardModel, shown_sessions: int, *, id: str | None = None) -> None:
        super().__init__(Text("deployment"), id=id)
        self.model = model
        self.shown_sessions = shown_sessions
        self.palette = Palette()
        self.show_root = True
        self._registry = self.root.add(Text("registry"), "registry", expand=True)
        self._sessions = self.root.add(Text("sessions"), "sessions", expand=True)
        self._services: dict[str, TreeNode[str]] = {}
        self._replicas: dict[str, TreeNode[str]] = {}
        self._session_nodes: dict[str, TreeNode[str]] = {}
        self.root.expand()

    def shown_session_ids(self, picked: str | None) -> list[str]:
        """The sessions the tree shows: the newest few, and the one picked in the sessions list."""
        ids = [s.session_id for s in self.model.sessions.newest(self.shown_sessions)]
        if picked is not None and picked not in ids and picked in self.model.sessions:
            ids.append(picked)
        return ids

    def redraw(self, deployment: str | None, picked: str | None) -> None:
        counts = self.model.counts
        root = Text(f"deployment {deployment or '?'}", style="bold")
        root.append(
            f"  {counts['queued']} queued · {counts['running']} running",
            style=self.palette.muted,
        )
        self.root.set_label(root)
        self._redraw_registry()
        self._redraw_sessions(picked)

    def _redraw_registry(self) -> None:
        services = list(self.model.services)
        self._registry.set_label(Text(f"registry · {len(services)} services"))
        wanted = {s.service_id for s in services}
        for service_id in list(self._services):
            if service_id not in wanted:
                self._services.pop(service_id).remove()
        for service in services:
            node = self._services.get(service.service_id)
            if node is None:
                node = self._services[service.service_id] = self._registry.add(
                    self._service_label(service), service.service_id, expand=True
                )
            else:
                node.set_label(self._service_label(service))
            self._redraw_replicas(node, service)

    def _redraw_replicas(self, node: TreeNode[str], service: ServiceRow) -> None:
        wanted = set(service.replicas)
        for child in list(node.children):
            if child.data not in wanted:
                self._replicas.pop(child.data or "", None)
                child.remove()
        for replica_id, replica in sorted(service.replicas.items()):
            leaf = self._replicas.get(replica_id)
            if leaf is None or leaf.parent is not node:
                self._replicas[replica_id] = node.add_leaf(self._replica_label(replica), replica_id)
            else:
                leaf.set_label(self._replica_label(replica))

    def _service_label(self, service: ServiceRow) -> Text:
        label = Text(f"{service.service_id} ", style="bold")
        label.append(service.state, style=self.palette.service_state(service.state))
        label.append(
            f" · {service.ready}/{service.wanted} ready · gen {service.status.generation}",
            style=self.palette.muted,
        )
        return label

    def _replica_label(self, replica: ReplicaStatus) -> Text:
        label = Text(f"{replica.replica_id} ")
        state = replica.state.value
        styles = {"ready": self.palette.success, "crashed": self.palette.error}
        style = styles.get(state, self.palette.warning)
        label.append(state, style=style)
        busy = f"{replica.in_flight}/{replica.max_concurrency} busy"
        if replica.concurrency_limit is not None and replica.concurrency_limit < replica.max_concurrency:
            busy += f" ({replica.concurrency_limit} at once)"  # its tasks compute: see the README
        details = [f"gen {replica.generation}", busy]
        if replica.pid:
            details.append(f"pid {replica.pid}")
        if replica.last_heartbeat:
            details.append(f"seen {ago(self.model.now() - replica.last_heartbeat)} ago")
        if replica.restarts:
            details.append(f"{replica.restarts} restarts")
        label.append(" · " + " · ".join(details), style=self.palette.muted)
        if replica.last_error:
            label.append(f" · {replica.last_error}", style=self.palette.error)
        return label

    def _redraw_sessions(self, picked: str | None) -> None:
        ids = self.shown_session_ids(picked)
        total = len(self.model.sessions)
        self._sessions.set_label(Text(f"sessions · {total} known · Context size of the newest {len(ids)}"))
        # The leaves are slots relabelled in place: adding and removing nodes would lay the tree
        # out again, and the newest sessions change all the time on a busy deployment.
        leaves = list(self._sessions.children)
        while len(leaves) > len(ids):
            leaves.pop().remove()
        while len(leaves) < len(ids):
            leaves.append(self._sessions.add_leaf(Text(""), ""))
        self._session_nodes = {}
        for leaf, session_id in zip(leaves, ids, strict=True):
            row = self.model.sessions.get(session_id)
            if row is None:
                continue
            leaf.data = session_id
            leaf.set_label(self._session_label(row))
            self._session_nodes[session_id] = leaf

    def _session_label(self, session: SessionRow) -> Text:
        label = Text(f"{short_id(session.session_id)} ")
        label.append(f"{len(session.task_ids)} tasks", style=self.palette.muted)
        context = size(session.context_bytes) if session.context_known else "…"
        if session.context_known and session.context_bytes is None:
            context = "none saved"
        label.append(f" · Context {context}")
        return label
