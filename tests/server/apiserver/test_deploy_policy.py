"""What `/deployments/create` may load: only folders under the server's roots, no path escapes,
and python-dependencies only with --allow-install, into the deployment's own virtual environment."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.util
import shutil
import sys
import zipfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from llamactl.server.apiserver import serve
from llamactl.server.errors import InvalidRequest
from tests.server.apiserver.conftest import SHARED_FLOWS, start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")

DEP = "tinydep_llamactl_test"
"""A module that exists only in the wheel the test builds: never importable by the server itself."""

USES_DEP = f"""\
import sys

import {DEP}


def check() -> dict:
    return {{"value": {DEP}.VALUE, "python": sys.executable, "module": {DEP}.__file__}}
"""


def app_yml(name: str, *, source: str = "src", path: str = "flows:echo_workflow", extra: str = "") -> str:
    return (
        f"name: {name}\nservices:\n  echo:\n    source: {{type: local, location: {source}}}\n"
        f"    path: {path}\n{extra}"
    )


def build_wheel(folder: Path, name: str = DEP, version: str = "0.1") -> Path:
    """A minimal pure-Python wheel: one module, METADATA, WHEEL and RECORD."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "VALUE = 42\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: llamactl-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


@dataclass
class Served:
    url: str
    root: Path
    outside: Path


def make_app(folder: Path) -> Path:
    (folder / "src").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHARED_FLOWS, folder / "src" / "flows.py")
    return folder


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    """A server started with one --deployments-root (and without --allow-install)."""
    root = tmp_path_factory.mktemp("root")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.env").write_text("root:x:0:0:TOP-SECRET\n")
    make_app(outside / "app")
    stop = asyncio.Event()
    url, task = await start_server(stop, deployments_roots=[root])
    try:
        yield Served(url, root, outside)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)


async def deploy(url: str, yml: str, base_path: Path | str) -> httpx.Response:
    """Upload ``yml`` as Llama Deploy's client does."""
    async with httpx.AsyncClient(base_url=url, timeout=180) as http:
        return await http.post(
            "/deployments/create",
            params={"base_path": str(base_path), "reload": "false", "local": "false"},
            files={"config_file": ("upload", yml.encode(), "application/octet-stream")},
        )


async def test_a_folder_under_a_root_is_deployed(served: Served) -> None:
    folder = make_app(served.root / "good")
    response = await deploy(served.url, app_yml("good"), folder)
    assert response.status_code == 200, response.text
    async with httpx.AsyncClient(base_url=served.url) as http:
        assert (await http.delete("/deployments/good")).status_code == 200


async def test_a_base_path_outside_the_roots_is_403_and_says_how_to_allow_it(served: Served) -> None:
    response = await deploy(served.url, app_yml("out"), served.outside / "app")
    assert response.status_code == 403
    detail = response.json()["detail"]
    assert str(served.root) in detail and "--deployments-root" in detail


@pytest.mark.parametrize("how", ["dotdot", "symlink"])
async def test_a_base_path_escaping_a_root_is_403(served: Served, how: str) -> None:
    if how == "dotdot":
        base = f"{served.root}/../{served.outside.name}/app"
    else:
        base = served.root / "link"
        base.symlink_to(served.outside / "app")
    response = await deploy(served.url, app_yml(f"esc-{how}"), base)
    assert response.status_code == 403, response.text


async def test_a_source_symlinked_out_of_the_deployment_folder_is_400(served: Served) -> None:
    folder = served.root / "srclink"
    folder.mkdir()
    (folder / "src").symlink_to(served.outside / "app" / "src")
    response = await deploy(served.url, app_yml("srclink"), folder)
    assert response.status_code == 400
    assert "a symlink pointing out is not allowed" in response.json()["detail"]


@pytest.mark.parametrize(
    ("source", "path", "needle"),
    [
        ("../outside", "flows:echo_workflow", "must stay inside the deployment folder"),
        ("/", "flows:echo_workflow", "absolute path"),
        ("src", "../../flows:echo_workflow", "must not leave the deployment folder"),
    ],
)
async def test_a_source_or_import_path_escaping_the_folder_is_400(
    served: Served, source: str, path: str, needle: str
) -> None:
    folder = make_app(served.root / "escapes")
    response = await deploy(served.url, app_yml("escapes", source=source, path=path), folder)
    assert response.status_code == 400 and needle in response.json()["detail"]


@pytest.mark.parametrize("entry", ["/etc/passwd", "../outside/secret.env"])
async def test_an_uploaded_env_file_outside_the_folder_is_refused_unread(served: Served, entry: str) -> None:
    folder = make_app(served.root / "envs")
    extra = f"    env-files: ['{entry}']\n"
    response = await deploy(served.url, app_yml("envs", extra=extra), folder)
    assert response.status_code == 400
    assert "root:" not in response.text and "TOP-SECRET" not in response.text


async def test_python_dependencies_without_allow_install_are_refused_naming_the_flag(served: Served) -> None:
    folder = make_app(served.root / "deps")
    extra = "    python-dependencies: ['httpx>=0.1']\n"
    response = await deploy(served.url, app_yml("deps", extra=extra), folder)
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "--allow-install" in detail and "services.echo.python-dependencies" in detail
    assert not (folder / ".llamactl" / "venv").exists()


async def test_a_missing_deployments_root_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="--deployments-root"):
        await serve(port=0, deployments_roots=[tmp_path / "missing"])


@pytest.mark.slow
async def test_python_dependencies_are_installed_into_the_deployments_own_venv(tmp_path: Path) -> None:
    folder = tmp_path / "withdeps"
    (folder / "src").mkdir(parents=True)
    (folder / "src" / "uses_dep.py").write_text(USES_DEP)
    build_wheel(folder / "wheels")
    yml = app_yml(
        "withdeps",
        path="uses_dep:check",
        extra=f"    python-dependencies: ['./wheels/{DEP}-0.1-py3-none-any.whl']\n",
    )
    stop = asyncio.Event()
    url, task = await start_server(stop, deployments_roots=[tmp_path], allow_install=True)
    try:
        response = await deploy(url, yml, folder)
        assert response.status_code == 200, response.text
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            ran = await http.post("/deployments/withdeps/tasks/run", json={"input": "{}"})
        assert ran.status_code == 200, ran.text
        result = ran.json()
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=60)
    venv = (folder / ".llamactl" / "venv").resolve()
    assert result["value"] == 42
    assert Path(result["python"]).parent.parent.resolve() == venv
    assert Path(result["module"]).resolve().is_relative_to(venv)
    assert importlib.util.find_spec(DEP) is None, "the dependency leaked into the server's interpreter"
    assert not list(Path(sys.prefix).glob(f"lib/python*/site-packages/{DEP}*"))
