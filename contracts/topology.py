"""Names of the queues and topics components talk over; one place, so nobody guesses."""

from __future__ import annotations

import zlib

import msgspec

COORDINATOR_QUEUE = "conveyor.events"
CONTROL_TOPIC = "conveyor.control"
TASK_QUEUE_PREFIX = "conveyor.tasks."


def task_queue(pool: str) -> str:
    return f"{TASK_QUEUE_PREFIX}{pool}"


STATE_CHANGES_EXCHANGE = "conveyor.state-changes"
"""Topic exchange of run (and task) state changes as CloudEvents, routing key
``run.<workflow>.<state>`` (``task.<workflow>.<state>``), for other services to bind."""


def topic_matches(pattern: str, routing_key: str) -> bool:
    """AMQP topic matching: ``*`` is one word, ``#`` zero or more."""

    def match(p: list[str], k: list[str]) -> bool:
        if not p:
            return not k
        if p[0] == "#":
            return any(match(p[1:], k[i:]) for i in range(len(k) + 1))
        return bool(k) and (p[0] in ("*", k[0])) and match(p[1:], k[1:])

    return match(pattern.split("."), routing_key.split("."))


DEAD_LETTER_EXCHANGE = "conveyor.dlx"
DEAD_LETTER_QUEUE = "conveyor.dead"
DEFAULT_SHARDS = 4


class ShardMap(msgspec.Struct, frozen=True, kw_only=True):
    """How runs are spread over coordinator shards; stored with the run log.

    A run is pinned to the shard it was submitted to (its ``RunSubmitted`` says which)
    for its whole life, so changing the map moves no run and drains no queue: new runs
    are spread over ``count`` shards, and coordinators consume ``queues`` shard queues,
    which never shrinks (a run pinned to a retired shard still finishes there).
    """

    count: int
    queues: int
    epoch: int = 1
    """Raised on every change, so a reader can tell a newer map from an older one."""

    def resized(self, count: int) -> ShardMap:
        if count < 1:
            raise ValueError(f"a shard map needs at least one shard, not {count}")
        return ShardMap(count=count, queues=max(self.queues, count), epoch=self.epoch + 1)

    def shard_for(self, run_id: str) -> int:
        """The shard a new run is submitted to."""
        return shard_of(run_id, self.count)

    def pinned(self, run_id: str, named: int | None) -> int:
        """The shard a run belongs to: the one its submission named, or, for a run
        submitted before shard maps, where its id hashes."""
        return named if named is not None else self.shard_for(run_id)


def initial_shard_map(count: int) -> ShardMap:
    return ShardMap(count=count, queues=count)


def shard_queue(shard: int) -> str:
    return f"{COORDINATOR_QUEUE}.{shard}"


def shard_of(run_id: str, shards: int) -> int:
    """Which coordinator shard owns a run: stable across processes and restarts."""
    return zlib.crc32(run_id.encode()) % shards


def is_shard_queue(queue: str) -> bool:
    return queue.startswith(COORDINATOR_QUEUE + ".")
