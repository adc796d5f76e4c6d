"""A home's SQLite file: one connection's set-up, shared by every store kept in it, and
giving the pages of deleted rows back to the file system.

A new file is made with ``auto_vacuum=INCREMENTAL`` (which only takes effect if set
before its first table), so deleting runs can shrink it. A file made before keeps its
freed pages for new rows: it does not grow again until they are used, and
``PRAGMA auto_vacuum=INCREMENTAL; VACUUM`` converts it while nothing has it open
(docs/retention.md).
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

FREED_CHUNK = 128
"""Pages given back per step (512 KiB of 4 KiB pages): a step holds the file's write
lock, so other runs' appends wait for one step at most, not the whole deletion's (2,048
pages a step made an append beside a 100,000-item run's deletion wait 394 ms; 128, 77)."""


def connect(path: Path) -> sqlite3.Connection:
    """A connection to the file at ``path`` (made if missing), in autocommit mode: WAL
    (readers never wait for the writer), a 5 s wait for a locked file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


async def give_back_free_pages(db: sqlite3.Connection) -> int:
    """Shrink the file by its free pages, a step at a time; how many it gave back (none
    for a file made without incremental vacuum)."""
    if db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # 2: incremental
        return 0
    free = at_first = _free_pages(db)
    while free:
        # executescript steps the pragma to its end: one step of a statement (what
        # execute does, as the pragma returns no rows) gives back a single page.
        db.executescript(f"PRAGMA incremental_vacuum({FREED_CHUNK});")
        free = _free_pages(db)
        await asyncio.sleep(0)
    return at_first


def _free_pages(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA freelist_count").fetchone()[0])
