"""Virtual environments the benchmark installs once into its cache and reuses after.

The anchor needs two kinds: Llama Deploy's own (``llama-deploy==<version>``), and llamactl's
dependencies beside the ``llama-index-workflows`` version Llama Deploy's environment runs, so
that both products can be measured on the same workflows library (llamactl's sources come from
the checkout through ``PYTHONPATH``, never from a stale copy in the environment).
"""

from __future__ import annotations

import compileall
import functools
import os
import subprocess
import sys
import tomllib
import venv
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "CachedEnvUnavailable",
    "byte_compile",
    "cache_root",
    "cached_python",
    "checkout_python",
    "installed_version",
    "llamactl_requirements",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout the benchmark runs from."""
_INSTALL_TIMEOUT = 900.0
_MARKER = ".llamactl-bench-ready"


class CachedEnvUnavailable(RuntimeError):
    """A cached environment could not be installed."""


def cache_root() -> Path:
    """Where the benchmark's virtual environments live."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "llamactl-bench"


def cached_python(
    name: str, requirements: Sequence[str], *, what: str, hint: str, say: Callable[[str], None] = print
) -> Path:
    """The interpreter of ``cache_root()/name`` holding ``requirements``; install it the first time.

    The environment is reused while its marker names the same requirements; a different list (a
    new dependency in pyproject.toml, say) installs it afresh. ``what`` names it in messages and
    ``hint`` says what to do when pip fails.
    """
    root = cache_root() / name
    python = root / "bin" / "python"
    marker = root / _MARKER
    stamp = "\n".join(requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == stamp:
        return python
    say(f"installing {what} into {root} (once; later runs reuse it)")
    venv.EnvBuilder(with_pip=True, clear=True).create(root)
    argv = [str(python), "-m", "pip", "install", "-q", *requirements]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=_INSTALL_TIMEOUT, check=False)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.splitlines()[-15:])
        raise CachedEnvUnavailable(
            f"could not install {what} into {root} (pip exited {done.returncode}); {hint}. pip said:\n{tail}"
        )
    marker.write_text(stamp)
    return python


def installed_version(distribution: str, python: Path | None = None) -> str:
    """The version of ``distribution`` installed for ``python`` (this interpreter by default)."""
    code = f"import importlib.metadata as m; print(m.version({distribution!r}))"
    argv = [str(python or sys.executable), "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise CachedEnvUnavailable(f"{distribution} is not installed for {argv[0]}: {done.stderr.strip()}")
    return done.stdout.strip()


def llamactl_requirements() -> list[str]:
    """llamactl's runtime dependencies, as pyproject.toml lists them."""
    with (REPO_ROOT / "pyproject.toml").open("rb") as fh:
        project = tomllib.load(fh)["project"]
    return [str(req) for req in project["dependencies"]]


@functools.cache
def byte_compile(checkout: Path = REPO_ROOT) -> None:
    """Write the bytecode of a checkout's sources (``llamactl/``, ``server/``, ``tui/``) where it is
    missing or stale, as installing llamactl from a wheel does; once per checkout and process.

    Figures of a start (start to ready, ``--help``, a reload's new workers) would otherwise
    include compiling ~170 modules in the server and ~60 in each worker anew at every start
    wherever ``PYTHONDONTWRITEBYTECODE`` is set (this project's machines set it): 1.06-1.21 s
    to the Listening line instead of 0.82-0.94 (bench/README.md, point 35). Llama Deploy's
    environment, installed by pip, has its bytecode.
    """
    for folder in ("llamactl", "server", "tui"):  # llamactl/server and llamactl/tui link to the others
        compileall.compile_dir(checkout / folder, quiet=1)


def checkout_python(python: Path, checkout: Path = REPO_ROOT) -> list[str]:
    """The command prefix that runs ``python`` on a checkout's sources (``PYTHONPATH``, which its
    subprocesses inherit), rather than on any copy of llamactl in its environment; by default
    this checkout's."""
    return ["env", f"PYTHONPATH={checkout}", str(python)]
