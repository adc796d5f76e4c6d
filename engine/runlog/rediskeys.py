"""Names of the Redis keys of the run log.

A run's own keys are all under the run's hash tag, so that they land in one Redis
Cluster slot and a Lua script may touch them together. The index across runs is a few
sorted sets of run ids, scored by submission time.
"""

from __future__ import annotations

from contracts.ports import RunSummary
from engine.runlog.index import is_child

PREFIX = "cv"
ALL_RUNS = f"{PREFIX}:runs"
TOP_LEVEL_RUNS = f"{PREFIX}:runs:top"
"""The runs no workflow step started: what a list of top-level runs reads."""
TOP_LEVEL_BUILT = f"{PREFIX}:runs:top:built"
"""Set once ``TOP_LEVEL_RUNS`` also holds the runs made before it was kept."""


UNANNOUNCED = f"{PREFIX}:unannounced"
"""The ids of the run changes not announced yet, scored by their time."""
UNANNOUNCED_BODIES = f"{PREFIX}:unannounced:bodies"
"""Those run changes, by id."""


def key(run_id: str, part: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:{part}"


def runs_in_state(state: str) -> str:
    return f"{PREFIX}:runs:state:{state}"


def runs_of_workflow(workflow: str) -> str:
    return f"{PREFIX}:runs:wf:{workflow}"


def running_on(shard: int) -> str:
    """The running runs pinned to one coordinator shard."""
    return f"{PREFIX}:runs:running:shard:{shard}"


def run_indexes(row: RunSummary) -> list[str]:
    """The sorted sets that list a run, by its index row."""
    found = [ALL_RUNS, runs_in_state(row.state), runs_of_workflow(row.workflow)]
    return found if is_child(row) else [*found, TOP_LEVEL_RUNS]
