"""``python -m bench.reload``: hot reload under ``llamactl serve --watch``.

Two figures, on a one-service deployment whose function answers its version string:

* **save -> new answer**: the source file is rewritten, then one keep-alive connection sends
  ``tasks/run`` back to back until the answer is the new version; the time from just before the
  write to that answer. Repeated, with the old generation retired between runs.
* **reloads under load**: N clients send ``tasks/run`` non-stop while the file is rewritten
  ``reloads`` times, each time waiting until the new version answers and the old workers are
  gone. A failed task is a non-200 answer, a transport error, or a body that is not one of the
  versions written so far.

``python -m bench.roundtrip`` runs this too and adds the figures to its table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.cached_env import byte_compile
from bench.http_client import HttpConnection, HttpError, build_request
from bench.procfs import machine_cpu, tree_usage
from bench.report import Figure, render_json, render_table
from bench.server_proc import ServerProcess
from bench.stats import percentile

__all__ = [
    "ReloadFigures",
    "ReloadOptions",
    "figures",
    "main",
    "measure_reload",
    "write_reload_deployment",
]

DEPLOYMENT = "bench-reload"
SERVICE = "hot"
_RUN_PATH = f"/deployments/{DEPLOYMENT}/tasks/run"
_SERVICES_PATH = f"/deployments/{DEPLOYMENT}/services"
_BODY = {"input": "{}", "service_id": SERVICE}
_DEADLINE = 60.0
"""Seconds a single reload may take before the benchmark gives up."""


@dataclass(frozen=True, slots=True)
class ReloadOptions:
    """How many reloads of each kind, and how many load clients."""

    runs: int = 5
    """Timed save -> new answer reloads."""
    reloads: int = 20
    """Reloads under continuous load."""
    clients: int = 8
    replicas: int = 1


@dataclass(slots=True)
class ReloadFigures:
    """What was measured (seconds; counts of tasks)."""

    save_to_answer: list[float] = field(default_factory=list)
    under_load: list[float] = field(default_factory=list)
    """Save -> new answer of each reload under load."""
    done: int = 0
    failed: int = 0
    first_error: str | None = None
    load_seconds: float = 0.0
    other_load: dict[str, float] = field(default_factory=dict)
    """Cores used by other work on the machine during each phase (``idle``, ``load``)."""


class _OtherLoad:
    """Cores the machine spent on anything but this process and the server's tree over a phase."""

    def __init__(self, server_pid: int) -> None:
        self._pid = server_pid
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        return (time.perf_counter(), machine_cpu().busy, time.process_time(), _server_cpu(self._pid))

    def cores(self) -> float:
        end = self._sample()
        wall, busy, mine, server = (b - a for a, b in zip(self._start, end, strict=True))
        return max(0.0, busy - mine - server) / wall if wall > 0 else math.nan


def _server_cpu(pid: int) -> float:
    """CPU seconds of the server, its live workers, and the workers it has reaped (retired ones)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")  # cutime + cstime
    return tree_usage(pid).cpu_seconds + reaped


def _source(version: str) -> str:
    return f'VERSION = "{version}"\n\n\nasync def answer() -> str:\n    return VERSION\n'


def write_reload_deployment(folder: Path, replicas: int = 1) -> Path:
    """``deployment.yml`` with one service answering ``"v0"`` from ``src/hot.py``; returns the file."""
    src = folder / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "hot.py").write_text(_source("v0"))
    file = folder / "deployment.yml"
    file.write_text(
        f"name: {DEPLOYMENT}\n"
        "services:\n"
        f"  {SERVICE}:\n"
        "    name: Hot\n"
        "    source: {type: local, location: src}\n"
        "    path: hot:answer\n"
        f"    replicas: {replicas}\n"
        "    max-concurrency: 64\n"
    )
    return file


def _expected(version: str) -> bytes:
    return json.dumps(version).encode()


async def _until_answered(conn: HttpConnection, raw: bytes, body: bytes) -> float:
    """Send ``raw`` back to back until the answer is ``body``; ``perf_counter()`` at that answer."""
    deadline = time.perf_counter() + _DEADLINE
    while time.perf_counter() < deadline:
        try:
            response = await conn.send(raw)
        except (HttpError, OSError, asyncio.IncompleteReadError):
            await conn.close()
            continue
        if response.status == 200 and response.body == body:
            return time.perf_counter()
    raise TimeoutError(f"the new code did not answer {body!r} within {_DEADLINE}s")


async def _settled(conn: HttpConnection, generation: int) -> None:
    """Wait until every replica of the service is of ``generation`` (the old ones are gone)."""
    deadline = time.perf_counter() + _DEADLINE
    raw = conn.build("GET", _SERVICES_PATH)
    while time.perf_counter() < deadline:
        response = await conn.send(raw)
        if response.status == 200:
            status = next(s for s in response.json() if s["service_id"] == SERVICE)
            replicas = status["replicas"]
            if (
                status["generation"] == generation
                and replicas
                and all(r["generation"] == generation and r["state"] == "ready" for r in replicas)
            ):
                return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"generation {generation} did not take over alone within {_DEADLINE}s")


class _Reloader:
    """Rewrites the service's source and tracks the versions written so far."""

    def __init__(self, file: Path) -> None:
        self.file = file
        self.generation = 1
        self.versions = {_expected("v0")}

    def save(self) -> bytes:
        self.generation += 1
        version = f"v{self.generation - 1}"
        self.versions.add(_expected(version))
        self.file.write_text(_source(version))
        return _expected(version)


async def _save_to_answer(server: ServerProcess, reloader: _Reloader, runs: int) -> list[float]:
    times: list[float] = []
    raw = build_request("POST", server.host, server.port, _RUN_PATH, _BODY)
    async with (
        HttpConnection(server.host, server.port) as conn,
        HttpConnection(server.host, server.port) as control,
    ):
        for _ in range(runs):
            started = time.perf_counter()
            body = reloader.save()
            times.append(await _until_answered(conn, raw, body) - started)
            await _settled(control, reloader.generation)
    return times


async def _under_load(
    server: ServerProcess, reloader: _Reloader, reloads: int, clients: int, out: ReloadFigures
) -> None:
    raw = build_request("POST", server.host, server.port, _RUN_PATH, _BODY)
    stop = False
    wanted = b""
    seen = asyncio.Event()

    async def client() -> None:
        async with HttpConnection(server.host, server.port) as conn:
            while not stop:
                try:
                    response = await conn.send(raw)
                except (HttpError, OSError, asyncio.IncompleteReadError) as exc:
                    out.failed += 1
                    out.first_error = out.first_error or f"{type(exc).__name__}: {exc}"
                    await conn.close()
                    continue
                if response.status != 200 or response.body not in reloader.versions:
                    out.failed += 1
                    out.first_error = out.first_error or f"{response.status} {response.body[:300]!r}"
                    continue
                out.done += 1
                if response.body == wanted:
                    seen.set()

    started = time.perf_counter()
    tasks = [asyncio.create_task(client()) for _ in range(clients)]
    try:
        async with HttpConnection(server.host, server.port) as control:
            for _ in range(reloads):
                seen.clear()
                saved = time.perf_counter()
                wanted = reloader.save()
                async with asyncio.timeout(_DEADLINE):
                    await seen.wait()
                out.under_load.append(time.perf_counter() - saved)
                await _settled(control, reloader.generation)
    finally:
        stop = True
        await asyncio.gather(*tasks)
    out.load_seconds = time.perf_counter() - started


async def measure_reload(opts: ReloadOptions) -> ReloadFigures:
    """Start ``llamactl serve --watch`` on a generated deployment and measure both figures."""
    out = ReloadFigures()
    with tempfile.TemporaryDirectory(prefix="llamactl-bench-reload-") as tmp:
        file = write_reload_deployment(Path(tmp), opts.replicas)
        argv = [sys.executable, "-m", "llamactl", "serve", str(file), "--watch", "--port", "0"]
        async with ServerProcess(argv, cwd=Path(tmp), start_timeout=120) as server:
            reloader = _Reloader(Path(tmp) / "src" / "hot.py")
            async with HttpConnection(server.host, server.port) as conn:
                await _until_answered(
                    conn, build_request("POST", server.host, server.port, _RUN_PATH, _BODY), _expected("v0")
                )
            other = _OtherLoad(server.pid)
            out.save_to_answer = await _save_to_answer(server, reloader, opts.runs)
            out.other_load["idle"] = other.cores()
            other = _OtherLoad(server.pid)
            await _under_load(server, reloader, opts.reloads, opts.clients, out)
            out.other_load["load"] = other.cores()
    return out


def _p50(values: Sequence[float]) -> float:
    return percentile(sorted(values), 50)


def figures(opts: ReloadOptions, got: ReloadFigures) -> list[Figure]:
    """The reload rows of the table."""
    p50, top = _p50(got.save_to_answer), max(got.save_to_answer, default=math.nan)
    loaded = _p50(got.under_load)
    runs, reloads, clients = len(got.save_to_answer), len(got.under_load), opts.clients
    idle, busy = got.other_load.get("idle"), got.other_load.get("load")
    return [
        Figure(
            "llamactl.reload.save_to_answer_p50_s",
            f"reload: save -> new code answers, p50 of {runs}",
            p50,
            "s",
            target="< 1 s",
            met=None if math.isnan(p50) else p50 < 1,
            other_load=idle,
        ),
        Figure(
            "llamactl.reload.save_to_answer_max_s",
            f"reload: save -> new code answers, max of {runs}",
            top,
            "s",
            target="< 1 s",
            met=None if math.isnan(top) else top < 1,
            other_load=idle,
        ),
        Figure(
            "llamactl.reload.under_load_failed",
            f"reload: failed tasks during {reloads} reloads, {clients} clients",
            float(got.failed),
            "tasks",
            target="0",
            met=got.failed == 0 and reloads == opts.reloads,
            other_load=busy,
        ),
        Figure(
            "llamactl.reload.under_load_done",
            f"reload: tasks done during {reloads} reloads ({got.load_seconds:.1f} s)",
            float(got.done),
            "tasks",
            other_load=busy,
        ),
        Figure(
            "llamactl.reload.under_load_save_to_answer_p50_s",
            f"reload: save -> new code answers under load, p50 of {reloads}",
            loaded,
            "s",
            other_load=busy,
        ),
    ]


def parse_args(argv: Sequence[str] | None = None) -> tuple[ReloadOptions, bool]:
    """Options from the command line, and whether to print JSON."""
    parser = argparse.ArgumentParser(prog="python -m bench.reload", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=None, help="timed reloads (default 5)")
    parser.add_argument("--reloads", type=int, default=None, help="reloads under load (default 20)")
    parser.add_argument("--clients", type=int, default=8, help="load clients (default 8)")
    parser.add_argument("--replicas", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 timed reloads, 3 under load")
    ns = parser.parse_args(argv)
    quick = bool(ns.quick)
    runs = ns.runs if ns.runs is not None else (2 if quick else 5)
    reloads = ns.reloads if ns.reloads is not None else (3 if quick else 20)
    return ReloadOptions(runs, reloads, ns.clients, ns.replicas), bool(ns.json)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the reload figures."""
    opts, as_json = parse_args(argv)
    import uvloop  # noqa: PLC0415

    byte_compile()
    got = uvloop.run(measure_reload(opts))
    rows = figures(opts, got)
    if as_json:
        print(render_json(rows, {"options": {k: getattr(opts, k) for k in ReloadOptions.__slots__}}))
    else:
        print(render_table(rows))
        if got.first_error:
            print(f"\nfirst failed task: {got.first_error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
