"""The Redis run log: one stream per run, idempotent appends, an index, task logs, snapshots.

Keys of one run share the hash tag ``{<run_id>}`` so they land in one Redis Cluster
slot and a Lua script can touch them atomically:

- ``cv:{R}:events``   stream of encoded events, in order; one entry per append
                     (fields "1", "2", ... hold its events)
- ``cv:{R}:ids``      set of event ids already appended (the idempotency check)
- ``cv:{R}:summary``  hash: the run's index row
- ``cv:{R}:snap``     hash: latest state snapshot and the stream id it covers
- ``cv:{R}:log...``   task logs (``engine.runlog.redislines``)

The index across runs lives in sorted sets scored by submission time:
``cv:runs``, ``cv:runs:state:<state>``, ``cv:runs:wf:<workflow>``, ``cv:runs:top``
(the runs no workflow step started), and the running
runs pinned to each coordinator shard, ``cv:runs:running:shard:<N>``. They are
derived from the runs' summaries. ``cv:shard-map`` holds the shard map.
``cv:unannounced`` (scored by time) and ``cv:unannounced:bodies`` hold the run state
changes not announced yet.

While Redis is unreachable every call waits and retries with backoff
(``engine.redis_retry``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import msgspec
import structlog

from contracts.codec import decode_event, encode
from contracts.errors import NotFound
from contracts.events import Event
from contracts.ports import LogLine, LogPage, LogPosition, RunSummary
from contracts.topology import ShardMap, initial_shard_map
from engine.redis_client import redis_client
from engine.redis_retry import retrying
from engine.runlog.index import index_update, matches, opens_log, owes_announcement
from engine.runlog.redisdelete import RunDeletion
from engine.runlog.redisindex import (
    DELETED,
    changes_behind,
    forget_row,
    listed,
    queue_owed,
    queue_row,
    row_from,
    top_level_runs,
)
from engine.runlog.rediskeys import (
    ALL_RUNS,
    PREFIX,
    UNANNOUNCED,
    UNANNOUNCED_BODIES,
    key,
    running_on,
    runs_in_state,
    runs_of_workflow,
)
from engine.runlog.redislines import RedisTaskLogs
from engine.runlog.redisstream import events_of

log = structlog.get_logger("conveyor.redis")
T = TypeVar("T")

MAX_BLOCK_MS = 4_000
"""Longest blocking read of a follower: under the client's 5 s socket timeout."""

_APPEND = """
-- ARGV[1]: how many of the events gate the rest; then (id, body) pairs.
-- Appends the events not seen yet; the ones after the gate only if every gating
-- event was new. A few commands per call, not per event: one membership check, one
-- SADD and one XADD (several events per stream entry) per 500 events.
-- An entry's id is 0-<events in the log after it>, so a reader that has seen N events
-- asks for the entries after 0-N (the id set's size is the count of events so far).
-- The last ARGV is 1 when the first event opens a log (a submission): the only
-- event appended to a run with none.
local gate = tonumber(ARGV[1])
local total = redis.call('SCARD', KEYS[2])
local count = (#ARGV - 2) / 2
local flags, seen = {}, {}
if total == 0 and ARGV[#ARGV] ~= '1' then
  for i = 1, count do flags[i] = 0 end
  flags[count + 1] = ''
  return flags
end
for first = 1, count, 500 do
  local last = math.min(first + 499, count)
  local chunk = {}
  for i = first, last do chunk[#chunk + 1] = ARGV[2 * i] end
  local present = redis.call('SMISMEMBER', KEYS[2], unpack(chunk))
  for i = first, last do
    local id = ARGV[2 * i]
    if present[i - first + 1] == 0 and not seen[id] then flags[i] = 1 else flags[i] = 0 end
    seen[id] = true
  end
end
for i = 1, gate do
  if flags[i] == 0 then
    for j = gate + 1, count do flags[j] = 0 end
    break
  end
end
local tail = ''
local ids, fields = {}, {}
for i = 1, count do
  if flags[i] == 1 then
    ids[#ids + 1] = ARGV[2 * i]
    fields[#fields + 1] = tostring(#ids)
    fields[#fields + 1] = ARGV[2 * i + 1]
  end
  if #ids > 0 and (#ids == 500 or i == count) then
    redis.call('SADD', KEYS[2], unpack(ids))
    total = total + #ids
    tail = redis.call('XADD', KEYS[1], '0-' .. total, unpack(fields))
    ids, fields = {}, {}
  end
end
flags[#flags + 1] = tail
return flags
"""


class RedisRunLog:
    """Implements ``RunLog`` and ``TaskLogStore`` on Redis."""

    def __init__(self, url: str, *, retry_max: float = 2.0) -> None:
        # Responses are bytes (no decode_responses); redis-py's stubs cannot say which
        # command returns what under that setting, so the client is typed loosely.
        self._redis: Any = redis_client(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=10
        )
        self._append = self._redis.register_script(_APPEND)
        self._swap_map = self._redis.register_script(_SWAP)
        self._retry_max = retry_max
        self._tail: dict[str, str] = {}
        self._lines = RedisTaskLogs(self._redis, self._retrying)
        self._deletion = RunDeletion(self._redis, self._lines, self._retrying)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await retrying(what, call, most=self._retry_max)

    # -- events -----------------------------------------------------------------

    async def append(
        self, run_id: str, events: Sequence[Event], *, then: Sequence[Event] = ()
    ) -> list[bool]:
        everything = [*events, *then]
        if not everything:
            return []
        argv: list[Any] = [len(events)]
        for event in everything:
            argv += [event.id, encode(event)]
        argv.append(1 if opens_log(everything[0]) else 0)
        keys = [key(run_id, "events"), key(run_id, "ids")]
        result = await self._retrying("append", lambda: self._append(keys=keys, args=argv))
        added = [bool(flag) for flag in result[:-1]]
        if result[-1]:
            self._tail[run_id] = (
                result[-1].decode() if isinstance(result[-1], bytes) else result[-1]
            )
        if any(new and e.kind in _INDEXED for new, e in zip(added, everything, strict=True)):
            await self._retrying("index", lambda: self._update_index(run_id, everything, added))
        return added

    async def _update_index(self, run_id: str, events: Sequence[Event], added: list[bool]) -> None:
        """The run's index row, and the run changes it now owes (``unannounced``), in
        one round trip after reading the row."""
        summary = await self._summary(run_id)
        row: RunSummary | None = None
        pipe = self._redis.pipeline(transaction=False)
        for new, event in zip(added, events, strict=True):
            if not new:
                continue
            if owes_announcement(event):
                queue_owed(pipe, event)
            update = index_update(summary, event)
            if update is not None:
                queue_row(pipe, summary, update)
                summary = row = update
        await self._write_rows(pipe, row)

    async def _write_rows(self, pipe: Any, row: RunSummary | None) -> None:
        """Send the writes queued on ``pipe``; then, if ``row`` was written, whether the
        run's events are still there (in the row's slot), and if not, take it back."""
        if row is None:
            await pipe.execute()
            return
        pipe.exists(key(row.run_id, "events"))
        if not (await pipe.execute())[-1]:
            await forget_row(self._redis, row)

    async def reindex(self, row: RunSummary) -> bool:
        return await self._retrying("index", lambda: self._reindex(row))

    async def _reindex(self, row: RunSummary) -> bool:
        # The row follows the events by a round trip: a process that died in between,
        # or an index write that failed for good, left it behind its log.
        raw = await self._redis.hgetall(key(row.run_id, "summary"))
        if DELETED in raw:
            return False  # a deletion is under way: it takes the row away
        current = row_from(row.run_id, raw) if raw else None
        if current is not None:
            # Only the run's course can be behind. The rest was written from the
            # submission itself, and a state rebuilt from an older snapshot may lack it.
            row = msgspec.structs.replace(
                current, state=row.state, finished_at=row.finished_at, reason=row.reason
            )
        if current == row:
            return False
        pipe = self._redis.pipeline(transaction=False)
        queue_row(pipe, current, row)
        # The run changes that were to be kept as owed announcements along with the
        # row (a child run's end is how its parent hears of it).
        for event in await changes_behind(self._redis, current, row):
            queue_owed(pipe, event)
        await self._write_rows(pipe, row)
        return True

    async def _summary(self, run_id: str) -> RunSummary | None:
        raw = await self._redis.hgetall(key(run_id, "summary"))
        return row_from(run_id, raw) if raw and DELETED not in raw else None

    async def summary(self, run_id: str) -> RunSummary | None:
        return await self._retrying("summary", lambda: self._summary(run_id))

    async def read(self, run_id: str, after: int = 0, *, limit: int | None = None) -> list[Event]:
        # An entry holds one append's events (one or more): ``limit`` entries hold at
        # least ``limit`` events, or all there are.
        entries = await self._retrying(
            "read",
            lambda: self._redis.xrange(key(run_id, "events"), min=f"0-{after + 1}", count=limit),
        )
        if not entries and not after:
            raise NotFound(f"no run {run_id!r}")
        events = events_of(entries, after)
        return events if limit is None else events[:limit]

    async def wait_for_events(self, run_id: str, after: int, timeout: float) -> bool:
        streams = {key(run_id, "events"): f"0-{after}"}
        # Blocking 0 ms would mean forever; and a block must end before the socket timeout.
        block = min(int(timeout * 1000), MAX_BLOCK_MS) or None
        found = await self._retrying(
            "wait", lambda: self._redis.xread(streams, count=1, block=block)
        )
        return bool(found)

    async def load(self, run_id: str) -> tuple[bytes | None, list[Event]]:
        """The latest snapshot of a run (if any) and the events after it."""
        snap = await self._retrying("snapshot", lambda: self._redis.hgetall(key(run_id, "snap")))
        start = "-"
        blob = None
        if snap:
            blob = snap[b"state"]
            start = "(" + snap[b"upto"].decode()
        entries = await self._retrying(
            "read", lambda: self._redis.xrange(key(run_id, "events"), min=start)
        )
        if not entries and blob is None:
            raise NotFound(f"no run {run_id!r}")
        if entries:
            last = entries[-1][0]
            self._tail[run_id] = last.decode() if isinstance(last, bytes) else last
        return blob, events_of(entries)

    async def save_snapshot(self, run_id: str, state: bytes) -> bool:
        """Snapshot the state as of the last event this log appended or read for the run."""
        upto = self._tail.get(run_id)
        if upto is None:
            return False
        await self._retrying(
            "snapshot",
            lambda: self._redis.hset(key(run_id, "snap"), mapping={"state": state, "upto": upto}),
        )
        return True

    # -- index --------------------------------------------------------------------

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
        if state:
            source = runs_in_state(state)
        elif workflow:
            source = runs_of_workflow(workflow)
        elif top_level:
            source = await top_level_runs(self._redis)
        else:
            source = ALL_RUNS
        rows, deleted = await listed(
            self._redis,
            source,
            limit=limit,
            before=before,
            since=since,
            until=until,
            wanted=partial(
                matches,
                state=state,
                workflow=workflow,
                trigger=trigger,
                since=since,
                until=until,
                top_level=top_level,
            ),
        )
        for row in deleted:  # deletions cut short: finished by whoever passes them
            await self._deletion.finish(row)
        return rows

    async def running(self, shard: int | None = None) -> list[str]:
        source = runs_in_state("running") if shard is None else running_on(shard)
        ids = await self._retrying("running", lambda: self._redis.zrange(source, 0, -1))
        return [run_id.decode() for run_id in ids]

    async def unannounced(
        self, shard: int | None = None, *, before: float | None = None
    ) -> list[Event]:
        async def read() -> list[Event]:
            top = "+inf" if before is None else f"({before!r}"
            ids = await self._redis.zrangebyscore(UNANNOUNCED, "-inf", top)
            if not ids:
                return []
            bodies = await self._redis.hmget(UNANNOUNCED_BODIES, ids)
            marked = [i for i, body in zip(ids, bodies, strict=True) if body is None]
            if marked:  # a mark that removed the body and not the id
                await self._redis.zrem(UNANNOUNCED, *marked)
            events = [decode_event(body) for body in bodies if body is not None]
            if shard is None:
                return events
            pipe = self._redis.pipeline(transaction=False)
            for event in events:
                pipe.hget(key(event.run_id, "summary"), "shard")
            pinned = await pipe.execute()
            return [e for e, on in zip(events, pinned, strict=True) if on == str(shard).encode()]

        return await self._retrying("unannounced", read)

    async def announced(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return

        async def mark() -> None:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hdel(UNANNOUNCED_BODIES, *event_ids)
            pipe.zrem(UNANNOUNCED, *event_ids)  # after: an id left alone is cleared on reading
            await pipe.execute()

        await self._retrying("announced", mark)

    async def shard_map(self, default: int) -> ShardMap:
        raw = await self._retrying("shard map", lambda: self._redis.get(SHARD_MAP_KEY))
        if raw is None:  # the first reader stores it; a racing one keeps the other's
            initial = msgspec.json.encode(initial_shard_map(default))
            await self._retrying(
                "shard map", lambda: self._redis.set(SHARD_MAP_KEY, initial, nx=True)
            )
            raw = await self._retrying("shard map", lambda: self._redis.get(SHARD_MAP_KEY))
        return msgspec.json.decode(raw, type=ShardMap)

    async def reshard(self, count: int) -> ShardMap:
        while True:  # compare and set: a concurrent change makes us read again
            current = await self.shard_map(count)
            new = current.resized(count)
            swapped = await self._swap_map(
                keys=[SHARD_MAP_KEY],
                args=[msgspec.json.encode(current), msgspec.json.encode(new)],
            )
            if swapped:
                return new

    async def find_run(self, prefix: str) -> str:
        # By its id, a run is found from its first append: its index row is written by
        # the round trip after it, and whoever follows the log can read it before.
        if await self._redis.exists(key(prefix, "summary"), key(prefix, "events")):
            return prefix
        matches: list[str] = []
        async for found in self._redis.scan_iter(
            match=f"{PREFIX}:{{{prefix}*}}:summary", count=1000
        ):
            text = found.decode()
            matches.append(text[text.index("{") + 1 : text.index("}")])
            if len(matches) > 1:
                break
        if len(matches) != 1:
            raise NotFound(
                f"no run matches {prefix!r}" if not matches else f"{prefix!r} is ambiguous"
            )
        return matches[0]

    async def delete(self, run_id: str) -> bool:
        self._tail.pop(run_id, None)
        return await self._deletion.delete(run_id)

    # -- task logs ------------------------------------------------------------------

    async def write_lines(self, lines: Sequence[LogLine]) -> None:
        await self._lines.write_lines(lines)

    async def read_lines(
        self, run_id: str, task: str | None = None, index: int | None = None
    ) -> list[LogLine]:
        return await self._lines.read_lines(run_id, task, index)

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
        return await self._lines.page_lines(run_id, task, index, attempt, after=after, limit=limit)

    async def close(self) -> None:
        await self._redis.aclose()


_INDEXED = frozenset({"run_submitted", "run_completed", "run_retry_requested"})
SHARD_MAP_KEY = f"{PREFIX}:shard-map"
_SWAP = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""
