"""A local home opened by two processes at once: the columns a home made earlier lacks
are added once, whoever gets there first."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import engine.runlog.sqlite as sqlite_runlog
from engine.runlog.sqlite import SqliteRunLog
from engine.sqlitefile import connect


def an_older_home(path: Path) -> None:
    """A home made before runs recorded their trigger and shard."""
    SqliteRunLog(path)._db.close()
    db = sqlite3.connect(path)
    db.execute("ALTER TABLE runs DROP COLUMN trigger")
    db.execute("ALTER TABLE runs DROP COLUMN shard")
    db.commit()
    db.close()


def columns(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [row[1] for row in db.execute("PRAGMA table_info(runs)")]
    finally:
        db.close()


def test_no_other_process_adds_a_column_between_the_look_and_the_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commands started at once on an older home: as this one, having found a column
    missing, adds it, the other tries to add them too (as its own set-up would). It
    must wait, or one of the two would add a column a second time and fail."""
    path = tmp_path / "conveyor.db"
    an_older_home(path)
    others_tries: list[str] = []

    def the_other_process_adds_them() -> None:
        other = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            other.execute("ALTER TABLE runs ADD COLUMN trigger TEXT NOT NULL DEFAULT ''")
            other.execute("ALTER TABLE runs ADD COLUMN shard INTEGER")
            others_tries.append("added")
        except sqlite3.OperationalError as exc:
            others_tries.append(str(exc))
        finally:
            other.close()

    def watched(where: Path) -> sqlite3.Connection:
        db = connect(where)

        def trace(statement: str) -> None:
            if statement.startswith("ALTER TABLE") and not others_tries:
                the_other_process_adds_them()

        db.set_trace_callback(trace)
        return db

    monkeypatch.setattr(sqlite_runlog, "connect", watched)
    SqliteRunLog(path)._db.close()
    assert others_tries == ["database is locked"]  # it waits for this one's set-up
    assert columns(path).count("trigger") == 1 and columns(path).count("shard") == 1
    SqliteRunLog(path)._db.close()  # and opens the home as it is now
