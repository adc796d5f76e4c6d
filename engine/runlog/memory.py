"""In-memory run log and task-log store: the twins of the SQLite and Redis adapters."""

from __future__ import annotations

from collections.abc import Sequence

from contracts.errors import NotFound
from contracts.events import Event
from contracts.ports import LogLine, LogPage, LogPosition, RunSummary
from contracts.topology import ShardMap, initial_shard_map
from engine.runlog.index import (
    index_update,
    matches,
    opens_log,
    owes_announcement,
    refuse_unfinished,
)
from engine.runlog.notify import AppendSignal
from engine.runlog.pages import page_of


class MemoryRunLog:
    """Implements ``RunLog`` and ``TaskLogStore`` in one process, nothing persisted."""

    def __init__(self) -> None:
        self._events: dict[str, list[Event]] = {}
        self._ids: dict[str, set[str]] = {}
        self._index: dict[str, RunSummary] = {}
        self._lines: dict[str, list[LogLine]] = {}
        self._snapshots: dict[str, tuple[bytes, int]] = {}
        self._appended = AppendSignal()
        self._shard_map: ShardMap | None = None
        self._unannounced: dict[str, Event] = {}

    async def append(
        self, run_id: str, events: Sequence[Event], *, then: Sequence[Event] = ()
    ) -> list[bool]:
        added = [self._add(run_id, event) for event in events]
        if all(added):
            added += [self._add(run_id, event) for event in then]
        else:
            added += [False] * len(then)
        if any(added):
            self._appended.notify(run_id)
        return added

    def _add(self, run_id: str, event: Event) -> bool:
        if run_id not in self._events and not opens_log(event):
            return False
        ids = self._ids.setdefault(run_id, set())
        event_id = event.id
        if event_id in ids:
            return False
        ids.add(event_id)
        self._events.setdefault(run_id, []).append(event)
        row = index_update(self._index.get(run_id), event)
        if row is not None:
            self._index[run_id] = row
        if owes_announcement(event):
            self._unannounced[event_id] = event
        return True

    async def read(self, run_id: str, after: int = 0, *, limit: int | None = None) -> list[Event]:
        if run_id not in self._events:
            if after:
                return []
            raise NotFound(f"no run {run_id!r}")
        return self._events[run_id][after : None if limit is None else after + limit]

    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> bool:
        if len(self._events.get(run_id, ())) <= after:
            await self._appended.wait(run_id, timeout)
        return len(self._events.get(run_id, ())) > after

    async def load(self, run_id: str) -> tuple[bytes | None, list[Event]]:
        events = await self.read(run_id)
        blob, upto = self._snapshots.get(run_id, (None, 0))
        return blob, events[upto:]

    async def save_snapshot(self, run_id: str, state: bytes) -> bool:
        self._snapshots[run_id] = (state, len(self._events.get(run_id, [])))
        return True

    async def running(self, shard: int | None = None) -> list[str]:
        return [
            r.run_id
            for r in self._index.values()
            if r.state == "running" and (shard is None or r.shard == shard)
        ]

    async def summary(self, run_id: str) -> RunSummary | None:
        return self._index.get(run_id)

    async def reindex(self, row: RunSummary) -> bool:
        return False  # the row is written with the events

    async def unannounced(
        self, shard: int | None = None, *, before: float | None = None
    ) -> list[Event]:
        def pinned(run_id: str) -> int | None:
            row = self._index.get(run_id)
            return None if row is None else row.shard

        return [
            event
            for event in self._unannounced.values()
            if (before is None or event.at < before)
            and (shard is None or pinned(event.run_id) == shard)
        ]

    async def announced(self, event_ids: Sequence[str]) -> None:
        for event_id in event_ids:
            self._unannounced.pop(event_id, None)

    async def shard_map(self, default: int) -> ShardMap:
        if self._shard_map is None:
            self._shard_map = initial_shard_map(default)
        return self._shard_map

    async def reshard(self, count: int) -> ShardMap:
        self._shard_map = (await self.shard_map(count)).resized(count)
        return self._shard_map

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
        rows = [
            r
            for r in self._index.values()
            if matches(
                r,
                state=state,
                workflow=workflow,
                trigger=trigger,
                since=since,
                until=until,
                top_level=top_level,
            )
            and (before is None or (r.submitted_at, r.run_id) < before)
        ]
        rows.sort(key=lambda r: (r.submitted_at, r.run_id), reverse=True)
        return rows[:limit]

    async def find_run(self, prefix: str) -> str:
        matches = [run_id for run_id in self._index if run_id.startswith(prefix)]
        if len(matches) != 1:
            raise NotFound(
                f"no run matches {prefix!r}" if not matches else f"{prefix!r} is ambiguous"
            )
        return matches[0]

    async def delete(self, run_id: str) -> bool:
        row = self._index.get(run_id)
        if row is None:
            return False
        refuse_unfinished(row)
        for kept in (self._lines, self._snapshots, self._ids, self._events, self._index):
            kept.pop(run_id, None)
        return True

    async def write_lines(self, lines: Sequence[LogLine]) -> None:
        for line in lines:
            self._lines.setdefault(line.run_id, []).append(line)

    async def read_lines(
        self, run_id: str, task: str | None = None, index: int | None = None
    ) -> list[LogLine]:
        return [
            ln
            for ln in self._lines.get(run_id, [])
            if (task is None or ln.task == task) and (index is None or ln.index == index)
        ]

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
        # A twin for tests and one process: cutting the page from all the lines is
        # enough here, and the same cut the Redis log makes for runs stored before it
        # kept a page order.
        return page_of(await self.read_lines(run_id, task, index), attempt, after, limit)

    async def close(self) -> None:
        return None
