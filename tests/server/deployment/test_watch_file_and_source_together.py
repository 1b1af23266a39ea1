"""A deployment file and a service's source changed in one batch of the watch (real workers)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.e2e.waiting import wait_until
from tests.server.deployment.test_hot_reload import DEPLOYMENT, Running, running, service_code

__all__ = ["running"]  # the fixture, shared with test_hot_reload


async def test_source_edited_with_the_deployment_file_is_reloaded(running: Running) -> None:
    """A `git pull` or a branch switch that changes code and the file at once: before, the
    batch applied the file and dropped the source change, and `a` ran its old code."""
    (running.root / "a" / "svc.py").write_text(service_code("a2"))
    (running.root / "deployment.yml").write_text("# pulled\n" + DEPLOYMENT)
    outcome = await running.next_reload()
    assert (outcome.service_id, outcome.generation, outcome.ok) == ("a", 2, True)
    assert await running.answer("a") == "a2"
    assert await running.answer("b") == "b1"


async def test_a_service_the_file_edit_reloads_is_reloaded_once(running: Running) -> None:
    (running.root / "a" / "svc.py").write_text(service_code("a2"))
    (running.root / "deployment.yml").write_text(DEPLOYMENT.replace("name: A", "name: A2"))
    outcome = await running.next_reload()
    assert (outcome.service_id, outcome.generation, outcome.ok) == ("a", 2, True)
    assert await running.answer("a") == "a2"
    assert sum("a: source changed, reloading" in line for line in running.lines) == 0
    assert running.outcomes.empty()


def gated_code(answer: str, root: Path) -> str:
    """Code whose import, in a worker given GATE, says it began and waits for ``root/go``."""
    return textwrap.dedent(
        f"""\
        import os
        import time
        from pathlib import Path

        _root = Path({str(root)!r})
        if os.environ.get("GATE"):
            (_root / "began").touch()
            _deadline = time.monotonic() + 20
            while not (_root / "go").exists():
                if time.monotonic() > _deadline:
                    raise RuntimeError("waited 20 s at import for go")
                time.sleep(0.02)


        async def handle(message: str = "") -> str:
            return "{answer}"
        """
    )


async def test_a_source_edited_while_the_file_is_applied_is_reloaded(running: Running) -> None:
    """The file's reload of a takes a while; b is edited meanwhile. Before, the watch was made
    anew once the file was applied, and b's edit, seen by the watch made before, was lost."""
    (running.root / "a" / "svc.py").write_text(gated_code("a2", running.root))
    outcome = await running.next_reload()
    assert (outcome.service_id, outcome.generation, outcome.ok) == ("a", 2, True)
    (running.root / "deployment.yml").write_text(
        DEPLOYMENT.replace("path: svc:handle", 'path: svc:handle\n    env: {GATE: "1"}', 1)
    )
    await wait_until((running.root / "began").exists, 30)  # the file's reload of a is under way
    (running.root / "b" / "svc.py").write_text(service_code("b2"))
    (running.root / "go").touch()
    outcomes = {
        (o.service_id, o.generation, o.ok) for o in [await running.next_reload(), await running.next_reload()]
    }
    assert outcomes == {("a", 3, True), ("b", 2, True)}
    assert await running.answer("b") == "b2"
