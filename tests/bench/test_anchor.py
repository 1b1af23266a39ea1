"""The anchor's pieces that need no Llama Deploy install: its deployment files, its report, and
what happens when the install fails (no timing assertions)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.anchor import (
    CPU_CLIENTS,
    IO_CLIENTS,
    AnchorUnavailable,
    ProductFigures,
    _free_ports,
    _legacy_keys,
    anchor_python,
)
from bench.anchor_report import AnchorRun, SameLibrary, anchor_figures
from bench.anchor_run import same_library
from bench.cached_env import REPO_ROOT, checkout_python, installed_version, llamactl_requirements
from bench.deployment import ANCHOR_SERVICES, write_deployment
from bench.measure import Throughput
from bench.report import render_table
from bench.stats import summarize


def _product(p50: float, rate: float, io_p99: float, rss_mb: int) -> ProductFigures:
    workflow = Throughput(
        sequential=summarize([p50]), rates={1: rate / 2, 8: rate, 32: rate}, server_cpu_ms={32: 0.5}
    )
    cpu = Throughput(rates={CPU_CLIENTS: rate / 5})
    io = Throughput(rates={IO_CLIENTS: rate / 2}, loaded={IO_CLIENTS: summarize([io_p99])})
    return ProductFigures(workflow, cpu, io, rss_mb * 1024 * 1024)


def test_anchor_figures_compare_with_llama_deploy_as_ratios() -> None:
    ours = _product(0.0008, 2000.0, 0.070, 100)
    theirs = _product(0.0010, 1000.0, 0.060, 120)
    floor = Throughput(sequential=summarize([0.0009]))
    figures = {f.key: f for f in anchor_figures(AnchorRun(ours, theirs, None, floor))}
    assert figures["anchor.workflow.p50_ms"].ratio == pytest.approx(0.8)
    assert figures["anchor.workflow.p50_ms"].met is True
    assert figures["anchor.workflow.tps_8"].ratio == pytest.approx(2.0)
    assert figures["anchor.workflow.tps_32"].met is True
    assert figures["anchor.cpu.tps"].met is True  # 2.0x >= 1.8x
    assert figures["anchor.io.tps"].met is True
    assert figures["anchor.io.p99_ms"].ratio == pytest.approx(70 / 60)
    assert figures["anchor.io.p99_ms"].met is True  # 1.17x <= 1.2x
    assert figures["anchor.memory_mb"].met is True
    assert figures["anchor.floor.workflow.p50_ms"].ratio == pytest.approx(0.9)
    assert "anchor.workflow.p50_vs_ld081_ms" not in figures  # 0.8.1 not measured

    slower = _product(0.0030, 900.0, 0.2, 130)
    legacy = Throughput(sequential=summarize([0.62]), rates={1: 1.5, 8: 2.5})
    figures = {f.key: f for f in anchor_figures(AnchorRun(slower, theirs, legacy, floor))}
    for key in ("anchor.workflow.p50_ms", "anchor.workflow.tps_8", "anchor.io.p99_ms", "anchor.memory_mb"):
        assert figures[key].met is False, key
    assert figures["anchor.workflow.tps_8_vs_ld081"].ratio == pytest.approx(360.0)
    table = render_table(list(figures.values()))
    assert "Llama Deploy 0.9.2: workflow echo p50" in table
    assert "LD 0.8.1" in table


def test_the_same_library_run_is_compared_with_llama_deploy_too() -> None:
    ours = _product(0.0030, 900.0, 0.2, 130)  # on our own library: slower than Llama Deploy
    theirs = _product(0.0010, 1000.0, 0.060, 120)
    same = _product(0.0009, 1600.0, 0.065, 110)  # on Llama Deploy's library
    floor = Throughput(sequential=summarize([0.0005]), rates={8: 2000.0, 32: 2100.0})
    run = AnchorRun(ours, theirs, None, floor, SameLibrary("1.3.0", same, floor))
    figures = {f.key: f for f in anchor_figures(run)}
    assert figures["anchor.workflow.p50_ms"].met is False
    assert figures["anchor.same_library.workflow.p50_ms"].ratio == pytest.approx(0.9)
    assert figures["anchor.same_library.workflow.p50_ms"].met is True
    assert figures["anchor.same_library.workflow.tps_8"].met is True  # 1.6x >= 1.5x
    assert figures["anchor.same_library.memory_mb"].met is True
    assert figures["anchor.same_library.floor.workflow.tps_32"].ratio == pytest.approx(2.1)
    assert figures["anchor.floor.workflow.tps_8"].ratio == pytest.approx(2.0)
    assert "llamactl on workflows 1.3.0: workflow echo p50" in render_table(list(figures.values()))
    assert not any(
        key.startswith("anchor.same_library") for key in _keys(AnchorRun(ours, theirs, None, floor))
    )


def test_the_cpu_step_has_its_floor_beside_it() -> None:
    ours = _product(0.0030, 900.0, 0.2, 130)  # CPU step: 180/s
    theirs = _product(0.0010, 1000.0, 0.060, 120)  # CPU step: 200/s
    floor = Throughput(sequential=summarize([0.0005]), rates={8: 2000.0})
    cpu_floor, same_cpu_floor = Throughput(rates={CPU_CLIENTS: 350.0}), Throughput(rates={CPU_CLIENTS: 380.0})
    same = SameLibrary("1.3.0", ours, floor, same_cpu_floor)
    figures = {f.key: f for f in anchor_figures(AnchorRun(ours, theirs, None, floor, same, cpu_floor))}
    assert figures["anchor.floor.cpu.tps"].ratio == pytest.approx(1.75)  # against Llama Deploy's
    assert figures["anchor.same_library.floor.cpu.tps"].ratio == pytest.approx(1.9)
    assert figures["anchor.cpu.tps"].ratio == pytest.approx(0.9)
    assert f"~5 ms CPU step, {CPU_CLIENTS} clients (2 workers)" in figures["anchor.floor.cpu.tps"].label
    unmeasured = {f.key: f for f in anchor_figures(AnchorRun(ours, theirs, None, floor))}
    assert math.isnan(unmeasured["anchor.floor.cpu.tps"].value)


def test_the_durable_floor_is_compared_with_llama_deploy_on_both_libraries() -> None:
    ours = _product(0.0030, 900.0, 0.2, 130)
    theirs = _product(0.0010, 1000.0, 0.060, 120)
    floor = Throughput(sequential=summarize([0.0005]), rates={8: 2000.0})
    durable = Throughput(sequential=summarize([0.0012]), rates={1: 800.0, 8: 1700.0})
    same_durable = Throughput(sequential=summarize([0.0008]), rates={8: 1900.0})
    same = SameLibrary("1.3.0", ours, floor, durable_workflow=same_durable)
    run = AnchorRun(ours, theirs, None, floor, same, durable_workflow=durable)
    figures = {f.key: f for f in anchor_figures(run)}
    # its p50 above Llama Deploy's: no design that stores each task and its result meets <= 1x
    assert figures["anchor.durable_floor.workflow.p50_ms"].ratio == pytest.approx(1.2)
    assert figures["anchor.durable_floor.workflow.tps_8"].ratio == pytest.approx(1.7)
    assert "anchor.durable_floor.workflow.tps_1" not in figures  # throughput from 8 clients up
    assert figures["anchor.same_library.durable_floor.workflow.p50_ms"].ratio == pytest.approx(0.8)
    assert "durable floor on workflows 1.3.0: workflow echo, 8 clients" in render_table(
        list(figures.values())
    )
    unmeasured = {f.key: f for f in anchor_figures(AnchorRun(ours, theirs, None, floor))}
    assert math.isnan(unmeasured["anchor.durable_floor.workflow.p50_ms"].value)


def _keys(run: AnchorRun) -> set[str]:
    return {f.key for f in anchor_figures(run)}


def test_the_same_library_environment_runs_the_checkout(tmp_path: Path) -> None:
    requirements = llamactl_requirements()
    assert any(req.startswith("llama-index-workflows") for req in requirements)
    assert any(req.startswith("pyzmq") for req in requirements)
    code = "import llamactl, bench.floor_server; print(llamactl.__file__)"
    done = subprocess.run(
        [*checkout_python(Path(sys.executable)), "-c", code],
        cwd=tmp_path,  # not the checkout: only PYTHONPATH can find it
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert Path(done.stdout.strip()).is_relative_to(REPO_ROOT)


def test_missing_figures_have_no_verdict() -> None:
    empty = ProductFigures(Throughput(), Throughput(), Throughput(), 0)
    figures = anchor_figures(AnchorRun(empty, empty, None, Throughput()))
    assert all(f.met is None for f in figures)
    assert all(f.ratio is None or not math.isnan(f.ratio) for f in figures)


def test_the_anchor_deployment_is_valid_for_llamactl(tmp_path: Path) -> None:
    file = write_deployment(tmp_path, 1, 64, ANCHOR_SERVICES, source_is_folder=True)
    data = yaml.safe_load(file.read_text())
    assert data["services"]["cpu"]["replicas"] == 2
    assert data["services"]["wf"]["import-path"] == "src/bench_services:echo_workflow"
    done = subprocess.run(
        [sys.executable, "-m", "llamactl", "validate", str(file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cpu: ok (workflow CpuWorkflow)" in done.stdout


def test_legacy_keys_give_each_server_its_own_port(tmp_path: Path) -> None:
    file = write_deployment(tmp_path, 1, 64, ANCHOR_SERVICES, source_is_folder=True)
    _legacy_keys(file)
    data = yaml.safe_load(file.read_text())
    service = data["services"]["wf"]
    assert service["path"] == "src/bench_services:echo_workflow"
    assert service["source"] == {"type": "local", "location": ".", "name": "."}
    ports = [s["port"] for s in data["services"].values()]
    ports += [data["control-plane"]["port"], data["message-queue"]["port"]]
    assert len(ports) == len(ANCHOR_SERVICES) + 2
    assert len(set(ports)) == len(ports)
    assert data["message-queue"]["type"] == "simple"
    assert all(s["replicas"] >= 1 for s in data["services"].values())


def test_free_ports_are_distinct() -> None:
    ports = _free_ports(64)
    assert len(set(ports)) == 64


def test_a_failed_install_says_what_went_wrong(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # nothing to install from: pip fails at once
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    with pytest.raises(
        AnchorUnavailable, match=r"could not install llama-deploy==0\.9\.2 .*run without --anchor"
    ):
        anchor_python("0.9.2", say=lambda _line: None)
    assert not (tmp_path / "llamactl-bench" / "llama-deploy-0.9.2" / ".llamactl-bench-ready").exists()


def test_a_failed_same_library_install_leaves_the_rest_of_the_anchor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # nothing to install from: pip fails at once
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    said: list[str] = []
    assert same_library(installed_version("llama-index-workflows"), say=said.append) is None
    assert said == []  # ours runs that version already: nothing to install
    assert same_library("1.3.0", say=said.append) is None
    assert "measuring without the same-library block" in said[-1]
    assert "llama-index-workflows==1.3.0" in said[-1]
