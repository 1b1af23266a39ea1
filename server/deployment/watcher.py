"""``--watch``: reload a deployment's services when their source files change.

One ``watchfiles.awatch`` per deployment watches the deployment file and the folder each local
service imports from. A burst of saves arrives as one batch (watchfiles waits for 50 ms of quiet,
1.6 s at most). Each batch reloads only the services whose folder holds a changed file: a new
generation of workers starts, and takes over once it is ready (see ``Deployment.reload_service``).
Services reload side by side, and the watch goes on meanwhile: services that share a module do
not wait for each other's imports, and a service whose new code hangs for the whole ready
timeout holds up nobody else. A service edited again while it reloads is reloaded once more
when that reload ends, with the files as they are then.
An edit of the deployment file itself reconfigures the deployment; an invalid file is reported
and the running deployment stays as it was.

Watched: Python files, plus each service's ``watch`` globs (relative to its folder). Never:
``__pycache__``, VCS folders, virtual environments, ``.llamactl/``, build output, editor temp files.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging
from collections.abc import Callable
from pathlib import Path

import watchfiles

from llamactl.server.aio import cancel_and_wait, wait_set
from llamactl.server.config import SourceType, load_deployment_file
from llamactl.server.deployment.replicas import ReloadOutcome
from llamactl.server.deployment.runtime import Deployment
from llamactl.server.errors import LlamactlError

__all__ = ["DeploymentWatcher", "is_ignored"]

log = logging.getLogger(__name__)

_IGNORED_DIRS = frozenset(
    {
        "__pycache__", ".git", ".hg", ".svn", ".tox", ".nox", ".venv", "venv", "env", ".env",
        "site-packages", "node_modules", ".mypy_cache", ".pytest_cache", ".ruff_cache",
        ".hypothesis", ".idea", ".vscode", ".llamactl", "dist", "build",
    }
)  # fmt: skip
_RETRY_AFTER = 1.0
"""Seconds between looks for a deployment folder that went away, and before watching again after
a failure (doubling while it fails, up to ``_RETRY_MAX``)."""
_RETRY_MAX = 30.0
_TEMP_PATTERNS = ("*~", ".#*", "#*#", "*.swp", "*.swx", "*.swo", "*.tmp", "4913", ".DS_Store", "*.py[cod]")


def is_ignored(path: Path) -> bool:
    """True for files a reload must never react to (caches, VCS, environments, editor temp files)."""
    if any(part in _IGNORED_DIRS or part.endswith(".egg-info") for part in path.parts[:-1]):
        return True
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in _TEMP_PATTERNS)


class DeploymentWatcher:
    """Watches one running deployment; ``run()`` until ``stop`` is set."""

    def __init__(
        self,
        deployment: Deployment,
        *,
        on_event: Callable[[str], None] | None = None,
        on_reload: Callable[[ReloadOutcome], None] | None = None,
        force_polling: bool | None = None,
    ) -> None:
        if deployment.config.file is None:
            raise LlamactlError("only a deployment loaded from a file can be watched")
        self.deployment = deployment
        self._file = deployment.config.file.resolve()
        self._say = on_event or (lambda line: log.info("%s", line))
        self._on_reload = on_reload or (lambda outcome: None)
        self._force_polling = force_polling
        self.ready = asyncio.Event()
        """Set once the watch is in place (edits from then on are seen)."""
        self._reloading: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        """Services edited again while they reload: they reload once more afterwards."""

    def _folders(self) -> dict[str, Path]:
        """Each local service's import folder, as things stand (one that is gone is left out)."""
        config = self.deployment.config
        folders: dict[str, Path] = {}
        for service in config.services.values():
            if service.source is None or service.source.type is SourceType.LOCAL:
                try:
                    folders[service.id] = config.import_root(service.id).resolve()
                except LlamactlError:
                    continue  # its folder is gone (or points out): nothing of it to watch now
        return folders

    def affected(self, changed: set[Path]) -> tuple[bool, list[str]]:
        """Whether the deployment file changed, and which services' sources did (in file order)."""
        config = self.deployment.config
        file_changed = self._file in changed
        services: list[str] = []
        for service_id, folder in self._folders().items():
            globs = ["*.py", *config.services[service_id].watch]
            for path in changed:
                if path == self._file or is_ignored(path) or not path.is_relative_to(folder):
                    continue
                relative = path.relative_to(folder).as_posix()
                if any(fnmatch.fnmatch(relative, g) or fnmatch.fnmatch(path.name, g) for g in globs):
                    services.append(service_id)
                    break
        return file_changed, services

    async def run(self, stop: asyncio.Event) -> None:
        """Watch until ``stop`` is set. Nothing that happens to the files ends the watch: a
        deployment folder that goes away (`rm -rf`, a branch switch) is waited for, and the
        deployment file is applied again once it is back; any other failure is reported and the
        watch starts again."""
        delay, said = _RETRY_AFTER, ""
        try:
            while not stop.is_set():
                try:
                    if not self._file.parent.is_dir():
                        await self._wait_for_folder(stop)
                        continue
                    await self._watch(stop)
                    delay, said = _RETRY_AFTER, ""
                except Exception as exc:
                    if str(exc) != said:  # a failure that lasts (a watch limit reached) is said once
                        said = str(exc)
                        self._say(f"{self.deployment.name}: watching its files failed ({exc}): trying again")
                    await wait_set(stop, delay)
                    delay = min(_RETRY_MAX, delay * 2)
        finally:
            # The deployment is stopping: a reload still waiting for its new workers is moot.
            for task in list(self._reloading.values()):
                await cancel_and_wait(task)

    async def _wait_for_folder(self, stop: asyncio.Event) -> None:
        folder = self._file.parent
        self._say(
            f"{self.deployment.name}: {folder} is gone: the deployment keeps running as it was, and "
            "is watched again once the folder is back"
        )
        self.ready.set()
        while not self._file.is_file():
            if await wait_set(stop, _RETRY_AFTER):
                return
        self._say(f"{self.deployment.name}: {folder} is back")
        await self._reconfigure()
        for service_id in self._folders():  # its code may differ too (a branch switch)
            self._request_reload(service_id)

    async def _watch(self, stop: asyncio.Event) -> None:
        """One watch of the folders as they are now, until the deployment file changes what it must see."""
        roots = self._roots()
        folder = _identity(self._file.parent)
        watch = watchfiles.awatch(
            *roots,
            stop_event=stop,
            watch_filter=lambda _change, path: not is_ignored(Path(path)),
            step=50,
            debounce=1600,
            force_polling=self._force_polling,
            yield_on_timeout=True,
            rust_timeout=500,
        )
        async for batch in watch:
            self.ready.set()
            if not batch:
                continue  # a timeout tick: only there so that `ready` is set early
            # watchfiles reports paths under the (resolved) roots it was given
            file_changed, services = self.affected({Path(p) for _, p in batch})
            if file_changed:
                reloaded = await self._reconfigure()
                # The batch's source changes (a `git pull` brings both) reload what the file did not.
                services = [s for s in services if s in self.deployment.config.services and s not in reloaded]
            for service_id in services:
                self._request_reload(service_id)
            # Watched anew only when it must: what changed while the file was applied (its
            # reloads take a while) is seen by this watch, and would be lost with it.
            if file_changed and (_identity(self._file.parent) != folder or not _covers(roots, self._roots())):
                break

    def _roots(self) -> list[Path]:
        return sorted({*self._folders().values(), self._file.parent})

    def _request_reload(self, service_id: str) -> None:
        """Reload a service in the background; once more after its running reload, if it has one."""
        if service_id in self._reloading:
            if service_id not in self._again:
                self._again.add(service_id)
                self._say(
                    f"{self.deployment.name}/{service_id}: source changed again: reloading once more "
                    "when the running reload ends"
                )
            return
        self._reloading[service_id] = asyncio.create_task(
            self._reload(service_id), name=f"reload:{self.deployment.name}/{service_id}"
        )

    async def _reload(self, service_id: str) -> None:
        try:
            while True:
                self._again.discard(service_id)
                self._say(f"{self.deployment.name}/{service_id}: source changed, reloading")
                try:
                    outcome = await self.deployment.reload_service(service_id)
                except Exception as exc:  # LlamactlError: removed from the file meanwhile, say
                    if not isinstance(exc, LlamactlError):
                        log.exception("reloading %s/%s failed", self.deployment.name, service_id)
                    self._say(f"{self.deployment.name}/{service_id}: not reloaded: {exc}")
                else:
                    self._report(outcome)
                if service_id not in self._again:
                    return
        finally:
            del self._reloading[service_id]

    async def _reconfigure(self) -> set[str]:
        """Apply the deployment file; return the services it reloaded."""
        self._say(f"{self.deployment.name}: {self._file.name} changed, applying it")
        try:
            config = load_deployment_file(self._file)
            outcomes = await self.deployment.reconfigure(config)
        except LlamactlError as exc:
            self._say(f"{self.deployment.name}: not applied, the deployment keeps running as it was: {exc}")
            return set()
        for outcome in outcomes:
            self._report(outcome)
        return {outcome.service_id for outcome in outcomes}

    def _report(self, outcome: ReloadOutcome) -> None:
        self._say(f"{self.deployment.name}: {outcome.describe()}")
        if not outcome.ok and outcome.error:
            for line in outcome.error.splitlines()[1:]:
                self._say(f"    {line}")
        self._on_reload(outcome)


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder is at ``folder`` (None: none): one made anew there is not watched any more."""
    try:
        stat = folder.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


def _covers(roots: list[Path], wanted: list[Path]) -> bool:
    """Whether a watch of ``roots`` (each with what is under it) sees every folder of ``wanted``."""
    return all(any(path.is_relative_to(root) for root in roots) for path in wanted)
