"""A cluster of real Conveyor processes on the session's RabbitMQ and Redis, emptied of
what earlier tests left (modules that need it started differently override it)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster


@pytest.fixture
async def cluster(amqp_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    c = Cluster(amqp_url, redis_url, tmp_path)
    await c.reset()
    yield c
    await c.close()
