"""A DataTable whose rows are keyed by id and updated in place, so the cursor stays on its row."""

from __future__ import annotations

from collections.abc import Sequence

from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowKey

from llamactl.tui.cells import Cell

__all__ = ["KeyedTable", "Row"]

Row = tuple[str, list[Cell]]
"""A row: its key and its cells, one per column in order."""

REBUILD_SHARE = 0.6
"""When more than this share of rows come or go at once, the table is rebuilt instead of edited."""


class KeyedTable(DataTable[Cell]):
    """Shows a sequence of keyed rows; :meth:`show` edits only what changed.

    The cursor stays on the row it was on (wherever that row moves), and that row keeps its
    place on screen when it can. Rows that come and go do not reset the scroll position.
    """

    DEFAULT_CSS = """
    KeyedTable { height: 1fr; scrollbar-size: 1 1; }
    """

    _quiet = False

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=False)
        self._shown: dict[str, list[Cell]] = {}
        self._order: list[str] = []

    @property
    def keys(self) -> list[str]:
        """The keys of the rows, top to bottom."""
        return list(self._order)

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor (None when the table is empty)."""
        if not self._order or not 0 <= self.cursor_row < len(self._order):
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except CellDoesNotExist:
            return None
        return row_key.value

    def move_to(self, key: str) -> bool:
        """Put the cursor on the row of ``key``; False if there is none."""
        try:
            index = self.get_row_index(key)
        except Exception:
            return False
        self.move_cursor(row=index)
        return True

    def show(self, rows: Sequence[Row]) -> None:
        """Make the table show exactly ``rows``, in that order."""
        wanted = [key for key, _ in rows]
        cursor_key = self.cursor_key
        screen_offset = self.cursor_row - round(self.scroll_y)
        gone = set(self._shown) - set(wanted)
        added = [key for key in wanted if key not in self._shown]
        churn = len(gone) + len(added)
        self._quiet = True
        try:
            if churn and churn > REBUILD_SHARE * max(len(self._shown), 1):
                self._rebuild(rows)
            else:
                self._edit(rows, gone, set(added))
            self._order = wanted
            self._restore_cursor(cursor_key, screen_offset)
        finally:
            self._quiet = False

    def _highlight_row(self, row_index: int) -> None:
        # Cursor moves made by `show` (to keep the cursor on its row) are not the user's choice:
        # no RowHighlighted for them, so a live update never changes what the user looks at.
        if self._quiet:
            self.refresh_row(row_index)
            return
        super()._highlight_row(row_index)

    def _rebuild(self, rows: Sequence[Row]) -> None:
        self.clear()
        self._shown = {}
        for rank, (key, cells) in enumerate(rows):
            if cells:
                cells[0].rank = rank
            self.add_row(*cells, key=key)
            self._shown[key] = cells

    def _edit(self, rows: Sequence[Row], gone: set[str], added: set[str]) -> None:
        for key in gone:
            self.remove_row(key)
            del self._shown[key]
        columns = list(self.columns)
        moved = bool(gone)
        for rank, (key, cells) in enumerate(rows):
            if key in added:
                if cells:
                    cells[0].rank = rank
                self.add_row(*cells, key=key)
                self._shown[key] = cells
                moved = True
                continue
            kept = self._shown[key]
            for column, after in enumerate(cells):
                if kept[column] != after:
                    after.rank = kept[column].rank
                    self.update_cell(key, columns[column], after)
                    kept[column] = after
            if kept and kept[0].rank != rank:
                kept[0].rank = rank
                moved = True
        if moved:
            self.sort(key=lambda row: row[0].rank)

    def _restore_cursor(self, key: str | None, screen_offset: int) -> None:
        if not self._order:
            return
        if key is None or key not in self._shown:
            self.move_cursor(row=min(self.cursor_row, len(self._order) - 1), scroll=False)
            return
        index = self._order.index(key)
        if index != self.cursor_row:
            self.move_cursor(row=index, scroll=False)
            self.scroll_to(y=max(index - screen_offset, 0), animate=False, immediate=True)

    def row_key_of(self, key: RowKey) -> str | None:
        return key.value
