"""Write the benchmark's deployments (file + sources) into a folder."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ANCHOR_SERVICES",
    "DEFAULT_SERVICES",
    "DEPLOYMENT",
    "MEMORY_SERVICES",
    "BenchService",
    "write_deployment",
]

DEPLOYMENT = "bench"
"""The deployment's name."""


@dataclass(frozen=True, slots=True)
class BenchService:
    """One service of a generated deployment; ``replicas=None`` takes the run's ``--replicas``."""

    name: str
    path: str
    replicas: int | None = None


DEFAULT_SERVICES: Mapping[str, BenchService] = {
    "echo": BenchService("Function echo", "bench_services:echo"),
    "wf": BenchService("Workflow echo", "bench_services:echo_workflow"),
    "stream": BenchService("Streaming workflow", "bench_services:streaming_workflow"),
}
"""The round trip's deployment."""

ANCHOR_SERVICES: Mapping[str, BenchService] = {
    "wf": BenchService("Workflow echo", "bench_services:echo_workflow"),
    "cpu": BenchService("A ~5 ms CPU step", "bench_services:cpu_workflow", replicas=2),
    "io": BenchService("A 50 ms awaited step", "bench_services:io_workflow"),
}
"""The deployment served by both llamactl and Llama Deploy (which ignores ``replicas``)."""

MEMORY_SERVICES: Mapping[str, BenchService] = {"wf": ANCHOR_SERVICES["wf"]}
"""One workflow service with one worker: the memory comparison's deployment."""


def write_deployment(
    folder: Path,
    replicas: int = 1,
    max_concurrency: int = 64,
    services: Mapping[str, BenchService] = DEFAULT_SERVICES,
    *,
    source_is_folder: bool = False,
) -> Path:
    """Write ``deployment.yml`` and ``src/bench_services.py`` into ``folder``; return the file.

    ``source_is_folder`` makes the deployment's folder the services' source and the import paths
    ``src/bench_services:...``: the layout Llama Deploy 0.9 needs (it resolves an import path
    from the folder it copied the source into, not from the source's location).
    """
    src = folder / "src"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("services.py"), src / "bench_services.py")
    lines = [f"name: {DEPLOYMENT}", f"default-service: {next(iter(services))}", "services:"]
    for service_id, svc in services.items():
        lines += [
            f"  {service_id}:",
            f"    name: {svc.name}",
            f"    source: {{type: local, location: {'.' if source_is_folder else 'src'}}}",
            f"    import-path: {'src/' if source_is_folder else ''}{svc.path}",
            f"    replicas: {svc.replicas or replicas}",
            f"    max-concurrency: {max_concurrency}",
        ]
    file = folder / "deployment.yml"
    file.write_text("\n".join(lines) + "\n")
    return file
