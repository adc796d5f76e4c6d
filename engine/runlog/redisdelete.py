"""Deleting a finished run from the Redis run log (``RunStore.delete``).

In three steps, each safe to repeat, so that a delete cut short (a crash, Redis out of
reach) is finished by deleting again:

1. the run's task lines, a batch of lists at a time (``RedisTaskLogs.delete``);
2. its own keys, in one script that first checks, under the run's hash tag, that the
   run has ended: a retry asked for meanwhile keeps the run;
3. its id out of the index's sorted sets, which live in other Cluster slots.

The run's summary goes in step 2, and the index's readers already pass over an id whose
summary is gone; so between steps 2 and 3 the run is simply not listed. A deletion cut
there leaves those ids behind for good (nothing lists them to delete again).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import msgspec

from contracts.ports import RunSummary
from engine.runlog.index import refuse_unfinished
from engine.runlog.rediskeys import ALL_RUNS, key, runs_in_state, runs_of_workflow
from engine.runlog.redislines import RedisTaskLogs, Retrying

_DELETE = """
-- KEYS: summary, events, ids, snapshot. Deletes them unless the run is running again;
-- returns the workflow and state it had, or 'running', or nothing for no run.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {} end
if state == 'running' then return {'running'} end
local workflow = redis.call('HGET', KEYS[1], 'workflow')
redis.call('UNLINK', KEYS[2], KEYS[3], KEYS[4], KEYS[1])
return {state, workflow}
"""


class RunDeletion:
    """``RedisRunLog.delete``: everything of one run out of Redis."""

    def __init__(self, redis: Any, lines: RedisTaskLogs, retrying: Retrying) -> None:
        self._redis = redis
        self._lines = lines
        self._retrying = retrying
        self._delete_keys = redis.register_script(_DELETE)

    async def delete(self, row: RunSummary) -> bool:
        """Delete the run whose index row is ``row`` (read just before)."""
        refuse_unfinished(row)
        run_id = row.run_id
        await self._lines.delete(run_id)
        keys = [key(run_id, part) for part in ("summary", "events", "ids", "snap")]
        outcome = await self._retrying("delete", partial(self._delete_keys, keys=keys))
        if not outcome:
            return False  # deleted meanwhile, by another caller
        if outcome == [b"running"]:  # retried meanwhile
            refuse_unfinished(msgspec.structs.replace(row, state="running"))
        state, workflow = (part.decode() for part in outcome)
        pipe = self._redis.pipeline(transaction=False)
        for index in (ALL_RUNS, runs_in_state(state), runs_of_workflow(workflow)):
            pipe.zrem(index, run_id)
        await self._retrying("delete", pipe.execute)
        return True
