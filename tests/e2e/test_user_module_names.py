"""A service whose folder holds modules named like ours (``server.py``, ``tui.py``) or like any app's
(``app.py``, ``config.py``) runs with the user's modules, and ours stay ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llamactl.server.deployment import Deployment
from llamactl.server.types import TaskStatus

USER_MODULES = {
    "server.py": 'WHO = "user server"\n',
    "tui.py": 'WHO = "user tui"\n',
    "config.py": 'WHO = "user config"\n',
    "app.py": (
        "import config\n"
        "import server\n"
        "import tui\n"
        "\n"
        "\n"
        "async def whose() -> dict[str, str]:\n"
        "    import sys\n"
        "\n"
        "    ours = sorted(n for n in sys.modules if n.startswith('llamactl.server'))\n"
        "    return {\n"
        "        'server': server.WHO,\n"
        "        'tui': tui.WHO,\n"
        "        'config': config.WHO,\n"
        "        'server_file': server.__file__,\n"
        "        'ours_loaded': str(bool(ours)),\n"
        "    }\n"
    ),
}


async def test_user_modules_named_server_and_tui_are_the_users(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name, text in USER_MODULES.items():
        (src / name).write_text(text)
    (tmp_path / "deployment.yml").write_text(
        "name: names\nservices:\n  app:\n    source: {type: local, location: src}\n    path: app:whose\n"
    )
    async with Deployment.from_file(tmp_path / "deployment.yml") as deployment:
        await deployment.wait_ready(timeout=60)
        task = await deployment.run("app", timeout=30)
    assert task.status is TaskStatus.COMPLETED, task.error
    result = task.result
    print("modules the worker imported:", json.dumps(result))
    assert result["server"] == "user server"
    assert result["tui"] == "user tui"
    assert result["config"] == "user config"
    assert Path(result["server_file"]).resolve() == (src / "server.py").resolve()
    assert result["ours_loaded"] == "True"


async def test_user_code_never_sees_the_servers_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLAMACTL_API_TOKEN", "s3cret-token")
    monkeypatch.setenv("SOME_USER_SETTING", "kept")
    src = tmp_path / "src"
    src.mkdir()
    (src / "peek.py").write_text(
        "import os\n\n\nasync def peek() -> dict[str, str | None]:\n"
        "    return {k: os.environ.get(k) for k in ('LLAMACTL_API_TOKEN', 'SOME_USER_SETTING')}\n"
    )
    (tmp_path / "deployment.yml").write_text(
        "name: peek\nservices:\n  peek:\n    source: {type: local, location: src}\n    path: peek:peek\n"
    )
    async with Deployment.from_file(tmp_path / "deployment.yml") as deployment:
        await deployment.wait_ready(timeout=60)
        task = await deployment.run("peek", timeout=30)
    assert task.result == {"LLAMACTL_API_TOKEN": None, "SOME_USER_SETTING": "kept"}
