"""File and object sensors: one run per new or changed object under an fsspec URL.

A local folder is watched (inotify, via watchfiles), so a file is seen as soon as it
lands; other stores are polled every ``interval``. Each look lists the objects
matching the glob, and admits every one whose signature (size and modification time,
or ETag) differs from the sensor's cursor, keyed by
path and signature; then the cursor is saved. Admission is durable and once per key,
so a crash between admitting and saving the cursor makes no second run, and an object
that landed while no server ran is found at the next look after start.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import time
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import fsspec
import msgspec
import structlog

from contracts.supervision import stop_loops
from contracts.triggers import SensorResult
from engine.triggers.firing import Arrival, Firing, encode_arrival
from engine.triggers.registry import Registry, Served

log = structlog.get_logger("conveyor.sensors")


def cursor_key(workflow: str, trigger: str) -> str:
    return f"sensor:{workflow}:{trigger}"


def local_folder(url: str) -> Path | None:
    """The folder a local glob looks in (the part before its first wildcard)."""
    fs, pattern = fsspec.core.url_to_fs(url)
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol not in ("file", "local"):
        return None
    parts = Path(pattern).parts
    fixed = [p for p in itertools.takewhile(lambda part: not set(part) & set("*?["), parts)]
    folder = Path(*fixed) if fixed else Path(".")
    return folder if folder.is_dir() else None


async def _changes(folder: Path) -> AsyncGenerator[object, None]:
    from watchfiles import awatch

    async for changed in awatch(folder, debounce=50, step=20, recursive=True):
        yield changed


def signature(info: dict[str, Any]) -> str:
    """What changes when an object changes: its ETag where the store has one, else its
    size and modification time."""
    for name in ("ETag", "etag", "md5"):
        if info.get(name):
            return str(info[name]).strip('"')
    stamp = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or ""
    if hasattr(stamp, "timestamp"):
        stamp = stamp.timestamp()
    return f"{info.get('size', '')}:{stamp}"


class Sensors:
    def __init__(
        self, registry: Registry, firing: Firing, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._registry = registry
        self._firing = firing
        self._clock = clock
        self._running: dict[tuple[str, int, str], asyncio.Task[None]] = {}
        self.failing: dict[tuple[str, int, str], str] = {}
        """Sensors whose last look failed, and how (cleared by a look that works)."""

    async def apply(self) -> None:
        """Run a look loop for each served sensor; stop those no longer served."""
        wanted = {
            (s.workflow.name, s.version, s.trigger.name): s for s in self._registry.served("sensor")
        }
        for key in set(self._running) - set(wanted):
            self._running.pop(key).cancel()
            self.failing.pop(key, None)
        for key, served in wanted.items():
            if key not in self._running:
                self._running[key] = asyncio.create_task(self._loop(served), name=f"sensor {key}")

    async def stop(self) -> None:
        await stop_loops(self._running.values())
        self._running.clear()

    async def _loop(self, served: Served) -> None:
        spec = served.trigger.sensor
        assert spec is not None
        folder = local_folder(spec.files) if spec.files else None
        changes = _changes(folder) if folder is not None else None
        key = (served.workflow.name, served.version, served.trigger.name)
        # The wait for the next change outlives an interval that ends first: cancelling
        # it would close the watch, and every wait after that would end at once.
        next_change: asyncio.Future[object] | None = None
        try:
            while True:
                try:
                    await self.look(served)
                except Exception as exc:  # a store that fails now may answer next time
                    log.warning("sensor look failed", trigger=served.trigger.name, error=repr(exc))
                    self.failing[key] = f"{type(exc).__name__}: {exc}"
                else:
                    self.failing.pop(key, None)
                if changes is None:
                    await asyncio.sleep(spec.interval)
                    continue
                # A local folder pushes its changes (inotify): look as soon as one comes,
                # and every interval anyway (a change made while looking is not missed).
                if next_change is None:
                    next_change = asyncio.ensure_future(anext(changes))
                await asyncio.wait({next_change}, timeout=spec.interval)
                if next_change.done():
                    ended, next_change = next_change.exception(), None
                    if ended is not None:  # the folder went away, say: look every interval
                        log.warning(
                            "sensor folder no longer watched; looking every interval",
                            trigger=served.trigger.name,
                            error=repr(ended),
                        )
                        changes = None
        finally:
            if next_change is not None:
                next_change.cancel()
                with contextlib.suppress(BaseException):
                    await next_change
            if changes is not None:
                await changes.aclose()

    async def look(self, served: Served) -> int:
        """One look: admit and start runs for what is new; how many."""
        spec = served.trigger.sensor
        assert spec is not None
        if spec.python is not None:
            return await self._ask_function(served, spec.python)
        assert spec.files is not None
        fs, pattern = fsspec.core.url_to_fs(spec.files)
        found: dict[str, dict[str, Any]] = await asyncio.to_thread(fs.glob, pattern, detail=True)
        key = cursor_key(served.workflow.name, served.trigger.name)
        raw = await self._firing.store.cursor(key)
        seen: dict[str, str] = msgspec.json.decode(raw) if raw else {}
        now = self._clock()
        current: dict[str, str] = {}
        started = 0
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        for path in sorted(found):
            info = found[path]
            if info.get("type") == "directory":
                continue
            sig = signature(info)
            current[path] = sig
            if seen.get(path) == sig:
                continue
            arrival = Arrival(
                workflow=served.workflow.name,
                version=served.version,
                trigger=served.trigger.name,
                kind="sensor",
                key=f"{path}@{sig}",
                names={
                    "event": {
                        "path": path,
                        "url": f"{protocol}://{path}",
                        "name": path.rsplit("/", 1)[-1],
                        "size": info.get("size"),
                        "signature": sig,
                    }
                },
                at=now,
            )
            if await self._firing.store.admit(
                arrival.idempotency_key, encode_arrival(arrival), keep=365 * 86400
            ):
                await self._firing.handle(arrival)
                started += 1
        if current != seen:
            await self._firing.store.set_cursor(key, msgspec.json.encode(current))
        return started

    async def _ask_function(self, served: Served, target: str) -> int:
        """Call the sensor function with its cursor; admit the runs it asks for, then keep
        the cursor it returns (a crash in between asks again from the old cursor, and
        the same request keys are not admitted twice)."""
        function = _function(target)
        key = cursor_key(served.workflow.name, served.trigger.name)
        raw = await self._firing.store.cursor(key)
        cursor = raw.decode() if raw is not None else None
        result = await asyncio.to_thread(function, cursor)
        if not isinstance(result, SensorResult):
            raise TypeError(f"{target} returned {type(result).__name__}, not a SensorResult")
        started = 0
        now = self._clock()
        for request in result.runs:
            arrival = Arrival(
                workflow=served.workflow.name,
                version=served.version,
                trigger=served.trigger.name,
                kind="sensor",
                key=str(request.key)[:200],
                names={"event": {"key": request.key}, "params": dict(request.params)},
                at=now,
            )
            if await self._firing.store.admit(
                arrival.idempotency_key, encode_arrival(arrival), keep=365 * 86400
            ):
                await self._firing.handle(arrival)
                started += 1
        if result.cursor is not None and result.cursor != cursor:
            await self._firing.store.set_cursor(key, result.cursor.encode())
        return started


def _function(target: str) -> Callable[[str | None], Any]:
    module_name, _, name = target.partition(":")
    function = getattr(importlib.import_module(module_name), name)
    if not callable(function):
        raise TypeError(f"{target} is not a function")
    return function  # type: ignore[no-any-return]
