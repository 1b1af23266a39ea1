"""The bottom line: the keys that work right now (the focused region's first), dimmed when unavailable."""

from __future__ import annotations

from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.screen import Screen

from llamactl.tui.text_line import TextLine

__all__ = ["KeyBar"]

DIM = Style(dim=True)


class KeyBar(TextLine):
    """Like Textual's ``Footer``, drawn as one line of text.

    ``Footer`` builds a widget per key and rebuilds them all whenever the bindings change (every
    focus change, every dialog); in Textual 8.2 the widgets it drops stay referenced by their
    data bindings, so a long-running dashboard would grow without bound.
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"key-bar--key", "key-bar--description"}

    DEFAULT_CSS = """
    KeyBar { dock: bottom; height: 1; background: $footer-background; color: $footer-foreground; }
    KeyBar > .key-bar--key { color: $footer-key-foreground; text-style: bold; }
    KeyBar > .key-bar--description { color: $footer-description-foreground; }
    """

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self._bindings_changed(self.screen)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, screen: Screen[object]) -> None:
        key_style = self.get_component_rich_style("key-bar--key")
        description_style = self.get_component_rich_style("key-bar--description")
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        palette = None
        for _node, binding, enabled, _tooltip in screen.active_bindings.values():
            if binding.key == self.app.COMMAND_PALETTE_BINDING:
                palette = binding
                continue
            if not binding.show:
                continue
            extra = Style() if enabled else DIM
            text.append(f" {self.app.get_key_display(binding)} ", style=key_style + extra)
            text.append(f"{binding.description} ", style=description_style + extra)
        if palette is not None:
            text.append(f"  {self.app.get_key_display(palette)} ", style=key_style)
            text.append("palette", style=description_style)
        self.show(text)
