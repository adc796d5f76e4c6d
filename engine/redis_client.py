"""Redis clients from URLs, for a single Redis or a Redis Cluster.

``redis://host:port/db`` (or ``rediss://``, ``unix://``) is one server;
``redis+cluster://host:port`` (or ``rediss+cluster://``) is a Redis Cluster reached
through any of its nodes, which the client asks for the rest and follows as slots
move and replicas take over. Every key Conveyor uses together in one command or script
shares a hash tag (``{<run id>}`` for a run's keys), so each lands in one slot.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def redis_client(url: str, **options: Any) -> Any:
    """A client for ``url`` (typed loosely: responses are bytes, which redis-py's stubs
    cannot express)."""
    scheme, _, rest = url.partition("://")
    if scheme in CLUSTER_SCHEMES:
        options.pop("health_check_interval", None)
        # A failover takes a moment: keep asking while the replica takes over.
        return RedisCluster.from_url(
            f"{CLUSTER_SCHEMES[scheme]}://{rest}",
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=10),
            **options,
        )
    return aioredis.from_url(url, **options)
