"""The live dashboard of a llamactl server (`llamactl tui`, `python -m llamactl.tui`).

It talks to a running server only through :mod:`llamactl.client`. Textual loads on first use of
``DashboardApp``, not on ``import llamactl.tui``::

    from llamactl.tui import DashboardApp, DashboardConfig

    DashboardApp(DashboardConfig(deployment="demo")).run()
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llamactl.tui.app import DashboardApp
    from llamactl.tui.config import DashboardConfig

__all__ = ["DashboardApp", "DashboardConfig"]


def __getattr__(name: str) -> Any:
    if name == "DashboardApp":
        from llamactl.tui.app import DashboardApp  # noqa: PLC0415 (Textual only when asked for)

        return DashboardApp
    if name == "DashboardConfig":
        from llamactl.tui.config import DashboardConfig  # noqa: PLC0415

        return DashboardConfig
    raise AttributeError(f"module 'llamactl.tui' has no attribute {name!r}")
