"""Names of the Redis keys of the run log.

A run's own keys are all under the run's hash tag, so that they land in one Redis
Cluster slot and a Lua script may touch them together. The index across runs is a few
sorted sets of run ids, scored by submission time.
"""

from __future__ import annotations

PREFIX = "cv"
ALL_RUNS = f"{PREFIX}:runs"


def key(run_id: str, part: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:{part}"


def runs_in_state(state: str) -> str:
    return f"{PREFIX}:runs:state:{state}"


def runs_of_workflow(workflow: str) -> str:
    return f"{PREFIX}:runs:wf:{workflow}"


def running_on(shard: int) -> str:
    """The running runs pinned to one coordinator shard."""
    return f"{PREFIX}:runs:running:shard:{shard}"
