"""What DeploymentConfig derives from a file: source folders, env, import roots, state."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamactl.server.config import DeploymentConfig, ServiceConfig, load_deployment_text
from llamactl.server.errors import DeploymentConfigError, ServiceNotFound


def _load(base: Path, service: str, *, top: str = "") -> DeploymentConfig:
    text = f"name: d\n{top}services:\n  a:\n" + "".join(f"    {line}\n" for line in service.splitlines())
    return load_deployment_text(text, base_path=base, file="d.yml")


def test_source_dir_is_the_resolved_local_folder(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    config = _load(tmp_path, "source: {type: local, location: ./src}")
    assert config.source_dir("a") == (tmp_path / "src").resolve()


def test_source_dir_without_source_is_base_path(tmp_path: Path) -> None:
    assert _load(tmp_path, "import-path: m:wf").source_dir("a") == tmp_path


def test_source_dir_rejects_a_symlink_pointing_outside(tmp_path: Path) -> None:
    base, outside = tmp_path / "base", tmp_path / "outside"
    base.mkdir()
    outside.mkdir()
    (base / "src").symlink_to(outside)
    config = _load(base, "source:\n  type: local\n  name: src")
    with pytest.raises(DeploymentConfigError, match="outside the deployment folder") as info:
        config.source_dir("a")
    assert (info.value.file, info.value.key_path, info.value.line) == ("d.yml", "services.a.source.name", 6)


def test_source_dir_accepts_a_symlink_inside(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "src").symlink_to(tmp_path / "real")
    assert (
        _load(tmp_path, "source: {type: local, location: src}").source_dir("a")
        == (tmp_path / "real").resolve()
    )


@pytest.mark.parametrize("location", ["..", "../sibling", "/etc", "src/../../x"])
def test_escaping_local_source_is_rejected_at_load(tmp_path: Path, location: str) -> None:
    with pytest.raises(DeploymentConfigError) as info:
        _load(tmp_path, f"source:\n  type: local\n  location: {location}")
    assert (info.value.key_path, info.value.line) == ("services.a.source.location", 6)


def test_source_dir_missing_folder(tmp_path: Path) -> None:
    config = _load(tmp_path, "source:\n  type: local\n  location: nowhere")
    with pytest.raises(DeploymentConfigError, match="'nowhere' does not exist") as info:
        config.source_dir("a")
    assert info.value.line == 6


def test_source_dir_of_a_git_source_not_checked_out_yet_says_so(tmp_path: Path) -> None:
    config = _load(tmp_path, "source:\n  type: git\n  location: https://example.com/r.git")
    with pytest.raises(DeploymentConfigError, match="its git source is not checked out yet") as info:
        config.source_dir("a")
    assert (info.value.key_path, info.value.line) == ("services.a.source.location", 6)


def test_source_dir_of_a_docker_source_is_not_supported(tmp_path: Path) -> None:
    config = _load(tmp_path, "source:\n  type: docker\n  location: example/image")
    with pytest.raises(DeploymentConfigError, match="'docker' sources are not run") as info:
        config.source_dir("a")
    assert (info.value.key_path, info.value.line) == ("services.a.source.type", 5)


def test_import_root_follows_llama_deploy_for_paths_relative_to_the_deployment(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "workflow.py").write_text("")
    config = _load(tmp_path, "source: {type: local, name: src}\npath: src/workflow:echo_workflow")
    assert config.import_root("a") == tmp_path


def test_import_root_is_the_source_when_the_module_is_there(tmp_path: Path) -> None:
    (tmp_path / "src" / "pkg").mkdir(parents=True)
    config = _load(tmp_path, "source: {type: local, location: src}\nimport-path: pkg.mod:wf")
    assert config.import_root("a") == (tmp_path / "src").resolve()


def test_service_env_files_override_env_and_later_files_win(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / ".env").write_text("A=from-file\nB=from-file\n")
    (tmp_path / "src" / ".env.local").write_text("B=from-local\n")
    service = "source: {type: local, location: src}\nenv: {A: from-env, C: 3}\nenv-files: [.env, .env.local]"
    env = _load(tmp_path, service).service_env("a")
    assert env == {"A": "from-file", "B": "from-local", "C": "3"}


def test_service_env_file_found_in_the_deployment_folder(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / ".env").write_text("KEY=root\n")
    config = _load(tmp_path, "source: {type: local, location: src}\nenv_files: [.env]")
    assert config.service_env("a") == {"KEY": "root"}


def test_service_env_missing_file_names_it(tmp_path: Path) -> None:
    config = _load(tmp_path, "env:\n  A: b\nenv-files:\n  - .env\n  - secrets.env")
    (tmp_path / ".env").write_text("")
    with pytest.raises(DeploymentConfigError, match=r"env file 'secrets\.env' not found") as info:
        config.service_env("a")
    assert (info.value.key_path, info.value.line) == ("services.a.env-files[1]", 8)


def test_service_env_malformed_file_gives_its_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("OK=1\nthis is not an assignment\n")
    config = _load(tmp_path, "env-files: [.env]")
    with pytest.raises(DeploymentConfigError, match=r"\.env:2: expected KEY=value"):
        config.service_env("a")


def test_service_lookup_raises_service_not_found(tmp_path: Path) -> None:
    config = _load(tmp_path, "name: A")
    assert config.service("a").name == "A"
    with pytest.raises(ServiceNotFound, match="known services are a"):
        config.service("b")


def test_default_service_id_falls_back_to_the_first_service(tmp_path: Path) -> None:
    text = "name: d\nservices:\n  z: {}\n  a: {}\n"
    assert load_deployment_text(text, base_path=tmp_path).default_service_id == "z"
    text = "name: d\ndefault-service: a\nservices:\n  z: {}\n  a: {}\n"
    assert load_deployment_text(text, base_path=tmp_path).default_service_id == "a"


def test_state_store_uri_defaults_to_sqlite_under_state_dir(tmp_path: Path) -> None:
    config = _load(tmp_path, "name: A")
    assert config.state_dir == tmp_path / ".llamactl"
    assert config.state_store_uri == f"sqlite:///{tmp_path}/.llamactl/state.sqlite"


def test_state_store_uri_from_the_control_plane(tmp_path: Path) -> None:
    config = _load(tmp_path, "name: A", top="control-plane:\n  state_store_uri: memory://\n")
    assert config.state_store_uri == "memory://"


def test_a_postgresql_state_store_gets_a_schema_of_the_deployment_unless_it_names_one(tmp_path: Path) -> None:
    uri = "postgresql://u@db.internal:5432/app"

    def loaded(name: str, query: str) -> str:
        text = f"name: {name}\ncontrol-plane:\n  state_store_uri: {uri}{query}\nservices:\n  a: {{}}\n"
        return load_deployment_text(text, base_path=tmp_path).state_store_uri

    assert loaded("My-App", "?sslmode=require") == f"{uri}?sslmode=require&schema=llamactl_my_app"
    assert loaded("d", "?schema=shared") == f"{uri}?schema=shared"
    assert loaded("d", "") == f"{uri}?schema=llamactl_d"


def test_relative_base_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_deployment_text("name: d\nservices: {a: {}}\n", base_path=Path("sub"))
    assert config.base_path == tmp_path / "sub"
    assert os.path.isabs(config.state_store_uri.removeprefix("sqlite:///"))


def test_models_can_be_built_in_python(tmp_path: Path) -> None:
    service = ServiceConfig(id="a", import_path="m:wf", max_concurrency=2)
    config = DeploymentConfig(name="d", services={"a": service}, base_path=tmp_path)
    assert (config.service("a").name, config.service("a").max_concurrency) == ("a", 2)
    assert config.source_dir("a") == tmp_path


def test_the_state_store_uri_from_llama_deploys_variable_unless_the_file_names_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONTROL_PLANE_STATE_STORE_URI", "postgresql://u@db/app?schema=s")
    assert _load(tmp_path, "name: A").state_store_uri == "postgresql://u@db/app?schema=s"
    top = "control-plane:\n  state_store_uri: memory://\n"
    assert _load(tmp_path, "name: A", top=top).state_store_uri == "memory://"
