"""The deployment file as pydantic models.

Every multi-word key is accepted with a dash or an underscore (``max-concurrency``,
``max_concurrency``); Llama Deploy's older spellings are accepted too (``source.name`` for
``source.location``, ``path`` for ``import-path``). Load files with
:func:`llamactl.server.config.load_deployment_file`, which turns every mistake into a
:class:`~llamactl.server.errors.DeploymentConfigError` with the key path and line.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from llamactl.server.config.fields import (
    EnvMap,
    Identifier,
    ImportPath,
    MemorySize,
    Port,
    PortOrZero,
    PositiveNumber,
    ResultSize,
    WholeAtLeastOne,
    WholeAtLeastZero,
    accepted_keys,
    describe,
    keys,
)
from llamactl.server.config.paths import check_relative

__all__ = [
    "MESSAGE_QUEUE_TYPES",
    "ControlPlaneConfig",
    "MessageQueueConfig",
    "ServiceConfig",
    "ServiceSource",
    "SourceType",
]

logger = logging.getLogger(__name__)

MESSAGE_QUEUE_TYPES = ("zeromq", "redis", "rabbitmq", "simple", "kafka", "aws", "solace")
"""Accepted ``message-queue.type`` values; ``simple`` means our embedded zeromq broker."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_by_name=True, validate_by_alias=True)


def _none_to_empty(value: Any) -> Any:
    return {} if value is None else value


class SourceType(StrEnum):
    """Where a service's code comes from: ``local`` and ``git`` are run by llamactl, ``docker`` is not."""

    LOCAL = "local"
    GIT = "git"
    DOCKER = "docker"


class ServiceSource(_Model):
    """``services.<id>.source``: ``type`` plus ``location`` (Llama Deploy 0.9) or ``name`` (0.8).

    For a local source the location is a folder relative to the deployment file; for a git
    source, the repository's URL, with ``@REF`` for a branch or tag.
    """

    type: SourceType
    location: str = Field(validation_alias=keys("location", "name"))
    sync_policy: Literal["replace", "merge", "skip", "fail"] | None = Field(
        default=None, validation_alias=keys("sync-policy")
    )

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in {t.value for t in SourceType}:
            return value.lower()
        raise ValueError(f"{describe(value)} is not a source type: use one of local, git, docker")

    @field_validator("sync_policy", mode="before")
    @classmethod
    def _known_policy(cls, value: Any) -> Any:
        if value is None or value in ("replace", "merge", "skip", "fail"):
            return value
        raise ValueError(f"{describe(value)} is not a sync policy: use one of replace, merge, skip, fail")

    @field_validator("location")
    @classmethod
    def _local_stays_inside(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("type") is SourceType.LOCAL:
            # Only the text is checked here; symlinks and existence are checked by source_dir().
            check_relative(value, "a local source")
        return value


class ServiceConfig(_Model):
    """One entry of ``services:``; ``id`` is its key in the file."""

    id: Identifier
    name: str = ""
    """Display name; the id when the file gives none."""
    source: ServiceSource | None = None
    import_path: ImportPath | None = Field(default=None, validation_alias=keys("import-path", "path"))
    """``module:attr``, ``pkg.module:attr`` or ``sub/dir/module:attr``, relative to the deployment folder."""
    host: str | None = None
    port: Port | None = None
    env: EnvMap = Field(default_factory=dict)
    env_files: list[str] = Field(default_factory=list, validation_alias=keys("env-files"))
    """dotenv files; their values override ``env``."""
    python_dependencies: list[str] = Field(default_factory=list, validation_alias=keys("python-dependencies"))
    ts_dependencies: dict[str, str] = Field(default_factory=dict, validation_alias=keys("ts-dependencies"))
    replicas: WholeAtLeastZero = 1
    """Worker processes `llamactl serve` runs (ours); 0: only `llamactl worker` on other hosts serves
    the service (needs a shared message queue)."""
    max_concurrency: WholeAtLeastOne = Field(default=8, validation_alias=keys("max-concurrency"))
    """Tasks one replica runs at once (ours)."""
    max_queued: WholeAtLeastOne = Field(default=10_000, validation_alias=keys("max-queued"))
    """Tasks that may wait for the service at once; beyond, new ones are refused with 429 (ours)."""
    timeout: PositiveNumber | None = None
    """Seconds a task may run before it fails (ours)."""
    startup_timeout: PositiveNumber = Field(default=120.0, validation_alias=keys("startup-timeout"))
    """Seconds a worker may take to load the service's code and come up: past them the deployment
    does not start, and a reload keeps the old code (ours)."""
    max_result_size: ResultSize = Field(default=128 * 1024**2, validation_alias=keys("max-result-size"))
    """The largest result (with the task's Context) or event a task may send, encoded; a task
    that sends a larger one fails with a message that says so (ours)."""
    max_events: WholeAtLeastOne = Field(default=100_000, validation_alias=keys("max-events"))
    """Events one run of a task may stream; the run that streams more fails, saying so (ours)."""
    max_memory: MemorySize | None = Field(default=None, validation_alias=keys("max-memory"))
    """Memory one worker may hold; past it, the worker takes no new task and is replaced once its
    running tasks end (ours; none: no limit)."""
    watch: list[str] = Field(default_factory=list)
    """Extra glob patterns that trigger a hot reload (ours)."""

    @model_validator(mode="before")
    @classmethod
    def _name_defaults_to_id(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name") and "id" in data:
            return {**data, "name": data["id"]}
        return data

    @field_validator("env_files", "python_dependencies", "watch", mode="before")
    @classmethod
    def _list_or_empty(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            raise ValueError(f"expected a list, got {describe(value)}: write it as [{value!r}]")  # noqa: TRY004
        return value

    @field_validator("env_files")
    @classmethod
    def _env_files_stay_inside(cls, value: list[str]) -> list[str]:
        # Only the text here; service_env() also resolves symlinks.
        for entry in value:
            check_relative(entry, "an env file", "file")
        return value

    @field_validator("watch")
    @classmethod
    def _globs_stay_inside(cls, value: list[str]) -> list[str]:
        for pattern in value:
            check_relative(pattern, "a watch glob", "file")
        return value

    @field_validator("ts_dependencies", mode="before")
    @classmethod
    def _map_or_empty(cls, value: Any) -> Any:
        return _none_to_empty(value)


class ControlPlaneConfig(_Model):
    """``control-plane:``. Every Llama Deploy key is accepted; ``port`` serves its control-plane API."""

    host: str = "127.0.0.1"
    port: PortOrZero | None = None
    """Serve Llama Deploy's control-plane API on this port (0: any free one; the server says which)."""
    internal_host: str | None = Field(default=None, validation_alias=keys("internal-host"))
    internal_port: Port | None = Field(default=None, validation_alias=keys("internal-port"))
    state_store_uri: str | None = Field(default=None, validation_alias=keys("state-store-uri"))
    topic_namespace: str = Field(default="llama_deploy", validation_alias=keys("topic-namespace"))
    cors_origins: list[str] | None = Field(default=None, validation_alias=keys("cors-origins"))
    use_tls: bool = Field(default=False, validation_alias=keys("use-tls"))
    step_interval: PositiveNumber = Field(default=0.1, validation_alias=keys("step-interval"))
    running: bool = True
    services_store_key: str = Field(default="services", validation_alias=keys("services-store-key"))
    tasks_store_key: str = Field(default="tasks", validation_alias=keys("tasks-store-key"))
    session_store_key: str = Field(default="sessions", validation_alias=keys("session-store-key"))
    finished_task_retention: PositiveNumber = Field(
        default=7 * 24 * 3600.0, validation_alias=keys("finished-task-retention")
    )
    """Seconds a finished task, its event log and its one-task session are kept (ours)."""
    max_finished_tasks: WholeAtLeastOne = Field(default=10_000, validation_alias=keys("max-finished-tasks"))
    """Finished tasks kept at most; the oldest are pruned first (ours)."""
    max_sessions: WholeAtLeastOne = Field(default=100_000, validation_alias=keys("max-sessions"))
    """Sessions kept at once (those ``tasks/create`` makes for one task count too, and go with
    it); beyond, ``sessions/create`` is refused until some are deleted (ours)."""
    change_feed_retention: WholeAtLeastOne = Field(
        default=10_000, validation_alias=keys("change-feed-retention")
    )
    """Change-feed entries kept (ours)."""
    prune_interval: PositiveNumber = Field(default=10.0, validation_alias=keys("prune-interval"))
    """Seconds between two retention passes (ours)."""
    wait_timeout: PositiveNumber = Field(default=300.0, validation_alias=keys("wait-timeout"))
    """Seconds ``tasks/run`` waits for a task of a service that sets no ``timeout`` (ours)."""


class MessageQueueConfig(_Model):
    """``message-queue:``. ``zeromq`` (the default) is our embedded broker; Llama Deploy's ``simple``
    maps to it. Fields of other backends (``url``, ``db``, ``exchange_name``, ...) are kept in
    ``model_extra`` with underscore spellings.
    """

    model_config = ConfigDict(extra="allow", validate_by_name=True, validate_by_alias=True)

    type: str = "zeromq"
    host: str = "127.0.0.1"
    port: PortOrZero | None = None
    """zeromq: the router (work delivery) port, None or 0 = any free one; others: their server's port."""
    pub_port: PortOrZero | None = Field(default=None, validation_alias=keys("pub-port"))
    """Live fan-out (XPUB) port; None or 0 picks a free one."""
    persistent: bool = True
    max_attempts: WholeAtLeastOne = Field(default=5, validation_alias=keys("max-attempts"))
    """Failed attempts (its worker died or stalled while running it alone) before a task fails."""
    lease: PositiveNumber = 30.0
    retention: PositiveNumber = 60.0
    """Seconds the embedded journal keeps a settled message, to absorb a resent duplicate (ours)."""
    url: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _underscore_extras(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return _none_to_empty(data)
        # Known keys keep their spelling so errors point at the line the user wrote.
        known = accepted_keys(cls)
        return {k if k in known else str(k).replace("-", "_"): v for k, v in data.items()}

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: Any) -> Any:
        if isinstance(value, str) and value.lower() in MESSAGE_QUEUE_TYPES:
            kind = value.lower()
            if kind == "simple":
                logger.info("message-queue type 'simple' (Llama Deploy) runs as llamactl's zeromq broker")
                return "zeromq"
            return kind
        raise ValueError(
            f"{describe(value)} is not a message queue type: use one of {', '.join(MESSAGE_QUEUE_TYPES)}"
        )
