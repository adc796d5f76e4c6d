"""Task logs on Redis: one capped list per attempt, and the indexes that find them.

Keys, beside the run's others (``engine.runlog.redis``), under the run's hash tag:

- ``cv:{R}:log:T:I:A``   list of log lines of task T, item I, attempt A (capped)
- ``cv:{R}:logindex``    sorted set of those list keys, all scored 0 so that they sort
                         by name: the attempts of one task or one item are a range
                         (runs stored before it have the set ``cv:{R}:logkeys`` instead)
- ``cv:{R}:logtasks``    set of the names of tasks that printed
- ``cv:{R}:logitems:T``  sorted set of task T's list keys scored by item and attempt:
                         the page order, so a page reads its own attempts only
                         (runs stored before it are paged by reading all their lines)

A page position counts the lines of an attempt already read, so a list capped while it
is paged (past 10,000 lines) shifts under it and the next page skips what was dropped.
A run that goes on across the upgrade is told apart by counting: fewer lists in page
order than in the name index; more new lists written between the two counts than old
ones would hide the old ones from its pages.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import msgspec
from redis.asyncio import Redis

from contracts.ports import LogLine, LogPage, LogPosition
from engine.runlog.pages import MAX_LINES_PER_ATTEMPT, page_ending, page_of
from engine.runlog.rediskeys import key

T = TypeVar("T")
Retrying = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]

MAX_LINE_CHARS = 8_192
ATTEMPTS_PER_ITEM = 2**20
"""An attempt's score in ``logitems:T`` is ``item * ATTEMPTS_PER_ITEM + attempt``: exact
in a double up to 8.5 billion items."""
LISTS_PER_LOOK = 1_000

_READ_LISTS = """
-- KEYS: attempt lists in page order. ARGV[1]: lines of the first one read before;
-- ARGV[2]: room left on the page. One call for a page's lists, not one per list.
local skip, room = tonumber(ARGV[1]), tonumber(ARGV[2])
local lines = {}
for i = 1, #KEYS do
  if room <= 0 then break end
  local got = redis.call('LRANGE', KEYS[i], skip, skip + room - 1)
  for _, line in ipairs(got) do lines[#lines + 1] = line end
  room = room - #got
  skip = 0
end
return lines
"""

_line_encoder = msgspec.json.Encoder()
_line_decoder = msgspec.json.Decoder(LogLine)


class RedisTaskLogs:
    """The ``TaskLogStore`` half of ``RedisRunLog``."""

    def __init__(self, redis: Redis, retrying: Retrying) -> None:
        self._redis = redis
        self._retrying = retrying
        self._read_lists = redis.register_script(_READ_LISTS)

    async def write_lines(self, lines: Sequence[LogLine]) -> None:
        if not lines:
            return
        pipe = self._redis.pipeline(transaction=False)
        touched: set[str] = set()
        for line in lines:
            if len(line.text) > MAX_LINE_CHARS:
                line = msgspec.structs.replace(
                    line, text=line.text[:MAX_LINE_CHARS] + "…[truncated]"
                )
            list_key = key(line.run_id, f"log:{line.task}:{line.index}:{line.attempt}")
            pipe.rpush(list_key, _line_encoder.encode(line))
            if list_key not in touched:
                touched.add(list_key)
                # The page order before the name index: a reader that counts the
                # name index first never finds more names than lists in page order.
                pipe.sadd(key(line.run_id, "logtasks"), line.task)
                score = line.index * ATTEMPTS_PER_ITEM + line.attempt
                pipe.zadd(key(line.run_id, f"logitems:{line.task}"), {list_key: score})
                pipe.zadd(key(line.run_id, "logindex"), {list_key: 0})
        for list_key in touched:
            pipe.ltrim(list_key, -MAX_LINES_PER_ATTEMPT, -1)
        await self._retrying("logs", pipe.execute)

    async def read_lines(
        self, run_id: str, task: str | None = None, index: int | None = None
    ) -> list[LogLine]:
        # The lists of one task, or of one of its items, are a range of the index by
        # name: reading one item of a 100,000-item task touches that item's lists only.
        named = key(run_id, "log:" if task is None else f"log:{task}:")
        if task is not None and index is not None:
            named += f"{index}:"
        prefix = named.encode()
        looking = self._redis.pipeline(transaction=False)
        looking.zrangebylex(key(run_id, "logindex"), b"[" + prefix, b"[" + prefix + b"\xff")
        # Lists written before the index was kept are in a set (of runs stored then, or
        # of a run going on across the upgrade); it does not exist for later runs.
        looking.smembers(key(run_id, "logkeys"))
        indexed, listed_before = await looking.execute()
        keys = sorted({k.decode() for k in [*indexed, *listed_before]})
        if task is not None or index is not None:
            keys = [k for k in keys if _attempt_of(k, task, index)]
        pipe = self._redis.pipeline(transaction=False)
        for list_key in keys:
            pipe.lrange(list_key, 0, -1)
        lines = [_line_decoder.decode(raw) for chunk in await pipe.execute() for raw in chunk]
        lines.sort(key=lambda line: line.at)
        return lines

    async def delete(self, run_id: str) -> None:
        """Unlink every line list of the run, then the indexes that find them. A batch of
        lists at a time: a 100,000-item run has that many, and one call for all would
        hold Redis up. The indexes go last, so that a delete cut short can be redone."""
        names = await self._retrying("logs", partial(self._redis.smembers, key(run_id, "logtasks")))
        while await self._retrying("logs", partial(self._unlink_lists, run_id)):
            pass
        indexes = [key(run_id, f"logitems:{name.decode()}") for name in names]
        indexes += [key(run_id, part) for part in ("logindex", "logkeys", "logtasks")]
        await self._retrying("logs", partial(self._redis.unlink, *indexes))

    async def _unlink_lists(self, run_id: str) -> bool:
        """Unlink the next batch of the run's lists and take them out of the name
        indexes (``logindex``, and ``logkeys`` of runs stored before it); False once
        none are left (a batch short of full was the last: no look to find nothing)."""
        listed = self._redis.pipeline(transaction=False)
        listed.zrange(key(run_id, "logindex"), 0, LISTS_PER_LOOK - 1)
        listed.srandmember(key(run_id, "logkeys"), LISTS_PER_LOOK)
        indexed, listed_before = await listed.execute()
        if not indexed and not listed_before:
            return False
        pipe = self._redis.pipeline(transaction=False)
        # One command: the lists share the run's slot (a Cluster pipeline's own
        # ``unlink`` would split them by slot, and cannot be queued).
        pipe.execute_command("UNLINK", *{*indexed, *listed_before})
        if indexed:
            pipe.zrem(key(run_id, "logindex"), *indexed)
        if listed_before:
            pipe.srem(key(run_id, "logkeys"), *listed_before)
        await pipe.execute()
        return LISTS_PER_LOOK in (len(indexed), len(listed_before))

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
        looking = self._redis.pipeline(transaction=False)
        looking.smembers(key(run_id, "logtasks"))
        looking.exists(key(run_id, "logkeys"))
        looking.zcard(key(run_id, "logindex"))
        names, before_index, lists = await looking.execute()
        tasks = sorted(n.decode() for n in names)
        counting = self._redis.pipeline(transaction=False)
        for name in tasks:
            counting.zcard(key(run_id, f"logitems:{name}"))
        if before_index or sum(await counting.execute()) < lists:
            # Some lists were written before the page order was kept.
            return page_of(await self.read_lines(run_id, task, index), attempt, after, limit)
        page: list[LogLine] = []
        for name in tasks:
            if (task is not None and name != task) or (after is not None and name < after[0]):
                continue
            start = after if after is not None and after[0] == name else (name, 0, 0, 0)
            if index is not None:
                start = max(start, (name, index, 0, 0))
            await self._page_task(run_id, start, index, attempt, limit, page)
            if len(page) == limit:
                break
        return page_ending(page, limit, after)

    async def _page_task(
        self,
        run_id: str,
        start: LogPosition,
        index: int | None,
        attempt: int | None,
        limit: int,
        page: list[LogLine],
    ) -> None:
        """Add one task's lines from ``start`` to ``page`` until it holds ``limit``."""
        name, item, number, read = start
        items = key(run_id, f"logitems:{name}")
        low: float | str = item * ATTEMPTS_PER_ITEM + number
        high: float | str = "+inf" if index is None else (index + 1) * ATTEMPTS_PER_ITEM - 1
        while True:
            # Every list holds a line at least: a page of n lines needs n lists at most.
            most = LISTS_PER_LOOK if attempt is not None else min(LISTS_PER_LOOK, limit)
            found = await self._retrying("logs", partial(self._look, items, low, high, most))
            chosen: list[tuple[bytes, int, int]] = []
            for list_key, score in found:
                item, number = divmod(int(score), ATTEMPTS_PER_ITEM)
                if attempt is None or number == attempt:
                    chosen.append((list_key, item, number))
            if chosen:
                skip = read if chosen[0][1:] == start[1:3] else 0
                room = limit - len(page)
                keys = [list_key for list_key, _, _ in chosen]
                raws = await self._retrying(
                    "logs", partial(self._read_lists, keys=keys, args=[skip, room])
                )
                page += [_line_decoder.decode(raw) for raw in raws]
                if len(page) == limit:
                    return
            if len(found) < most:
                return
            low = f"({found[-1][1]}"

    async def _look(self, items: str, low: float | str, high: float | str, most: int) -> Any:
        """The next lists of a task in page order, with their scores."""
        return await self._redis.zrangebyscore(items, low, high, start=0, num=most, withscores=True)


def _attempt_of(list_key: str, task: str | None, index: int | None) -> bool:
    """Whether the log list ``list_key`` holds lines of ``task`` (and item ``index``)."""
    named_task, named_index, _attempt = list_key.split(":log:", 1)[1].rsplit(":", 2)
    return (task is None or named_task == task) and (index is None or named_index == str(index))
