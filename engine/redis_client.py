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

POOL_SIZE = 200
"""Connections one client opens to one Redis server. A busy server (webhooks arriving
faster than runs are recorded) has more commands in flight than this: they wait their
turn for a connection instead of failing, as redis-py's own pool (100, then an error)
would make them."""
POOL_WAIT = 30.0
"""Seconds a command waits for a free connection before it is an outage."""
CLUSTER_POOL_SIZE = 1_000
"""Connections per node of a Redis Cluster. redis-py's cluster client cannot make a
command wait for a free connection, so its bound is wide enough for bursts."""


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
            max_connections=CLUSTER_POOL_SIZE,
            **options,
        )
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=POOL_SIZE, timeout=POOL_WAIT, **options
    )
    return aioredis.Redis.from_pool(pool)
