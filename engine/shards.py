"""The coordinator shard queues a coordinator consumes, following the stored shard map.

The map lives with the run log (``RunLog.shard_map``); ``conveyor shards N`` changes it
while everything runs. No run moves: each is pinned to the shard its submission named.
A coordinator reads the map when it starts and again every ``watch_interval``; a map
with more queues than it consumes makes it consume the new ones. Until some
coordinator does, what is sent to a new shard waits there (the queue is declared by
whoever publishes to it first).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from contracts.codec import encode
from contracts.messages import ShardWake
from contracts.ports import Consumer, RunLog, Transport
from contracts.supervision import Supervisor, stop_loops
from contracts.topology import ShardMap, shard_queue

log = structlog.get_logger("conveyor.coordinator")

WATCH_INTERVAL = 5.0
"""How often a coordinator looks for a changed shard map."""

ConsumeLoop = Callable[[Consumer, int], Coroutine[Any, Any, None]]


class ShardQueues:
    def __init__(
        self,
        transport: Transport,
        runlog: RunLog,
        consume: ConsumeLoop,
        *,
        default: int,
        prefetch: int,
        supervisor: Supervisor,
        watch_interval: float = WATCH_INTERVAL,
    ) -> None:
        self._transport = transport
        self._runlog = runlog
        self._consume = consume
        self._default = default
        self._prefetch = prefetch
        self._watch_interval = watch_interval
        self.map = ShardMap(count=default, queues=default, epoch=0)
        """The map as last read (epoch 0 until then)."""
        self._consumers: dict[int, Consumer] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._supervisor = supervisor

    async def start(self) -> None:
        await self.refresh()
        self._start_loop(self._watch(), "shard-map")

    def _start_loop(self, coroutine: Coroutine[Any, Any, None], name: str) -> None:
        loop = asyncio.create_task(coroutine, name=name)
        self._loops.append(loop)
        self._supervisor.watch(loop)

    async def refresh(self) -> ShardMap:
        """Read the stored map; consume every shard queue it names that we do not yet."""
        found = await self._runlog.shard_map(self._default)
        if found.epoch < self.map.epoch:
            return self.map
        if found != self.map and self.map.epoch:
            log.info("shard map changed", shards=found.count, queues=found.queues)
        self.map = found
        for shard in range(found.queues):
            if shard in self._consumers:
                continue
            consumer = await self._transport.consume(shard_queue(shard), prefetch=self._prefetch)
            self._consumers[shard] = consumer
            self._start_loop(self._consume(consumer, shard), f"shard-{shard}")
        return found

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._watch_interval)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is away for a moment: the next look will do
                log.warning("could not read the shard map", exc_info=True)

    async def wake(self, at: float) -> None:
        """Send a wake-up to every shard queue (its consumer sweeps for runs it lacks)."""
        for shard in range(self.map.queues):
            await self._transport.publish(
                shard_queue(shard), [encode(ShardWake(shard=shard, at=at))]
            )

    async def wake_every(self, interval: float, clock: Callable[[], float]) -> None:
        """Wake every shard each ``interval`` seconds (until cancelled)."""
        while True:
            await self.wake(clock())
            await asyncio.sleep(interval)

    async def stop(self) -> None:
        self._supervisor.stopping = True
        for consumer in self._consumers.values():
            await consumer.close()
        await stop_loops(self._loops)
        self._consumers.clear()
        self._loops.clear()
