"""The embedded server's trigger store: tables beside the run log in the home's SQLite
file. Every write is its own committed transaction (WAL): what was admitted survives the
process dying."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import msgspec

from contracts.errors import NotFound
from contracts.ports import TriggerRecord
from engine.sqlitefile import connect
from engine.triggers.stores import RECORDS_KEPT

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trigger_workflows (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    document BLOB NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS trigger_inbox (
    key TEXT PRIMARY KEY,
    admitted_at REAL NOT NULL,
    keep_until REAL NOT NULL,
    payload BLOB,
    settled INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS trigger_inbox_open ON trigger_inbox (settled, admitted_at);
CREATE TABLE IF NOT EXISTS trigger_records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow TEXT NOT NULL,
    trigger TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS trigger_records_by_workflow ON trigger_records (workflow, seq);
CREATE TABLE IF NOT EXISTS trigger_cursors (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""

_encode = msgspec.json.Encoder().encode
_decode_record = msgspec.json.Decoder(TriggerRecord).decode


class SqliteTriggerStore:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._db = connect(self.path)
        self._db.executescript(_SCHEMA)
        self._records_written = 0

    async def register(self, name: str, document: bytes) -> int:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT version FROM trigger_workflows WHERE name = ? AND document = ?",
                (name, document),
            ).fetchone()
            if row is None:
                (latest,) = db.execute(
                    "SELECT COALESCE(MAX(version), 0) FROM trigger_workflows WHERE name = ?",
                    (name,),
                ).fetchone()
                row = (latest + 1,)
                db.execute(
                    "INSERT INTO trigger_workflows (name, version, document) VALUES (?, ?, ?)",
                    (name, row[0], document),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(row[0])

    async def workflow(self, name: str, version: int | None = None) -> tuple[int, bytes]:
        if version is None:
            row = self._db.execute(
                "SELECT version, document FROM trigger_workflows WHERE name = ?"
                " ORDER BY version DESC LIMIT 1",
                (name,),
            ).fetchone()
        else:
            row = self._db.execute(
                "SELECT version, document FROM trigger_workflows WHERE name = ? AND version = ?",
                (name, version),
            ).fetchone()
        if row is None:
            raise NotFound(f"no workflow {name!r}" + (f" version {version}" if version else ""))
        return int(row[0]), bytes(row[1])

    async def workflows(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT name, MAX(version) FROM trigger_workflows GROUP BY name"
        ).fetchall()
        return {name: int(version) for name, version in rows}

    async def admit(self, key: str, payload: bytes, *, keep: float) -> bool:
        now = self._clock()
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            # A key whose deduplication has lapsed may be admitted again.
            db.execute(
                "DELETE FROM trigger_inbox WHERE key = ? AND keep_until <= ? AND settled = 1",
                (key, now),
            )
            cursor = db.execute(
                "INSERT OR IGNORE INTO trigger_inbox (key, admitted_at, keep_until, payload)"
                " VALUES (?, ?, ?, ?)",
                (key, now, now + keep, payload),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return cursor.rowcount == 1

    async def pending(self, *, older_than: float = 0.0) -> list[tuple[str, bytes]]:
        rows = self._db.execute(
            "SELECT key, payload FROM trigger_inbox WHERE settled = 0 AND admitted_at <= ?"
            " ORDER BY admitted_at",
            (self._clock() - older_than,),
        ).fetchall()
        return [(key, bytes(payload)) for key, payload in rows]

    async def settle(self, key: str) -> None:
        self._db.execute(
            "UPDATE trigger_inbox SET settled = 1, payload = NULL WHERE key = ?", (key,)
        )

    async def record(self, record: TriggerRecord) -> None:
        self._db.execute(
            "INSERT INTO trigger_records (workflow, trigger, body) VALUES (?, ?, ?)",
            (record.workflow, record.trigger, _encode(record)),
        )
        self._records_written += 1
        if self._records_written % 1000 == 0:
            self._trim(record.workflow)

    def _trim(self, workflow: str) -> None:
        now = self._clock()
        self._db.execute(
            "DELETE FROM trigger_records WHERE workflow = ? AND seq <= ("
            " SELECT seq FROM trigger_records WHERE workflow = ?"
            " ORDER BY seq DESC LIMIT 1 OFFSET ?)",
            (workflow, workflow, RECORDS_KEPT),
        )
        self._db.execute("DELETE FROM trigger_inbox WHERE settled = 1 AND keep_until <= ?", (now,))

    async def records(
        self, workflow: str, trigger: str | None = None, *, limit: int = 100
    ) -> list[TriggerRecord]:
        if trigger is None:
            rows = self._db.execute(
                "SELECT body FROM trigger_records WHERE workflow = ? ORDER BY seq DESC LIMIT ?",
                (workflow, limit),
            ).fetchall()
        else:
            rows = self._db.execute(
                "SELECT body FROM trigger_records WHERE workflow = ? AND trigger = ?"
                " ORDER BY seq DESC LIMIT ?",
                (workflow, trigger, limit),
            ).fetchall()
        return [_decode_record(body) for (body,) in rows]

    async def cursor(self, key: str) -> bytes | None:
        row = self._db.execute("SELECT value FROM trigger_cursors WHERE key = ?", (key,)).fetchone()
        return None if row is None else bytes(row[0])

    async def set_cursor(self, key: str, value: bytes) -> None:
        self._db.execute(
            "INSERT INTO trigger_cursors (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def close(self) -> None:
        self._db.close()
