"""The in-memory trigger store: the twin of the SQLite and Redis stores, for tests."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from contracts.errors import NotFound
from contracts.ports import TriggerRecord
from engine.triggers.stores import RECORDS_KEPT


class MemoryTriggerStore:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._versions: dict[str, list[bytes]] = {}
        self._seen: dict[str, float] = {}
        """Admitted key -> until when it deduplicates."""
        self._inbox: dict[str, tuple[float, bytes]] = {}
        self._records: dict[str, deque[TriggerRecord]] = {}
        self._cursors: dict[str, bytes] = {}

    async def register(self, name: str, document: bytes) -> int:
        versions = self._versions.setdefault(name, [])
        if document in versions:
            return versions.index(document) + 1
        versions.append(document)
        return len(versions)

    async def workflow(self, name: str, version: int | None = None) -> tuple[int, bytes]:
        versions = self._versions.get(name, [])
        number = version if version is not None else len(versions)
        if not 1 <= number <= len(versions):
            raise NotFound(f"no workflow {name!r}" + (f" version {version}" if version else ""))
        return number, versions[number - 1]

    async def workflows(self) -> dict[str, int]:
        return {name: len(versions) for name, versions in self._versions.items()}

    async def admit(self, key: str, payload: bytes, *, keep: float) -> bool:
        now = self._clock()
        if self._seen.get(key, 0.0) > now:
            return False
        self._seen[key] = now + keep
        self._inbox[key] = (now, payload)
        return True

    async def pending(self, *, older_than: float = 0.0) -> list[tuple[str, bytes]]:
        cutoff = self._clock() - older_than
        return [(key, payload) for key, (at, payload) in self._inbox.items() if at <= cutoff]

    async def settle(self, key: str) -> None:
        self._inbox.pop(key, None)

    async def record(self, record: TriggerRecord) -> None:
        self._records.setdefault(record.workflow, deque(maxlen=RECORDS_KEPT)).appendleft(record)

    async def records(
        self, workflow: str, trigger: str | None = None, *, limit: int = 100
    ) -> list[TriggerRecord]:
        found = [
            r for r in self._records.get(workflow, ()) if trigger is None or r.trigger == trigger
        ]
        return found[:limit]

    async def cursor(self, key: str) -> bytes | None:
        return self._cursors.get(key)

    async def set_cursor(self, key: str, value: bytes) -> None:
        self._cursors[key] = value

    async def close(self) -> None:
        return None
