"""Real faults for tests: a small tmpfs that can be filled to the last byte (a full disk), a
SQLite file damaged in place."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path


class SmallDisk:
    """A tmpfs of ``size`` mounted at ``path``; :meth:`fill` takes every free byte, :meth:`free`
    gives them back. Needs the right to mount (root, as in CI); fails loudly otherwise."""

    def __init__(self, path: Path, size: str = "8m") -> None:
        self.path = path
        self.size = size
        self._ballast = path / ".ballast"

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size}", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"cannot mount a tmpfs at {self.path} for the full-disk tests ({done.stderr.strip()}): "
                "run the tests as root (CI does), or with CAP_SYS_ADMIN"
            )

    def read_only(self) -> None:
        """Remount it read-only: every write gets EROFS."""
        subprocess.run(
            ["mount", "-o", "remount,ro", str(self.path)], capture_output=True, text=True, check=True
        )

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True, check=False)

    def fill(self) -> int:
        """Write a ballast file until the disk is full; return its size."""
        written = 0
        with open(self._ballast, "ab", buffering=0) as f:
            chunk = b"\0" * 65536
            while True:
                try:
                    written += f.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    if len(chunk) == 1:
                        return written
                    chunk = chunk[: len(chunk) // 2]

    def free(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._ballast)


@contextlib.contextmanager
def small_disk(path: Path, size: str = "8m") -> Iterator[SmallDisk]:
    disk = SmallDisk(path, size)
    disk.mount()
    try:
        yield disk
    finally:
        disk.unmount()


async def use_up(write: Callable[[int, bytes], Awaitable[object]], refused: type[BaseException]) -> int:
    """Call ``write(n, value)`` for n = 0, 1, ... until it raises ``refused``, first with 256 KiB
    values, then with 4 KiB ones to take the last pages; return how many writes went through.

    A full disk does not fail every write at once: a SQLite WAL that a checkpoint let start over
    keeps its file, and commits fit inside it until they reach its end. Tests that need the next
    write of the code under test to fail use that room up first, with writes of their own.
    """
    done = 0
    for size, limit in ((256 * 1024, 200), (4096, 4000)):
        value = b"x" * size
        for _ in range(limit):
            try:
                await write(done, value)
            except refused:
                break
            done += 1
        else:
            raise AssertionError(f"{limit} writes of {size} bytes went through: the disk is not full")
    return done


def damage_sqlite_index(path: Path, index: str, onto: str) -> None:
    """Damage a SQLite file for real, as a bad sector or a torn copy would: point ``index``'s root
    page at the table ``onto``'s, so that the next statement using the index finds a page of the
    wrong kind (SQLITE_CORRUPT, "database disk image is malformed"). The schema version moves, so
    connections already open read the damaged schema on their next statement."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (onto,)).fetchone()[0]
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("UPDATE sqlite_master SET rootpage = ? WHERE name = ?", (root, index))
        conn.execute(f"PRAGMA schema_version = {int(version) + 1}")
    finally:
        conn.close()
