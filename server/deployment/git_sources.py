"""Services whose code lives in a git repository: ``source: {type: git, location: URL[@REF]}``, as
Llama Deploy reads it (the repository's default branch, or ``REF``, a branch or tag).

Each start of the deployment (``llamactl serve``, ``deploy``, ``validate``) fetches the newest
commit of the ref into ``.llamactl/sources/<service>/<commit>``, a shallow clone of its own, and
points ``CURRENT`` at it; the service's ``path`` is read from there. A folder per commit leaves
the checkout a running generation imported from untouched; the newest :data:`KEPT_CHECKOUTS`
are kept, older ones removed. When the repository cannot be reached and a checkout exists,
the deployment starts with that one, and says so; with none, it does not start.

git runs without a terminal (no password prompt), with a timeout, and only over https, http,
ssh, git and file: a ``URL`` with ``ext::`` (which runs a command) is refused. A repository on
this machine (``file://`` or a path) must be inside the deployment's folder, as a local source
must: a file sent to ``deploy`` cannot run code from elsewhere. Credentials in a URL are never
logged or shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from llamactl.server.config import DeploymentConfig
from llamactl.server.config.models import SourceType
from llamactl.server.config.paths import git_checkout_in

__all__ = ["GIT_TIMEOUT", "KEPT_CHECKOUTS", "GitLocation", "check_out_git_sources", "parse_location"]

log = logging.getLogger(__name__)

GIT_TIMEOUT = 300.0
"""Seconds one git command may take (a clone of a large repository over a slow link)."""
KEPT_CHECKOUTS = 3
"""Checkouts kept per service, the newest: the current one and those before it, which workers
started earlier (a generation, or a server beside a `validate` that fetched anew) may still run."""
_PROTOCOLS = "https:http:ssh:git:file"
_COMMIT = re.compile(r"[0-9a-f]{40}")


@dataclass(frozen=True)
class GitLocation:
    """A git source's ``location``: the repository's URL and the branch or tag (None: its default)."""

    url: str
    ref: str | None

    @property
    def shown(self) -> str:
        """The URL without the credentials it may hold (``https://user:token@host/...``)."""
        parts = urlsplit(self.url)
        if parts.scheme and "@" in parts.netloc:
            return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        return self.url


def parse_location(text: str) -> GitLocation:
    """``URL`` or ``URL@REF``; the ``@`` of ``git@host:repo`` or of credentials is not a ref's."""
    url, at, ref = text.strip().rpartition("@")
    if at and ref and "/" not in ref and ":" not in ref and url:
        return GitLocation(url, ref)
    return GitLocation(text.strip(), None)


class GitError(Exception):
    """A git command failed; the message is git's own last line (credentials removed)."""


async def check_out_git_sources(
    config: DeploymentConfig,
    *,
    say: Callable[[str], None],
    tell: Callable[[str], None] | None = None,
    only: Collection[str] | None = None,
) -> None:
    """Fetch each git source of ``config`` (those of the services ``only`` names, when given; see
    the module); ``say`` warns of a fallback to an earlier checkout, ``tell`` (default: the log)
    says what is fetched (``<deployment>/<service>: fetching ...``, then ``checked out ...``):
    a large repository takes a while, and a silent start looks like a hung one.

    Raises:
        DeploymentConfigError: a repository could not be fetched and nothing was checked out before.
    """
    for service in config.services.values():
        if only is not None and service.id not in only:
            continue
        if service.source is not None and service.source.type is SourceType.GIT:
            await _check_out(config, service.id, service.source.location, say, tell or _log)


def _log(line: str) -> None:
    log.info("%s", line)


async def _check_out(
    config: DeploymentConfig,
    service_id: str,
    location: str,
    say: Callable[[str], None],
    tell: Callable[[str], None],
) -> None:
    where = parse_location(location)
    local = _local_path(where.url, config.base_path)
    if local is not None and not local.is_relative_to(config.base_path.resolve()):
        raise config.source_error(
            service_id,
            f"the git repository {local} is outside the deployment folder {config.base_path.resolve()}: "
            "a repository on this machine must be inside it (as a local source must), or be fetched "
            "from a server (https://, ssh://)",
        )
    if local is not None:  # a relative path is the deployment folder's, not the server's cwd's
        where = GitLocation(str(local), where.ref)
    root = config.git_sources_dir(service_id)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_clones(root)
    staging = root / f".clone-{uuid.uuid4().hex[:12]}"
    key, ref = f"{config.name}/{service_id}", f" ({where.ref})" if where.ref else ""
    tell(f"{key}: fetching {where.shown}{ref}")
    try:
        commit = await _clone(where, staging)
    except GitError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        current = git_checkout_in(root, location)
        problem = f"could not fetch its git source {where.shown}{ref}: {exc}"
        if current is None:
            raise config.source_error(service_id, problem) from None
        say(f"{key}: {problem}; it runs the checkout fetched before (commit {current})")
        return
    name = commit[:12]
    if (root / name).is_dir():
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.rename(root / name)
    os.utime(root / name)  # the newest checkout, for the pruning below
    pointer = root / f".CURRENT-{uuid.uuid4().hex[:8]}"
    pointer.write_text(json.dumps({"commit": name, "location": location}) + "\n")
    pointer.replace(root / "CURRENT")
    tell(f"{key}: checked out commit {name} of {where.shown}{ref}")
    checkouts = sorted(
        (entry for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith(".")),
        key=lambda entry: entry.stat().st_mtime,
        reverse=True,
    )
    for old in checkouts[KEPT_CHECKOUTS:]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)


def _remove_stale_clones(root: Path) -> None:
    """Clones left half-done by a process that died while cloning (one still running is younger)."""
    for entry in root.glob(".clone-*"):
        with contextlib.suppress(OSError):
            if time.time() - entry.stat().st_mtime > 2 * GIT_TIMEOUT:
                shutil.rmtree(entry, ignore_errors=True)


def _local_path(url: str, base: Path) -> Path | None:
    """The folder a location on this machine names (``file://...`` or a path), resolved; None for
    a repository on a server (``https://``, ``ssh://``, ``git@host:repo``)."""
    if url.startswith("file://"):
        return Path(url.removeprefix("file://")).resolve()
    if "://" in url or re.match(r"^[^/]+:", url):
        return None
    return (base / url).resolve()


async def _clone(where: GitLocation, into: Path) -> str:
    """A shallow clone of ``where`` in ``into``; its commit id."""
    branch = ["--branch", where.ref] if where.ref else []
    await _git("clone", "--quiet", "--depth", "1", "--single-branch", *branch, "--", where.url, str(into))
    commit = (await _git("-C", str(into), "rev-parse", "HEAD")).strip()
    if not _COMMIT.fullmatch(commit):
        raise GitError(f"unexpected commit id {commit[:60]!r}")
    return commit


async def _git(*args: str) -> str:
    """Run git; its stdout. Raises GitError with git's last line (or why it could not run)."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ALLOW_PROTOCOL": _PROTOCOLS, "GIT_ASKPASS": "true"}
    try:
        proc = await asyncio.create_subprocess_exec(
            "git",
            *args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise GitError("git is not installed here: install it (e.g. `apt install git`)") from None
    try:
        async with asyncio.timeout(GIT_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise GitError(f"git did not finish within {GIT_TIMEOUT:g} s") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in err.decode(errors="replace").splitlines() if line.strip()]
        fatal = [line for line in lines if line.startswith(("fatal:", "error:"))]
        said = (fatal or lines or [f"git exited with code {proc.returncode}"])[0]
        raise GitError(_without_credentials(said))
    return out.decode(errors="replace")


def _without_credentials(text: str) -> str:
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1", text)
