"""The client config of a deployment's Redis queue: the file's keys, Llama Deploy's, $REDIS_URL."""

from __future__ import annotations

from pathlib import Path

import pytest

from llamactl.server.config import load_deployment_text
from llamactl.server.config.unknown_keys import DeploymentConfigWarning
from llamactl.server.deployment.queue_config import external_queue_config
from llamactl.server.errors import MessageQueueError


def config_of(tmp_path: Path, queue: str) -> dict[str, object]:
    text = f"name: My-App\nmessage-queue:\n{queue}services:\n  a: {{}}\n"
    return external_queue_config(load_deployment_text(text, base_path=tmp_path), heartbeat_interval=0.5)


def test_a_url_and_the_deployments_own_prefix(tmp_path: Path) -> None:
    out = config_of(tmp_path, "  type: redis\n  url: redis://cache:6379/2\n  max-attempts: 3\n")
    assert out == {
        "type": "redis",
        "url": "redis://cache:6379/2",
        "prefix": "llamactl:My-App:",
        "heartbeat_interval": 0.5,
        "max_attempts": 3,
        "retention": 60.0,
    }


def test_llama_deploys_host_port_and_credentials(tmp_path: Path) -> None:
    queue = (
        "  type: redis\n  host: cache\n  port: 6380\n  db: 1\n  password: pw\n  ssl: true\n  prefix: 'p:'\n"
    )
    out = config_of(tmp_path, queue)
    assert (out["host"], out["port"], out["db"], out["password"], out["ssl"]) == (
        "cache",
        6380,
        1,
        "pw",
        True,
    )
    assert out["prefix"] == "p:" and "url" not in out


def test_redis_url_from_the_environment_unless_the_file_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://:secret@cache:6379/0")
    assert config_of(tmp_path, "  type: redis\n")["url"] == "redis://:secret@cache:6379/0"
    assert config_of(tmp_path, "  type: redis\n  host: other\n")["host"] == "other"


def test_a_queue_type_without_a_backend_says_what_is_valid(tmp_path: Path) -> None:
    with (
        pytest.warns(DeploymentConfigWarning, match="no rabbitmq backend"),  # when the file loads
        pytest.raises(MessageQueueError, match="'rabbitmq' is not available yet"),  # at start
    ):
        config_of(tmp_path, "  type: rabbitmq\n")
