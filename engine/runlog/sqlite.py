"""The local run log for embedded mode: one SQLite file under ``.conveyor/``.

Persists across invocations, so ``conveyor runs`` after ``conveyor run`` lists the
run. WAL mode with ``synchronous=NORMAL``: an appended event survives the process
dying; appends are batched into one transaction per call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from contracts.codec import decode_event, encode
from contracts.errors import NotFound
from contracts.events import Event
from contracts.ports import LogLine, LogPage, LogPosition, RunSummary
from contracts.topology import ShardMap, initial_shard_map
from contracts.vocabulary import CHILD_TRIGGER
from engine.runlog.index import index_update, opens_log, owes_announcement, refuse_unfinished
from engine.runlog.notify import AppendSignal
from engine.runlog.pages import page_ending
from engine.sqlitefile import connect, give_back_free_pages

POLL_INTERVAL = 0.05
"""How often a follower looks for events appended by another process."""
DELETE_CHUNK = 2_000
"""Rows a deletion removes per transaction: a few milliseconds of holding the file."""
DELETING = "deleting"
"""The index state of a run being deleted (``SqliteRunLog.delete``)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    run_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_id ON events (event_id);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    state TEXT NOT NULL,
    submitted_at REAL NOT NULL,
    finished_at REAL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (submitted_at);
-- The unfinished runs are looked for every few seconds (a server's take-up), among
-- however many finished ones the home keeps.
CREATE INDEX IF NOT EXISTS runs_unfinished ON runs (run_id) WHERE state = 'running';
CREATE TABLE IF NOT EXISTS task_logs (
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    idx INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    stream TEXT NOT NULL,
    at REAL NOT NULL,
    text TEXT NOT NULL
);
DROP INDEX IF EXISTS task_logs_by_run;
DROP INDEX IF EXISTS task_logs_by_item;
CREATE INDEX IF NOT EXISTS task_logs_by_attempt ON task_logs (run_id, task, idx, attempt);
CREATE TABLE IF NOT EXISTS settings (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
-- Run state changes appended and not announced yet (``RunLog.unannounced``).
CREATE TABLE IF NOT EXISTS unannounced (
    event_id TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    at REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshots (
    run_id TEXT PRIMARY KEY,
    state BLOB NOT NULL,
    upto INTEGER NOT NULL
);
"""


UNFINISHED_RUNS = "SELECT run_id FROM runs WHERE state = 'running' AND (? IS NULL OR shard = ?)"
"""The ids of unfinished runs (of one shard, or all): read through ``runs_unfinished``."""


class SqliteRunLog:
    """Implements ``RunLog`` and ``TaskLogStore`` on a local SQLite database."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = connect(self.path)
        self._set_up()
        self._appended = AppendSignal()

    def _set_up(self) -> None:
        """Make the tables, and add the columns a home made earlier lacks, under the
        file's write lock: two commands started at once on a new home (``conveyor run``
        and ``conveyor runs``) would otherwise both see a column missing, and the
        second to add it would fail."""
        db = self._db
        db.executescript("BEGIN IMMEDIATE;" + _SCHEMA)  # left open: committed below
        try:
            columns = {row[1] for row in db.execute("PRAGMA table_info(runs)")}
            if "trigger" not in columns:  # a home made before runs recorded their trigger
                db.execute("ALTER TABLE runs ADD COLUMN trigger TEXT NOT NULL DEFAULT ''")
            if "shard" not in columns:  # a home made before runs were pinned to a shard
                db.execute("ALTER TABLE runs ADD COLUMN shard INTEGER")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    async def append(
        self, run_id: str, events: Sequence[Event], *, then: Sequence[Event] = ()
    ) -> list[bool]:
        db = self._db
        added: list[bool] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,))
            seq = int(row.fetchone()[0])
            summary = self._summary(run_id)
            if summary is not None and summary.state == DELETING:
                db.execute("ROLLBACK")
                return [False] * (len(events) + len(then))
            for position, event in enumerate([*events, *then]):
                if position == len(events) and not all(added):
                    added.extend([False] * len(then))
                    break
                if seq == 0 and not opens_log(event):
                    added.append(False)
                    continue
                body = encode(event)
                cursor = db.execute(
                    "INSERT OR IGNORE INTO events (run_id, seq, event_id, body)"
                    " VALUES (?, ?, ?, ?)",
                    (run_id, seq + 1, event.id, body),
                )
                if cursor.rowcount == 0:
                    added.append(False)
                    continue
                seq += 1
                added.append(True)
                if owes_announcement(event):
                    db.execute(
                        "INSERT OR IGNORE INTO unannounced VALUES (?, ?, ?, ?)",
                        (event.id, run_id, event.at, body),
                    )
                update = index_update(summary, event)
                if update is not None:
                    summary = update
                    db.execute(
                        "INSERT OR REPLACE INTO runs (run_id, workflow, state, submitted_at,"
                        " finished_at, reason, trigger, shard) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            update.run_id,
                            update.workflow,
                            update.state,
                            update.submitted_at,
                            update.finished_at,
                            update.reason,
                            update.trigger,
                            update.shard,
                        ),
                    )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if any(added):
            self._appended.notify(run_id)
        return added

    def _summary(self, run_id: str) -> RunSummary | None:
        row = self._db.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return _row_to_summary(row) if row else None

    async def read(self, run_id: str, after: int = 0, *, limit: int | None = None) -> list[Event]:
        rows = self._db.execute(
            "SELECT body FROM events WHERE run_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (run_id, after, -1 if limit is None else limit),
        ).fetchall()
        if not rows and not after:
            raise NotFound(f"no run {run_id!r}")
        return [decode_event(body) for (body,) in rows]

    def _count(self, run_id: str) -> int:
        row = self._db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM events WHERE run_id = ?", (run_id,)
        ).fetchone()
        return int(row[0])

    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> bool:
        # Appends in this process wake the waiter at once; another process's appends
        # (the file is shared) are seen at the next poll.
        deadline = time.monotonic() + timeout
        while (count := self._count(run_id)) <= after:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await self._appended.wait(run_id, min(left, POLL_INTERVAL))
        return count > after

    async def load(self, run_id: str) -> tuple[bytes | None, list[Event]]:
        row = self._db.execute(
            "SELECT state, upto FROM snapshots WHERE run_id = ?", (run_id,)
        ).fetchone()
        blob, upto = (row[0], row[1]) if row else (None, 0)
        rows = self._db.execute(
            "SELECT body FROM events WHERE run_id = ? AND seq > ? ORDER BY seq", (run_id, upto)
        ).fetchall()
        if not rows and blob is None:
            raise NotFound(f"no run {run_id!r}")
        return blob, [decode_event(body) for (body,) in rows]

    async def save_snapshot(self, run_id: str, state: bytes) -> bool:
        self._db.execute(
            "INSERT OR REPLACE INTO snapshots SELECT ?, ?, COALESCE(MAX(seq), 0) FROM events"
            " WHERE run_id = ?",
            (run_id, state, run_id),
        )
        return True

    async def running(self, shard: int | None = None) -> list[str]:
        rows = self._db.execute(UNFINISHED_RUNS, (shard, shard)).fetchall()
        return [str(r[0]) for r in rows]

    async def unannounced(
        self, shard: int | None = None, *, before: float | None = None
    ) -> list[Event]:
        rows = self._db.execute(
            "SELECT body FROM unannounced WHERE (? IS NULL OR at < ?) AND (? IS NULL"
            " OR run_id IN (SELECT run_id FROM runs WHERE shard = ?)) ORDER BY rowid",
            (before, before, shard, shard),
        ).fetchall()
        return [decode_event(body) for (body,) in rows]

    async def announced(self, event_ids: Sequence[str]) -> None:
        self._db.executemany(
            "DELETE FROM unannounced WHERE event_id = ?", [(i,) for i in event_ids]
        )

    async def summary(self, run_id: str) -> RunSummary | None:
        return self._summary(run_id)

    async def reindex(self, row: RunSummary) -> bool:
        return False  # the row is written with the events, in one transaction

    async def shard_map(self, default: int) -> ShardMap:
        initial = msgspec.json.encode(initial_shard_map(default))
        self._db.execute(
            "INSERT OR IGNORE INTO settings (name, value) VALUES ('shard_map', ?)", (initial,)
        )
        row = self._db.execute("SELECT value FROM settings WHERE name = 'shard_map'").fetchone()
        return msgspec.json.decode(row[0], type=ShardMap)

    async def reshard(self, count: int) -> ShardMap:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            new = (await self.shard_map(count)).resized(count)
            self._db.execute(
                "UPDATE settings SET value = ? WHERE name = 'shard_map'",
                (msgspec.json.encode(new),),
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return new

    async def runs(
        self,
        *,
        state: str | None = None,
        workflow: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
        trigger: str | None = None,
        since: float | None = None,
        until: float | None = None,
        top_level: bool = False,
    ) -> list[RunSummary]:
        at, after_id = before if before is not None else (None, "")
        kind = f"{trigger}:%" if trigger is not None else None
        query = "SELECT * FROM runs WHERE (? IS NULL OR state = ?) AND (? IS NULL OR workflow = ?)"
        query += " AND (? IS NULL OR submitted_at < ? OR (submitted_at = ? AND run_id < ?))"
        query += " AND (? IS NULL OR trigger = ? OR trigger LIKE ?)"
        query += " AND (? IS NULL OR submitted_at >= ?) AND (? IS NULL OR submitted_at <= ?)"
        query += " AND (? = 0 OR trigger NOT LIKE ?)"
        query += " ORDER BY submitted_at DESC, run_id DESC LIMIT ?"
        values: tuple[object, ...] = (state, state, workflow, workflow, at, at, at, after_id)
        values += (trigger, trigger, kind, since, since, until, until)
        values += (top_level, f"{CHILD_TRIGGER}%", limit)
        rows = self._db.execute(query, values).fetchall()
        return [_row_to_summary(row) for row in rows]

    async def find_run(self, prefix: str) -> str:
        rows = self._db.execute(
            "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2",
            (prefix.replace("%", "\\%").replace("_", "\\_") + "%",),
        ).fetchall()
        if len(rows) != 1:
            raise NotFound(f"no run matches {prefix!r}" if not rows else f"{prefix!r} is ambiguous")
        return str(rows[0][0])

    async def delete(self, run_id: str) -> bool:
        """First marks the run ``deleting`` (its appends are refused from then on), then
        deletes its rows a chunk per transaction, the event log from its end, so that
        other runs' appends and the server's requests go on meanwhile (one transaction
        for a 100,000-item run's 200,000 events held the file, and this process, for
        most of a second). A deletion cut short leaves the marked row: deleting again
        finishes it."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = self._summary(run_id)
            if row is not None:
                refuse_unfinished(row)
                db.execute("UPDATE runs SET state = ? WHERE run_id = ?", (DELETING, run_id))
                db.execute("DELETE FROM snapshots WHERE run_id = ?", (run_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if row is None:
            return False
        for table, order in (("task_logs", "rowid"), ("events", "seq DESC")):
            chunk = f"SELECT rowid FROM {table} WHERE run_id = ? ORDER BY {order} LIMIT ?"
            while db.execute(
                f"DELETE FROM {table} WHERE rowid IN ({chunk})", (run_id, DELETE_CHUNK)
            ).rowcount:
                await asyncio.sleep(0)
        # Of deletions side by side (a pruner deleting a child run on its own and with its
        # parent), the one that takes the row out says it deleted the run.
        deleted = db.execute("DELETE FROM runs WHERE run_id = ?", (run_id,)).rowcount > 0
        await give_back_free_pages(db)
        return deleted

    async def write_lines(self, lines: Sequence[LogLine]) -> None:
        self._db.execute("BEGIN")
        self._db.executemany(
            "INSERT INTO task_logs VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(ln.run_id, ln.task, ln.index, ln.attempt, ln.stream, ln.at, ln.text) for ln in lines],
        )
        self._db.execute("COMMIT")

    async def read_lines(
        self, run_id: str, task: str | None = None, index: int | None = None
    ) -> list[LogLine]:
        rows = self._db.execute(
            "SELECT * FROM task_logs WHERE run_id = ? AND (? IS NULL OR task = ?)"
            " AND (? IS NULL OR idx = ?) ORDER BY rowid",
            (run_id, task, task, index, index),
        ).fetchall()
        return [_line(r) for r in rows]

    async def page_lines(
        self,
        run_id: str,
        task: str | None = None,
        index: int | None = None,
        attempt: int | None = None,
        *,
        after: LogPosition | None = None,
        limit: int,
    ) -> LogPage:
        name, item, number, read = after if after is not None else ("", -1, 0, 0)
        wanted = (
            " AND (? IS NULL OR task = ?) AND (? IS NULL OR idx = ?) AND (? IS NULL OR attempt = ?)"
        )
        filters = (task, task, index, index, attempt, attempt)
        # Lines only ever join an attempt's end: the rest of the attempt the page starts
        # in is what follows its first ``read`` lines.
        rows = self._db.execute(
            f"SELECT * FROM task_logs WHERE run_id = ? AND task = ? AND idx = ? AND attempt = ?"
            f"{wanted} ORDER BY rowid LIMIT ? OFFSET ?",
            (run_id, name, item, number, *filters, limit, read),
        ).fetchall()
        rows += self._db.execute(
            f"SELECT * FROM task_logs WHERE run_id = ?{wanted} AND (task, idx, attempt) > (?, ?, ?)"
            " ORDER BY task, idx, attempt, rowid LIMIT ?",
            (run_id, *filters, name, item, number, limit - len(rows)),
        ).fetchall()
        return page_ending([_line(r) for r in rows], limit, after)

    async def close(self) -> None:
        self._db.close()


def _line(r: tuple[Any, ...]) -> LogLine:
    return LogLine(
        run_id=r[0], task=r[1], index=r[2], attempt=r[3], stream=r[4], at=r[5], text=r[6]
    )


def _row_to_summary(row: tuple[object, ...]) -> RunSummary:
    run_id, workflow, state, submitted_at, finished_at, reason, trigger, shard = row
    return RunSummary(
        shard=int(shard) if shard is not None else None,  # type: ignore[call-overload]
        trigger=str(trigger),
        run_id=str(run_id),
        workflow=str(workflow),
        state=str(state),
        submitted_at=float(submitted_at),  # type: ignore[arg-type]
        finished_at=float(finished_at) if finished_at is not None else None,  # type: ignore[arg-type]
        reason=str(reason),
    )
