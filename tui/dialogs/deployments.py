"""The deployment picker: the server's deployments, the one on show marked."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from llamactl.tui.dialogs.base import Dialog

__all__ = ["DeploymentPicker"]


class DeploymentPicker(Dialog[str]):
    """Pick a deployment with the arrows and enter; escape keeps the current one."""

    def __init__(self, names: list[str], current: str | None) -> None:
        super().__init__()
        self.names = names
        self.current = current

    def compose(self) -> ComposeResult:
        with Vertical(classes="box"):
            yield Static("Switch deployment", classes="title")
            if not self.names:
                yield Static(
                    "The server runs no deployment: deploy one with `llamactl deploy deployment.yml`, "
                    "then press d again.",
                    markup=False,
                )
                return
            options = [
                Option(f"{name}  (on show)" if name == self.current else name, id=name) for name in self.names
            ]
            yield OptionList(*options, id="deployments")
            yield Static("enter: show it · escape: keep the current one", classes="hint")

    def on_mount(self) -> None:
        if self.names:
            picker = self.query_one(OptionList)
            picker.highlighted = self.names.index(self.current) if self.current in self.names else 0
            picker.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)
