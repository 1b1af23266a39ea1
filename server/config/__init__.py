"""server/config: the deployment file.

Pydantic models with YAML aliases that accept Llama Deploy's files as they are (0.8 and 0.9
spellings, dashes or underscores), plus llamactl's own keys (``replicas``, ``max-concurrency``,
``timeout``, ``watch``). Every mistake raises :class:`~llamactl.server.errors.DeploymentConfigError` naming
the file, the key path and the line; ignored keys give a :class:`DeploymentConfigWarning`.

    config = load_deployment_file("deployment.yml")
    service = config.service(config.default_service_id)
"""

from __future__ import annotations

from llamactl.server.config.deployment import DeploymentConfig
from llamactl.server.config.loader import load_deployment_file, load_deployment_text
from llamactl.server.config.models import (
    MESSAGE_QUEUE_TYPES,
    ControlPlaneConfig,
    MessageQueueConfig,
    ServiceConfig,
    ServiceSource,
    SourceType,
)
from llamactl.server.config.unknown_keys import DeploymentConfigWarning

__all__ = [
    "MESSAGE_QUEUE_TYPES",
    "ControlPlaneConfig",
    "DeploymentConfig",
    "DeploymentConfigWarning",
    "MessageQueueConfig",
    "ServiceConfig",
    "ServiceSource",
    "SourceType",
    "load_deployment_file",
    "load_deployment_text",
]
