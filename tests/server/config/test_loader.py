"""Llama Deploy's files load unchanged; spellings are equivalent; ignored keys warn."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

import llamactl.server.config
from llamactl.server.config import (
    DeploymentConfigWarning,
    SourceType,
    load_deployment_file,
    load_deployment_text,
)

DATA = Path(__file__).parent / "data"


def test_quick_start_loads_and_warns_that_ui_is_not_run() -> None:
    with pytest.warns(DeploymentConfigWarning, match="'ui'") as record:
        config = load_deployment_file(DATA / "quick_start.yml")
    assert [w.message.line for w in record if isinstance(w.message, DeploymentConfigWarning)] == [16]
    assert config.name == "QuickStart"
    assert config.file == (DATA / "quick_start.yml").absolute()
    assert config.base_path == DATA.absolute()
    assert config.control_plane.port == 8000
    assert config.message_queue.type == "zeromq"
    service = config.service("echo_workflow")
    assert service.name == "Echo Workflow"
    assert service.source is not None
    assert (service.source.type, service.source.location) == (SourceType.LOCAL, "src")
    assert service.import_path == "src/workflow:echo_workflow"
    assert config.default_service_id == "echo_workflow"
    assert config.ui is not None and config.ui["name"] == "My Nextjs App"


def test_kitchen_sink_loads_every_llama_deploy_key() -> None:
    config = load_deployment_file(DATA / "kitchen_sink.yaml")
    cp = config.control_plane
    assert (cp.host, cp.port, cp.internal_host, cp.internal_port) == ("0.0.0.0", 8000, "127.0.0.1", 8100)
    assert cp.topic_namespace == "my_namespace"
    assert cp.cors_origins == ["http://localhost:3000"]
    assert (cp.step_interval, cp.running, cp.use_tls) == (0.2, True, False)
    assert (cp.services_store_key, cp.tasks_store_key, cp.session_store_key) == (
        "my_services",
        "my_tasks",
        "my_sessions",
    )
    assert config.state_store_uri == "redis://localhost:6379"
    mq = config.message_queue
    assert (mq.type, mq.url, mq.port) == ("redis", "redis://localhost:6379/1", 6379)
    assert mq.model_extra == {"db": 1, "exclusive_mode": True}
    assert list(config.services) == [
        "myworkflow",
        "another-workflow",
        "dockerservice",
        "local-worker",
        "memory",
    ]
    first = config.service("myworkflow")
    assert first.source is not None and first.source.type is SourceType.GIT
    assert first.python_dependencies == ["llama-index-core<1", "llama-index-llms-openai", "requirements.txt"]
    assert first.env == {"VAR_1": "x", "VAR_2": "y", "PORT": "8080", "DEBUG": "true"}
    assert config.service("another-workflow").ts_dependencies == {
        "@llamaindex/core": "^0.2.0",
        "@notionhq/client": "^2.2.15",
    }
    assert config.service("dockerservice").source.type is SourceType.DOCKER  # type: ignore[union-attr]
    worker = config.service("local-worker")
    assert (worker.replicas, worker.max_concurrency, worker.timeout) == (3, 16, 120.0)
    assert worker.import_path == "workflows.agent:agent_workflow"
    assert (worker.env_files, worker.watch) == ([".env"], ["prompts/*.txt"])
    memory = config.service("memory")
    assert (memory.source, memory.import_path, memory.replicas, memory.max_concurrency) == (None, None, 1, 8)


def test_llama_deploy_08_file_with_simple_queue_runs_on_zeromq(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="llamactl.server.config"):
        config = load_deployment_file(DATA / "v08_control_plane_mq.yml")
    assert "'simple'" in caplog.text
    assert (config.message_queue.type, config.message_queue.host, config.message_queue.port) == (
        "zeromq",
        "127.0.0.1",
        8001,
    )
    assert config.default_service_id == "agentic_workflow"
    assert config.service("rag_workflow").import_path == "workflows:rag_w"


def test_llama_deploy_09_file_without_control_plane_gets_defaults() -> None:
    config = load_deployment_file(DATA / "v09_import_path.yml")
    assert config.control_plane.port is None
    assert config.control_plane.host == "127.0.0.1"
    assert config.default_service is None
    assert config.default_service_id == "test-workflow"
    other = config.service("other_workflow")
    assert other.name == "other_workflow"
    assert (other.import_path, other.env_files) == ("other:workflow", [".env.other"])


@pytest.mark.parametrize("kind", ["redis", "zeromq", "simple"])
def test_supported_queue_types_load_quietly(kind: str) -> None:
    text = f"name: d\nmessage-queue:\n  type: {kind}\n  url: x://y\nservices:\n  a: {{}}\n"
    config = load_deployment_text(text, base_path=Path("/srv"))
    assert config.message_queue.url == "x://y"


def test_the_redis_key_prefix_is_a_known_key(recwarn: pytest.WarningsRecorder) -> None:
    text = "name: d\nmessage-queue:\n  type: redis\n  prefix: 'p:'\nservices: {a: {}}\n"
    config = load_deployment_text(text, base_path=Path("/srv"))
    assert config.message_queue.model_extra == {"prefix": "p:"}
    assert not [w for w in recwarn if issubclass(w.category, DeploymentConfigWarning)]


def test_replicas_zero_on_a_shared_queue_leaves_the_service_to_remote_workers() -> None:
    text = "name: d\nmessage-queue:\n  type: redis\n  url: redis://h:6379\nservices:\n  a:\n    replicas: 0\n"
    config = load_deployment_text(text, base_path=Path("/srv"))
    assert config.service("a").replicas == 0


@pytest.mark.parametrize("kind", ["rabbitmq", "kafka", "aws", "solace"])
def test_queue_types_without_backend_load_with_a_warning(kind: str) -> None:
    text = f"name: d\nmessage-queue:\n  type: {kind}\n  aws_region: eu-west-1\nservices:\n  a: {{}}\n"
    with pytest.warns(DeploymentConfigWarning, match=f"no {kind} backend") as record:
        config = load_deployment_text(text, base_path=Path("/srv"))
    assert config.message_queue.type == kind
    assert record[0].message.line == 3  # type: ignore[union-attr]


SPELLINGS = [
    ("control-plane:\n  state-store-uri: memory://\n", "control_plane:\n  state_store_uri: memory://\n"),
    (
        "message-queue:\n  max-attempts: 2\n  pub-port: 0\n",
        "message_queue:\n  max_attempts: 2\n  pub_port: 0\n",
    ),
    ("default-service: a\n", "default_service: a\n"),
    ("", ""),
]

SERVICE_SPELLINGS = [
    ("import-path: m:wf", "import_path: m:wf"),
    ("import-path: m:wf", "path: m:wf"),
    ("source: {type: local, location: .}", "source: {type: local, name: .}"),
    (
        "source: {type: local, location: ., sync-policy: merge}",
        "source: {type: local, location: ., sync_policy: merge}",
    ),
    ("env-files: [.env]", "env_files: [.env]"),
    ("python-dependencies: [x]", "python_dependencies: [x]"),
    ("ts-dependencies: {a: b}", "ts_dependencies: {a: b}"),
    ("max-concurrency: 3", "max_concurrency: 3"),
    ("max-result-size: 64K", "max_result_size: 65536"),
    ("max-events: 10", "max_events: 10"),
    ("max-memory: 2G", "max_memory: 2147483648"),
    ("startup-timeout: 300", "startup_timeout: 300"),
]


@pytest.mark.parametrize(("dashed", "underscored"), SPELLINGS)
@pytest.mark.parametrize(("service_dashed", "service_other"), SERVICE_SPELLINGS)
def test_dash_and_underscore_spellings_are_equivalent(
    dashed: str, underscored: str, service_dashed: str, service_other: str
) -> None:
    def load(top: str, service: str) -> dict[str, object]:
        text = f"name: d\n{top}services:\n  a:\n    {service}\n"
        return load_deployment_text(text, base_path=Path("/srv")).model_dump()

    assert load(dashed, service_dashed) == load(underscored, service_other)


def test_unknown_key_warns_with_file_line_and_closest_key() -> None:
    text = "name: d\nservices:\n  a:\n    import-path: m:wf\n    replica: 2\n"
    with pytest.warns(DeploymentConfigWarning) as record:
        config = load_deployment_text(text, base_path=Path("/srv"), file="d.yml")
    warning = record[0].message
    assert isinstance(warning, DeploymentConfigWarning)
    assert (warning.file, warning.key_path, warning.line) == ("d.yml", "services.a.replica", 5)
    assert "did you mean 'replicas'?" in str(warning)
    assert config.service("a").replicas == 1


@pytest.mark.parametrize(
    ("text", "key_path", "suggestion"),
    [
        ("naem: d\nname: d\nservices: {a: {}}\n", "naem", "did you mean 'name'?"),
        ("name: d\ncontrol-plane: {prot: 1}\nservices: {a: {}}\n", "control-plane.prot", "'port'"),
        ("name: d\nmessage-queue: {leese: 3}\nservices: {a: {}}\n", "message-queue.leese", "'lease'"),
        (
            "name: d\nservices: {a: {source: {type: git, location: x, locaton: .}}}\n",
            "services.a.source.locaton",
            "'location'",
        ),
        ("name: d\nservices: {a: {envfiles: [x]}}\n", "services.a.envfiles", "'env-files'"),
        ("name: d\nservices: {a: {zzz: 1}}\n", "services.a.zzz", "valid keys here are"),
        ("name: d\nbase_path: /etc\nservices: {a: {}}\n", "base_path", "unknown key"),
    ],
)
def test_unknown_keys_anywhere_warn(text: str, key_path: str, suggestion: str) -> None:
    with pytest.warns(DeploymentConfigWarning, match="unknown key") as record:
        config = load_deployment_text(text, base_path=Path("/srv"))
    warning = record[0].message
    assert isinstance(warning, DeploymentConfigWarning)
    assert warning.key_path == key_path
    assert suggestion in str(warning)
    assert config.base_path == Path("/srv")


def test_queue_backend_fields_are_not_unknown() -> None:
    text = "name: d\nmessage-queue:\n  type: rabbitmq\n  exchange-name: x\n  vhost: v\nservices: {a: {}}\n"
    with pytest.warns(DeploymentConfigWarning, match="no rabbitmq backend"):
        config = load_deployment_text(text, base_path=Path("/srv"))
    assert config.message_queue.model_extra == {"exchange_name": "x", "vhost": "v"}


def test_empty_sections_and_service_bodies_use_defaults() -> None:
    text = "name: d\ncontrol-plane:\nmessage-queue:\nservices:\n  a:\n    env:\n    env-files:\n"
    config = load_deployment_text(text, base_path=Path("/srv"))
    assert config.control_plane.host == "127.0.0.1"
    assert config.service("a").env == {}
    assert config.service("a").env_files == []


def test_env_scalars_become_text() -> None:
    text = "name: d\nservices:\n  a:\n    env: {PORT: 8080, RATE: 0.5, DEBUG: false, EMPTY: , 7: seven}\n"
    env = load_deployment_text(text, base_path=Path("/srv")).service("a").env
    assert env == {"PORT": "8080", "RATE": "0.5", "DEBUG": "false", "EMPTY": "", "7": "seven"}


def test_load_file_with_explicit_base_path(tmp_path: Path) -> None:
    shutil.copy(DATA / "v08_control_plane_mq.yml", tmp_path / "d.yml")
    config = load_deployment_file(str(tmp_path / "d.yml"), base_path=Path("/srv/elsewhere"))
    assert config.base_path == Path("/srv/elsewhere")
    assert config.file == tmp_path / "d.yml"


def test_public_api_is_exported() -> None:
    for name in llamactl.server.config.__all__:
        assert getattr(llamactl.server.config, name) is not None
    assert {
        "DeploymentConfig",
        "load_deployment_file",
        "load_deployment_text",
        "DeploymentConfigWarning",
    } <= set(llamactl.server.config.__all__)


def test_duplicate_key_warns_and_the_last_one_is_used() -> None:
    text = "name: d\nservices:\n  a: {}\nservices:\n  b: {}\n"
    with pytest.warns(DeploymentConfigWarning, match=r"written twice \(lines 2 and 4\)") as record:
        config = load_deployment_text(text, base_path=Path("/srv"))
    assert list(config.services) == ["b"]
    assert record[0].message.line == 4  # type: ignore[union-attr]


def test_warning_points_at_the_caller_of_the_loader() -> None:
    with pytest.warns(DeploymentConfigWarning) as record:
        load_deployment_text("name: d\nservices: {a: {replica: 1}}\n", base_path=Path("/srv"))
    assert record[0].filename == __file__
