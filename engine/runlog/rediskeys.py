"""Names of a run's Redis keys: all under the run's hash tag, so that they land in one
Redis Cluster slot and a Lua script may touch them together."""

from __future__ import annotations

PREFIX = "cv"


def key(run_id: str, part: str) -> str:
    return f"{PREFIX}:{{{run_id}}}:{part}"
