"""Deleting a finished run from the Redis run log (``RunStore.delete``).

In three steps, each safe to repeat, so that a delete cut short (a crash, Redis out of
reach) is finished by deleting again:

1. the run's task lines, a batch of lists at a time (``RedisTaskLogs.delete``);
2. its own keys, in one script that first checks, under the run's hash tag, that the
   run has ended (a retry asked for meanwhile keeps the run); its summary stays, marked
   ``deleted``;
3. its id out of the index's sorted sets, which live in other Cluster slots; then the
   marked summary.

The marked summary is what lets a deletion cut between steps 2 and 3 be finished: the
index's readers pass over a marked row and finish its deletion (``finish``), and so
does deleting the run again. Without it, the ids left in the sorted sets would name
nothing, and nothing would ever take them out.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec

from contracts.ports import RunSummary
from engine.runlog.index import refuse_unfinished
from engine.runlog.redisindex import DELETED, row_from
from engine.runlog.rediskeys import key, run_indexes
from engine.runlog.redislines import RedisTaskLogs, Retrying

_DELETE = """
-- KEYS: summary, events, ids, snapshot. Deletes all but the summary, which it marks
-- deleted, unless the run is running again; returns 'running', 'deleted' when another
-- caller deleted it since its row was read, or nothing for no run.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {} end
if redis.call('HEXISTS', KEYS[1], 'deleted') == 1 then return {'deleted'} end
if state == 'running' then return {'running'} end
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'deleted', '1')
return {state}
"""

_DROP_MARKED = """
-- KEYS: summary. Deletes it if it is still marked deleted (not written anew since by a
-- submission under the same id); returns 1 if it did.
if redis.call('HEXISTS', KEYS[1], 'deleted') == 1 then return redis.call('UNLINK', KEYS[1]) end
return 0
"""


class RunDeletion:
    """``RedisRunLog.delete``: everything of one run out of Redis."""

    def __init__(self, redis: Any, lines: RedisTaskLogs, retrying: Retrying) -> None:
        self._redis = redis
        self._lines = lines
        self._retrying = retrying
        self._delete_keys = redis.register_script(_DELETE)
        self._drop_marked = redis.register_script(_DROP_MARKED)

    async def delete(self, run_id: str) -> bool:
        """Whether this call deleted the run: of deletions side by side (a pruner
        deleting a child run on its own and with its parent), the one that takes its
        last key out; of a deletion cut short, the one that finishes it."""
        summary = key(run_id, "summary")
        raw = await self._retrying("summary", partial(self._redis.hgetall, summary))
        if not raw:
            return False
        row = row_from(run_id, raw)
        if DELETED in raw:  # cut short before, or being deleted by another caller
            return await self.finish(row)
        return await self.delete_read(row)

    async def delete_read(self, row: RunSummary) -> bool:
        """Delete the run whose row was read as ``row`` (it may have changed since)."""
        refuse_unfinished(row)
        run_id = row.run_id
        await self._lines.delete(run_id)
        keys = [key(run_id, part) for part in ("summary", "events", "ids", "snap")]
        outcome = await self._retrying("delete", partial(self._delete_keys, keys=keys))
        if not outcome:
            return False  # deleted meanwhile, by another caller
        if outcome == [DELETED]:  # being deleted by another caller since it was read
            return await self.finish(row)
        if outcome == [b"running"]:  # retried meanwhile
            refuse_unfinished(msgspec.structs.replace(row, state="running"))
        return await self.finish(msgspec.structs.replace(row, state=outcome[0].decode()))

    async def finish(self, row: RunSummary) -> bool:
        """Step 3: the run's id out of the index, then its marked summary; whether this
        call took the summary out (safe to repeat, and to run side by side)."""
        pipe = self._redis.pipeline(transaction=False)
        for index in run_indexes(row):
            pipe.zrem(index, row.run_id)
        await self._retrying("delete", pipe.execute)
        summary = key(row.run_id, "summary")
        return bool(await self._retrying("delete", partial(self._drop_marked, keys=[summary])))
