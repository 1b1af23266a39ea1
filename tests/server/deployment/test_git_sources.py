"""Services whose code is a git repository (``source: {type: git, location: URL[@REF]}``), as
Llama Deploy's files have them: before, llamactl refused them ("'git' sources are not run by
llamactl yet"). Real repositories, cloned over file:// (the tests send nothing off the machine)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from llamactl.client import Client
from llamactl.server.config import DeploymentConfig, load_deployment_file
from llamactl.server.config.paths import git_checkout_in
from llamactl.server.deployment.git_sources import check_out_git_sources, parse_location
from llamactl.server.errors import DeploymentConfigError
from tests.llamactl.serving import Server

ECHO = 'async def echo(message: str) -> str:\n    return "{word}: " + message\n'


def _git(folder: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", *args],
        cwd=folder,
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def make_repo(folder: Path, word: str = "v1") -> Path:
    folder.mkdir(parents=True)
    _git(folder, "init", "--quiet", "--initial-branch", "main")
    commit(folder, word)
    return folder


def commit(repo: Path, word: str) -> str:
    (repo / "mod.py").write_text(ECHO.format(word=word))
    _git(repo, "add", "mod.py")
    _git(repo, "commit", "--quiet", "-m", word)
    return _git(repo, "rev-parse", "HEAD")


def deployment(folder: Path, location: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    file = folder / "deployment.yml"
    file.write_text(
        "name: fromgit\nservices:\n  echo:\n    source:\n      type: git\n"
        f"      location: {location}\n    path: mod:echo\n"
    )
    return file


async def check_out(config: DeploymentConfig) -> list[str]:
    said: list[str] = []
    await check_out_git_sources(config, say=said.append)
    return said


@pytest.mark.parametrize(
    ("text", "url", "ref"),
    [
        (
            "https://github.com/run-llama/llama_deploy.git",
            "https://github.com/run-llama/llama_deploy.git",
            None,
        ),
        ("https://github.com/org/repo.git@v1.2", "https://github.com/org/repo.git", "v1.2"),
        ("git@github.com:org/repo.git", "git@github.com:org/repo.git", None),
        ("git@github.com:org/repo.git@main", "git@github.com:org/repo.git", "main"),
        ("https://user:token@host/repo.git", "https://user:token@host/repo.git", None),
    ],
)
def test_a_location_is_a_url_and_an_optional_ref(text: str, url: str, ref: str | None) -> None:
    where = parse_location(text)
    assert (where.url, where.ref) == (url, ref)
    assert "token" not in where.shown


async def test_each_start_checks_out_the_newest_commit_and_keeps_the_one_before(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "app" / "repo")
    config = load_deployment_file(deployment(tmp_path / "app", f"file://{repo}"))
    with pytest.raises(DeploymentConfigError, match="its git source is not checked out yet"):
        config.source_dir("echo")
    first = _git(repo, "rev-parse", "HEAD")
    assert await check_out(config) == []
    assert config.source_dir("echo") == config.git_sources_dir("echo") / first[:12]
    assert "v1: " in (config.source_dir("echo") / "mod.py").read_text()
    second = commit(repo, "v2")
    await check_out(config)
    await check_out(config)  # the same commit again: nothing new
    assert config.source_dir("echo").name == second[:12]
    third = commit(repo, "v3")
    await check_out(config)
    fourth = commit(repo, "v4")
    stale = config.git_sources_dir("echo") / ".clone-0123456789ab"  # a clone whose process died
    stale.mkdir()
    os.utime(stale, (1, 1))
    await check_out(config)
    kept = {p.name for p in config.git_sources_dir("echo").iterdir() if p.is_dir()}
    # The newest three stay, for workers started from them (a generation still running).
    assert kept == {second[:12], third[:12], fourth[:12]}
    assert config.source_dir("echo").name == fourth[:12]


async def test_a_branch_is_checked_out_when_the_location_names_one(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "app" / "repo")
    _git(repo, "checkout", "--quiet", "-b", "beta")
    commit(repo, "beta")
    _git(repo, "checkout", "--quiet", "main")
    config = load_deployment_file(deployment(tmp_path / "app", "repo@beta"))  # a path, relative
    await check_out(config)
    assert "beta: " in (config.source_dir("echo") / "mod.py").read_text()


async def test_an_unreachable_repository_falls_back_to_its_checkout_and_otherwise_stops_the_start(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path / "app" / "repo")
    file = deployment(tmp_path / "app", f"file://{repo}")
    config = load_deployment_file(file)
    await check_out(config)
    before = config.source_dir("echo")
    repo.rename(tmp_path / "app" / "moved")
    said = await check_out(config)
    assert len(said) == 1 and "could not fetch its git source" in said[0], said
    assert f"it runs the checkout fetched before (commit {before.name})" in said[0]
    assert config.source_dir("echo") == before
    # Another location is not served from the old one's checkout.
    other = load_deployment_file(deployment(tmp_path / "app", f"file://{tmp_path}/app/nowhere"))
    with pytest.raises(DeploymentConfigError) as error:
        await check_out(other)
    assert f"{file}:6: invalid deployment file at 'services.echo.source.location'" in str(error.value)
    assert f"fatal: repository '{tmp_path}/app/nowhere' does not exist" in str(error.value)
    assert git_checkout_in(other.git_sources_dir("echo"), f"file://{tmp_path}/app/nowhere") is None


@pytest.mark.parametrize("location", ["file://{outside}", "{outside}", "../outside"])
async def test_a_repository_on_this_machine_outside_the_deployment_folder_is_refused(
    tmp_path: Path, location: str
) -> None:
    """As a local source must stay inside the folder: a file sent to `deploy` (whose folder the
    server allows) must not run the code of any repository the server's user can read."""
    outside = make_repo(tmp_path / "outside")
    config = load_deployment_file(deployment(tmp_path / "app", location.format(outside=outside)))
    with pytest.raises(
        DeploymentConfigError, match=f"the git repository {outside} is outside the deployment"
    ):
        await check_out(config)
    assert not config.git_sources_dir("echo").exists()


async def test_a_command_transport_is_refused_and_credentials_are_never_shown(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    config = load_deployment_file(deployment(tmp_path / "app", f"ext::sh -c touch% {marker}"))
    with pytest.raises(DeploymentConfigError, match="transport 'ext' not allowed"):
        await check_out(config)
    assert not marker.exists()
    # Port 9 on loopback: nothing listens; the error must not repeat the password.
    secret = load_deployment_file(deployment(tmp_path / "app", "http://someone:s3cret@127.0.0.1:9/repo.git"))
    with pytest.raises(DeploymentConfigError) as error:
        await check_out(secret)
    assert "s3cret" not in str(error.value) and "http://127.0.0.1:9/repo.git" in str(error.value)


def test_serve_runs_the_repository_s_code_and_the_next_start_its_new_commit(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "app" / "repo")
    file = deployment(tmp_path / "app", f"file://{repo}")
    for word in ("v1", "v2"):
        if word == "v2":
            commit(repo, "v2")
        server = Server(file)
        try:
            with Client(server.url) as client:
                assert client.deployment("fromgit").tasks.run({"message": "hi"}) == f"{word}: hi"
            # A large repository takes a while: the start says what it fetches, then the commit.
            said = [line.split()[:2] for line in server.stderr.lines if line.startswith("fromgit/echo ")]
            assert said[:2] == [["fromgit/echo", "fetching"], ["fromgit/echo", "fetched"]], said
        finally:
            assert server.stop() == 0, "\n".join(server.stderr.lines[-20:])


async def test_env_files_are_read_from_the_checkout_too(tmp_path: Path) -> None:
    """As a local source's are read from its folder: a repository that carries its `.env`."""
    repo = make_repo(tmp_path / "app" / "repo")
    (repo / ".env").write_text("GREETING=from the repository\n")
    _git(repo, "add", ".env")
    _git(repo, "commit", "--quiet", "-m", "env")
    file = deployment(tmp_path / "app", "repo")
    file.write_text(file.read_text() + "    env-files: [.env]\n")
    config = load_deployment_file(file)
    await check_out(config)
    assert config.service_env("echo") == {"GREETING": "from the repository"}
