"""Every path a deployment file names stays inside the deployment folder, and no error shows a
file's content (issue #11: `env-files: [/etc/passwd]` used to be read, its first line quoted)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llamactl.server.config import DeploymentConfig, load_deployment_text
from llamactl.server.errors import DeploymentConfigError

SECRET = "TOP-SECRET-VALUE-42"


def _load(base: Path, service: str, *, top: str = "") -> DeploymentConfig:
    text = f"name: d\n{top}services:\n  a:\n" + "".join(f"    {line}\n" for line in service.splitlines())
    return load_deployment_text(text, base_path=base, file="d.yml")


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder beside the deployment folder holding a file that must never be read."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.env").write_text(f"{SECRET} is not an assignment\n")
    return folder


@pytest.fixture
def base(tmp_path: Path) -> Path:
    folder = tmp_path / "base"
    (folder / "src").mkdir(parents=True)
    return folder


def test_an_absolute_env_file_is_refused_at_load(base: Path) -> None:
    with pytest.raises(DeploymentConfigError, match="absolute path '/etc/passwd'") as info:
        _load(base, "env-files: [/etc/passwd]")
    assert info.value.key_path == "services.a.env-files" and info.value.line == 4


def test_an_env_file_leaving_the_folder_with_dotdot_is_refused(base: Path, outside: Path) -> None:
    with pytest.raises(DeploymentConfigError, match="must stay inside the deployment folder") as info:
        _load(base, "env-files: [../outside/secret.env]")
    assert SECRET not in str(info.value)


def test_an_env_file_symlink_pointing_out_is_refused_without_reading_it(base: Path, outside: Path) -> None:
    (base / ".env").symlink_to(outside / "secret.env")
    config = _load(base, "env-files: [.env]")
    with pytest.raises(DeploymentConfigError, match="a symlink pointing out is not allowed") as info:
        config.service_env("a")
    assert SECRET not in str(info.value)
    assert info.value.key_path == "services.a.env-files[0]"


def test_an_env_file_in_a_source_folder_symlinked_out_is_refused(base: Path, outside: Path) -> None:
    (base / "src" / "secret.env").symlink_to(outside / "secret.env")
    config = _load(base, "source: {type: local, location: src}\nenv-files: [secret.env]")
    with pytest.raises(DeploymentConfigError, match="outside the deployment folder"):
        config.service_env("a")


def test_a_malformed_env_file_error_names_the_line_but_never_its_content(base: Path) -> None:
    (base / ".env").write_text(f"OK=1\n{SECRET} oops\nB='{SECRET}' trailing\n")
    config = _load(base, "env-files: [.env]")
    with pytest.raises(DeploymentConfigError, match=r"\.env:2: expected KEY=value") as info:
        config.service_env("a")
    assert SECRET not in str(info.value)
    (base / ".env").write_text(f"B='{SECRET}' trailing\n")
    with pytest.raises(
        DeploymentConfigError, match=r"\.env:1: unexpected text after the closing quote"
    ) as info:
        config.service_env("a")
    assert SECRET not in str(info.value)


def test_an_env_file_that_is_not_utf8_is_refused_without_its_bytes(base: Path) -> None:
    (base / ".env").write_bytes(b"A=\xff\xfe")
    config = _load(base, "env-files: [.env]")
    with pytest.raises(DeploymentConfigError, match="not UTF-8 text") as info:
        config.service_env("a")
    assert "0xff" not in str(info.value)


def test_an_env_file_inside_the_folder_still_loads(base: Path) -> None:
    (base / "src" / ".env").write_text("A=1\n")
    (base / "shared.env").symlink_to(base / "src" / ".env")
    assert _load(base, "env-files: [shared.env]").service_env("a") == {"A": "1"}
    in_source = _load(base, "source: {type: local, location: src}\nenv-files: [.env]")
    assert in_source.service_env("a") == {"A": "1"}


def test_an_import_path_through_a_folder_symlinked_out_is_refused(base: Path, outside: Path) -> None:
    (outside / "flows.py").write_text("wf = 1\n")
    (base / "code").symlink_to(outside)
    config = _load(base, "path: code/flows:wf")
    with pytest.raises(DeploymentConfigError, match="outside the deployment folder") as info:
        config.import_root("a")
    assert info.value.key_path == "services.a.path"


def test_an_import_path_to_a_module_symlinked_out_is_refused(base: Path, outside: Path) -> None:
    (outside / "flows.py").write_text("wf = 1\n")
    (base / "src" / "flows.py").symlink_to(outside / "flows.py")
    config = _load(base, "source: {type: local, location: src}\nimport-path: flows:wf")
    with pytest.raises(DeploymentConfigError, match="a symlink pointing out is not allowed"):
        config.import_root("a")


def test_an_import_path_inside_the_folder_resolves(base: Path) -> None:
    (base / "src" / "flows.py").write_text("wf = 1\n")
    config = _load(base, "source: {type: local, location: src}\nimport-path: src/flows:wf")
    assert config.import_root("a") == base


def test_an_sqlite_state_store_outside_the_folder_is_refused(base: Path, tmp_path: Path) -> None:
    config = _load(base, "path: m:wf", top=f"control-plane:\n  state-store-uri: sqlite:///{tmp_path}/x.db\n")
    with pytest.raises(DeploymentConfigError, match="outside the deployment folder") as info:
        _ = config.state_store_uri
    assert (info.value.key_path, info.value.line) == ("control-plane.state-store-uri", 3)


def test_an_sqlite_state_store_inside_the_folder_and_memory_are_fine(base: Path) -> None:
    inside = f"sqlite:///{base}/.llamactl/other.sqlite"
    assert (
        _load(base, "path: m:wf", top=f"control-plane:\n  state-store-uri: {inside}\n").state_store_uri
        == inside
    )
    memory = _load(base, "path: m:wf", top="control-plane:\n  state-store-uri: 'sqlite:///:memory:'\n")
    assert memory.state_store_uri == "sqlite:///:memory:"


@pytest.mark.parametrize("glob", ["/etc/*", "../**/*.py"])
def test_a_watch_glob_outside_the_folder_is_refused(base: Path, glob: str) -> None:
    with pytest.raises(DeploymentConfigError, match="watch glob"):
        _load(base, f"path: m:wf\nwatch: ['{glob}']")


def test_a_path_with_a_nul_is_refused(base: Path) -> None:
    with pytest.raises(DeploymentConfigError, match="NUL"):
        _load(base, 'env-files: [".env\\0x"]')


def test_the_current_folder_does_not_matter_for_an_inside_sqlite_file(
    base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(base)
    config = _load(base, "path: m:wf", top="control-plane:\n  state-store-uri: sqlite:///state.db\n")
    assert config.state_store_uri == "sqlite:///state.db"
    monkeypatch.chdir(base.parent)
    with pytest.raises(DeploymentConfigError, match="outside"):
        _ = config.state_store_uri
    assert os.getcwd() == str(base.parent)
