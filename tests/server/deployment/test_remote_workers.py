"""RemoteWorkers' plan and names, without starting anything (the end-to-end test runs them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamactl.server.config import DeploymentConfig, load_deployment_text
from llamactl.server.deployment.remote_workers import (
    RemoteWorkers,
    choose_replicas,
    host_label,
    queue_location,
)
from llamactl.server.errors import QueueNotShared, ServiceNotFound
from llamactl.server.ids import id_problem

SHARED = """\
name: d
message-queue: {type: redis, url: "redis://:secret@127.0.0.1:6379/0"}
services:
  a: {path: "m:a", replicas: 0}
  b: {path: "m:b", replicas: 3}
"""


@pytest.fixture
def config() -> DeploymentConfig:
    return load_deployment_text(SHARED, base_path=Path("/srv/d"))


def test_every_service_runs_by_default_and_a_remote_only_one_gets_one_worker(
    config: DeploymentConfig,
) -> None:
    assert choose_replicas(config) == {"a": 1, "b": 3}


def test_chosen_services_take_the_replicas_given(config: DeploymentConfig) -> None:
    assert choose_replicas(config, ["b", "a", "b"], 2) == {"b": 2, "a": 2}


def test_an_unknown_service_names_the_known_ones(config: DeploymentConfig) -> None:
    with pytest.raises(ServiceNotFound, match="known services are a, b"):
        choose_replicas(config, ["c"])


def test_the_embedded_queue_is_refused() -> None:
    solo = load_deployment_text("name: solo\nservices:\n  a: {path: 'm:a'}\n", base_path=Path("/srv"))
    with pytest.raises(QueueNotShared, match="embedded message queue"):
        RemoteWorkers(solo, {"a": 1})


@pytest.mark.parametrize(
    ("hostname", "label"),
    [("box", "box"), ("ip-10-0-0-1.ec2.internal", "ip-10-0-0-1"), ("my host!", "my-host"), ("", "host")],
)
def test_the_host_label_is_the_short_name_in_id_characters(hostname: str, label: str) -> None:
    assert host_label(hostname) == label


def test_replica_ids_name_the_service_host_process_and_index(config: DeploymentConfig) -> None:
    workers = RemoteWorkers(config, {"a": 2}, host="box.example.com")
    ids = workers.replica_ids
    assert ids == [f"a#box-{os.getpid()}-1", f"a#box-{os.getpid()}-2"]
    for replica_id in ids:
        service, _, rest = replica_id.partition("#")
        assert service == "a" and id_problem(rest, "replica") is None


def test_the_queue_config_is_the_deployments_shared_one(config: DeploymentConfig) -> None:
    workers = RemoteWorkers(config, {"b": 1})
    assert workers.queue_config["prefix"] == "llamactl:d:"
    assert workers.queue_config["url"] == "redis://:secret@127.0.0.1:6379/0"
    assert "secret" not in queue_location(workers.queue_config)
