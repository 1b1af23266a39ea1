"""The anchor's part of ``python -m bench.roundtrip --anchor``: what is measured, in which order.

Llama Deploy 0.9.2, llamactl, the one-hop floor (its workflow echo with one worker, its CPU
step with as many workers as llamactl's replicas) and the durable floor (its workflow echo, each
task stored before and its answer after) are measured in alternating rounds
(``bench/rounds.py``), each figure the median over the rounds; when Llama
Deploy's environment runs another ``llama-index-workflows`` than ours, llamactl and the floor
join the rounds a second time on that library (``bench/cached_env.py``). Llama Deploy 0.8.1,
whose every task takes a second, is measured once at the end.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from bench.anchor import (
    ANCHOR_VERSIONS,
    CPU_CLIENTS,
    CPU_REPLICAS,
    AnchorUnavailable,
    ProductFigures,
    anchor_argv,
    anchor_python,
    llamactl_argv,
    llamactl_argv_in,
    measure_legacy,
    measure_product,
    median_product,
    same_library_python,
)
from bench.anchor_report import AnchorRun, SameLibrary, anchor_figures
from bench.cached_env import REPO_ROOT, checkout_python, installed_version
from bench.measure import ECHO_BODY, Throughput, measure_endpoint
from bench.report import Figure
from bench.rounds import alternate, median_throughput
from bench.server_proc import ServerProcess

__all__ = ["measure_anchor", "measure_floor", "same_library"]

_WORKFLOWS = "llama-index-workflows"
_WF_BODY = {**ECHO_BODY, "service_id": "wf"}

Measure = Callable[[], Awaitable[ProductFigures | Throughput]]


async def measure_floor(
    python: Path,
    path: str,
    *,
    clients: Sequence[int],
    duration: float,
    warmup: float,
    workers: int = 1,
    durable: bool = False,
) -> Throughput:
    """The floor's endpoint ``path`` (``bench/floor_server.py``: ``/workflow`` or ``/cpu``),
    forwarding to ``workers`` workers (``durable``: storing each task and its answer), run by
    ``python`` on the checkout's sources."""
    argv = [*checkout_python(python), "-m", "bench.floor_server", "--workers", str(workers)]
    if durable:
        argv.append("--durable")
    async with ServerProcess(argv, cwd=REPO_ROOT) as server:
        return await measure_endpoint(
            server.host,
            server.port,
            path,
            _WF_BODY,
            clients=clients,
            duration=duration,
            warmup=warmup,
            server_pid=server.pid,
        )


def same_library(workflows: str, *, say: Callable[[str], None] = print) -> Path | None:
    """The interpreter of llamactl's environment on Llama Deploy's ``workflows`` version, or None
    when ours runs that version already, or when it cannot be installed (said through ``say``:
    the rest of the anchor is still worth its run)."""
    if workflows == installed_version(_WORKFLOWS):
        return None
    try:
        return same_library_python(workflows, say=say)
    except AnchorUnavailable as exc:
        say(f"measuring without the same-library block: {exc}")
        return None


async def measure_anchor(
    *,
    clients: Sequence[int],
    duration: float,
    warmup: float,
    rounds: int,
    say: Callable[[str], None] = print,
) -> list[Figure]:
    """Install what is missing, measure everything, and return the anchor's figures."""
    current, legacy = (anchor_python(v, say=say) for v in ANCHOR_VERSIONS)
    theirs_library = installed_version(_WORKFLOWS, current)
    same_python = same_library(theirs_library, say=say)
    product = functools.partial(measure_product, clients=clients, duration=duration, warmup=warmup)
    floor = functools.partial(measure_floor, duration=duration, warmup=warmup)

    def floors_on(python: Path, suffix: str = "") -> dict[str, Measure]:
        return {
            f"floor{suffix}": lambda: floor(python, "/workflow", clients=clients),
            f"floor CPU step{suffix}": lambda: floor(
                python, "/cpu", clients=(CPU_CLIENTS,), workers=CPU_REPLICAS
            ),
            f"durable floor{suffix}": lambda: floor(python, "/workflow", clients=clients, durable=True),
        }

    measures: dict[str, Measure] = {
        "Llama Deploy 0.9.2": lambda: product(anchor_argv(current)),
        "llamactl": lambda: product(llamactl_argv),
        **floors_on(Path(sys.executable)),
    }
    if same_python is not None:
        python = same_python
        measures["llamactl, same library"] = lambda: product(llamactl_argv_in(python))
        measures.update(floors_on(python, ", same library"))
    done = await alternate(rounds, measures, say=say)

    def products(name: str) -> ProductFigures:
        return median_product([r for r in done[name] if isinstance(r, ProductFigures)])

    def floors(name: str) -> Throughput:
        return median_throughput([r for r in done[name] if isinstance(r, Throughput)])

    old = await measure_legacy(legacy, duration=duration, warmup=warmup)
    same = None
    if same_python is not None:
        same = SameLibrary(
            theirs_library,
            products("llamactl, same library"),
            floors("floor, same library"),
            floors("floor CPU step, same library"),
            floors("durable floor, same library"),
        )
    ours, theirs = products("llamactl"), products("Llama Deploy 0.9.2")
    run = AnchorRun(
        ours, theirs, old, floors("floor"), same, floors("floor CPU step"), floors("durable floor")
    )
    return anchor_figures(run)
