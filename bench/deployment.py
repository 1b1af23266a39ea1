"""Write the benchmark's deployment (file + sources) into a folder."""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["DEPLOYMENT", "write_deployment"]

DEPLOYMENT = "bench"
"""The deployment's name."""

_SERVICES = {
    "echo": ("Function echo", "bench_services:echo"),
    "wf": ("Workflow echo", "bench_services:echo_workflow"),
    "stream": ("Streaming workflow", "bench_services:streaming_workflow"),
}


def write_deployment(folder: Path, replicas: int = 1, max_concurrency: int = 64) -> Path:
    """Write ``deployment.yml`` and ``src/bench_services.py`` into ``folder``; return the file."""
    src = folder / "src"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(__file__).with_name("services.py"), src / "bench_services.py")
    lines = [f"name: {DEPLOYMENT}", "default-service: echo", "services:"]
    for service_id, (name, path) in _SERVICES.items():
        lines += [
            f"  {service_id}:",
            f"    name: {name}",
            "    source: {type: local, location: src}",
            f"    path: {path}",
            f"    replicas: {replicas}",
            f"    max-concurrency: {max_concurrency}",
        ]
    file = folder / "deployment.yml"
    file.write_text("\n".join(lines) + "\n")
    return file
