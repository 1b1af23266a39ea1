"""Issue #13, point 8: the README runs as written, and every example names what exists.

`test_the_readme_runs_as_written` copies the checkout into a fresh folder and runs README.md's
code blocks there, in order, exactly as printed: the first makes a new virtual environment,
installs llamactl and serves the `basic` template; the next ones talk to that server from "a
second terminal"; the Python blocks run with that venv's Python. The test only sets
LLAMACTL_PORT and LLAMACTL_SERVER, so the server takes a free port instead of 4501 (another
server may hold it) while every command stays as printed. Two commands are not run as written:
`.venv/bin/pytest` runs the whole suite (this test among them), so it only collects it there;
and the Development section's blocks are the suite's and CI's own checks.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from llamactl.cli.main import app
from llamactl.client import Client
from tests.llamactl.serving import LISTENING, REPO, Lines, Server

README = REPO / "README.md"
runner = CliRunner()


@dataclass(frozen=True)
class Block:
    language: str
    code: str
    section: str


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of ``text``, with their language and the ``##`` section they are in."""
    found: list[Block] = []
    section = ""
    lines = iter(text.splitlines())
    for line in lines:
        if line.startswith("## "):
            section = line[3:].strip()
        fence = re.match(r"^```(\w*)\s*$", line)
        if not fence:
            continue
        body: list[str] = []
        for inner in lines:
            if inner.startswith("```"):
                break
            body.append(inner)
        found.append(Block(fence[1], "\n".join(body) + "\n", section))
    return found


def copy_checkout(destination: Path) -> None:
    """The checkout's files (tracked, and new ones git does not ignore), as a fresh clone has them."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file() and not source.is_symlink():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
        elif source.is_symlink():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(os.readlink(source))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fresh_environment(port: int) -> dict[str, str]:
    """This environment without the test's own virtual environment, pointed at a free port."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["LLAMACTL_PORT"] = str(port)
    env["LLAMACTL_SERVER"] = f"http://127.0.0.1:{port}"
    return env


def commands(block: Block) -> list[str]:
    return [line for line in block.code.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def as_run_here(command: str) -> str:
    """The command to run: as printed, but a whole-suite `pytest` only collects the suite."""
    return re.sub(r"\.venv/bin/pytest$", ".venv/bin/pytest --collect-only -q", command)


def expected_output(command: str) -> str | None:
    match = re.search(r"#\s*prints:\s*(.+)$", command)
    return match[1].strip() if match else None


def expected_prints(code: str) -> list[str]:
    """What a Python block's comments say its print() calls print."""
    return [m[1].strip() for m in re.finditer(r"print\(.*\)\s*#\s*(.+)$", code, re.MULTILINE)]


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_readme_runs_as_written(tmp_path: Path) -> None:
    clone = tmp_path / "llamactl"
    copy_checkout(clone)
    port = free_port()
    env = fresh_environment(port)
    blocks = [b for b in readme_blocks(README.read_text()) if b.language in ("bash", "python")]
    runnable = [b for b in blocks if b.section != "Development"]
    assert runnable[0].language == "bash" and "llamactl serve" in runnable[0].code
    server: subprocess.Popen[str] | None = None
    lines: Lines | None = None
    try:
        for number, block in enumerate(runnable, start=1):
            if block.language == "python":
                script = tmp_path / f"block{number}.py"
                script.write_text(block.code)
                done = subprocess.run(
                    [str(clone / ".venv" / "bin" / "python"), str(script)],
                    cwd=clone,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=False,
                )
                assert done.returncode == 0, f"README block {number}:\n{block.code}\n{done.stderr}"
                for expected in expected_prints(block.code):
                    assert expected in done.stdout, f"README block {number}: no {expected!r} in {done.stdout}"
                continue
            for command in commands(block):
                if "llamactl serve" in command:
                    assert server is None, "the README starts one server"
                    server = subprocess.Popen(
                        ["bash", "-c", command],
                        cwd=clone,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                        text=True,
                        start_new_session=True,
                    )
                    assert server.stderr is not None
                    lines = Lines(server.stderr)
                    lines.wait_for(lambda line: LISTENING.search(line) is not None, 900)
                    continue
                done = subprocess.run(
                    ["bash", "-c", as_run_here(command)],
                    cwd=clone,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=900,
                    check=False,
                )
                assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
                expected = expected_output(command)
                if expected is not None:
                    assert done.stdout.strip() == expected, f"{command}: {done.stdout!r}"
        assert server is not None
        os.killpg(server.pid, signal.SIGINT)
        assert server.wait(120) == 0
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        if lines is not None:
            lines.rest()
        if server is not None and server.stderr is not None:
            server.stderr.close()


# --- what the README and --help name exists --------------------------------------------------


def test_the_first_run_is_two_separate_blocks_that_say_what_to_do_next() -> None:
    blocks = readme_blocks(README.read_text())
    first, second = blocks[0], blocks[1]
    assert first.language == "bash" and "llamactl serve" in first.code and "pytest" not in first.code
    text = README.read_text()
    between = text[text.index(first.code) + len(first.code) : text.index(second.code)]
    assert "keeps running" in between and "second terminal" in between
    assert "source .venv/bin/activate" in text
    every_command = [c for b in blocks if b.language == "bash" for c in commands(b)]
    assert all(not c.startswith("llamactl ") for c in every_command), (
        "commands run without activating the venv"
    )


def test_every_link_and_path_of_the_readme_is_in_the_repository() -> None:
    text = README.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    paths = re.findall(r"`([\w./-]+\.(?:md|py|yml|toml))`", text)
    for target in [*links, *paths]:
        if "://" in target or target.startswith(("src/", "workflow")):
            continue
        assert (REPO / target).exists() or (REPO / "templates/basic" / target).exists(), target
    assert "../" not in " ".join(links + paths)


def _templates() -> dict[str, set[str]]:
    """Each template's deployment name and its service ids."""
    found = {}
    for file in sorted((REPO / "templates").glob("*/deployment.yml")):
        data = yaml.safe_load(file.read_text())
        found[data["name"]] = set(data["services"])
    return found


def _help_pages() -> dict[str, str]:
    pages = {}
    for args in (
        [],
        ["run"],
        ["init"],
        ["serve"],
        ["deploy"],
        ["validate"],
        ["tasks", "send-event"],
        ["tasks", "list"],
        ["tasks", "cancel"],
    ):
        result = runner.invoke(app, [*args, "--help"])
        assert result.exit_code == 0
        pages[" ".join(args)] = " ".join(result.stdout.split())
    return pages


def _examples() -> list[str]:
    found = []
    for page in _help_pages().values():
        found += re.findall(r"`(llamactl [^`]+)`", page)
    text = README.read_text()
    found += re.findall(r"`(llamactl [^`]+)`", " ".join(text.split()))
    for block in readme_blocks(text):
        if block.language == "bash":
            found += [
                c.replace(".venv/bin/llamactl", "llamactl") for c in commands(block) if "llamactl " in c
            ]
    return found


def _words(example: str) -> list[str]:
    """The words of the llamactl command in ``example`` (after a `cd x &&`, before a comment)."""
    part = next(p for p in example.split("&&") if "llamactl" in p)
    try:
        return shlex.split(part, comments=True)
    except ValueError:
        return part.split()


def test_every_example_names_a_template_deployment_and_service_that_exist() -> None:
    templates = _templates()
    services = set().union(*templates.values())
    template_folders = {p.name for p in (REPO / "templates").iterdir() if p.is_dir()}
    examples = _examples()
    assert any(e.startswith("llamactl run ") for e in examples)
    flags = {"-d": templates, "-s": services, "--service": services, "--template": template_folders}
    flags["-t"] = template_folders
    for example in examples:
        words = _words(example)
        for flag, known in flags.items():
            if flag in words:
                value = words[words.index(flag) + 1]
                assert value in known or value.isupper(), (
                    f"{example}: {flag} {value} names nothing that exists"
                )
        for path in re.findall(r"templates/[\w-]+/deployment\.yml", example):
            assert (REPO / path).is_file(), example


@pytest.fixture(scope="module")
def streaming(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("streaming")
    shutil.copytree(
        REPO / "templates" / "streaming", folder / "streaming", ignore=shutil.ignore_patterns(".llamactl")
    )
    server = Server(folder / "streaming" / "deployment.yml")
    try:
        yield server
    finally:
        assert server.stop() == 0


def test_the_run_help_examples_run_against_the_streaming_template(streaming: Server) -> None:
    page = _help_pages()["run"]
    examples = re.findall(r"`(llamactl run [^`]+)`", page)
    assert len(examples) == 3
    with Client(streaming.url) as client:
        session = client.deployment("streaming").sessions.create().session_id
    for example in examples:
        argv = shlex.split(example.replace("SESSION", session))[1:]
        result = runner.invoke(app, ["--server", streaming.url, *argv])
        assert result.exit_code == 0, f"{example}: {result.stderr}"
        assert "Processed 'hi' in" in result.stdout, example


def test_deployments_show_tells_the_last_reload_error(tmp_path: Path) -> None:
    shutil.copytree(
        REPO / "templates" / "basic", tmp_path / "basic", ignore=shutil.ignore_patterns(".llamactl")
    )
    server = Server(tmp_path / "basic" / "deployment.yml", extra=["--watch"])
    try:
        source = tmp_path / "basic" / "src" / "workflow.py"
        source.write_text(source.read_text() + "\ndef broken(:\n")
        server.stderr.wait_for(lambda line: line.split()[:2] == ["basic/echo", "failed"], 60)
        shown = runner.invoke(app, ["--server", server.url, "deployments", "show", "basic"])
        as_json = runner.invoke(app, ["--server", server.url, "deployments", "show", "basic", "-o", "json"])
    finally:
        assert server.stop() == 0
    error = json.loads(as_json.stdout)["services"][0]["last_reload_error"]
    assert error and "SyntaxError" in error
    assert "Last reload of echo failed at" in shown.stdout
    assert "(still serving generation 1)" in shown.stdout
    assert "SyntaxError" in shown.stdout
