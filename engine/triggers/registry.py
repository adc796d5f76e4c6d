"""The registered workflows a server serves: every version kept in the trigger store,
the latest of each serving its triggers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import msgspec

from contracts.errors import InvalidInput
from contracts.ports import TriggerStore
from contracts.spec import Workflow
from contracts.triggers import Trigger
from contracts.validation import check_workflow, workflow_from_data


@dataclass(frozen=True)
class Served:
    workflow: Workflow
    version: int
    trigger: Trigger


def document_of(workflow: Workflow) -> bytes:
    """The stored form of a workflow: canonical JSON, so the same workflow is the same
    version however it was written."""
    data = workflow.model_dump(mode="json", exclude_unset=True, by_alias=True)
    return msgspec.json.encode(data, order="sorted")


class Registry:
    def __init__(self, store: TriggerStore) -> None:
        self._store = store
        self._parsed: dict[tuple[str, int], Workflow] = {}
        self._latest: dict[str, int] = {}

    @property
    def store(self) -> TriggerStore:
        return self._store

    async def register(self, workflow: Workflow) -> int:
        """Store a workflow (checked first); its version."""
        problems = check_workflow(workflow)
        if problems:
            raise InvalidInput(problems, source=workflow.name)
        version = await self._store.register(workflow.name, document_of(workflow))
        self._parsed[(workflow.name, version)] = workflow
        return version

    async def get(self, name: str, version: int | None = None) -> tuple[int, Workflow]:
        """A version (the latest by default); raises NotFound."""
        number, document = await self._store.workflow(name, version)
        key = (name, number)
        if key not in self._parsed:
            self._parsed[key] = workflow_from_data(
                msgspec.json.decode(document), source=f"{name} v{number}"
            )
        return number, self._parsed[key]

    async def refresh(self) -> bool:
        """Read which versions are the latest now; True if any changed."""
        latest = await self._store.workflows()
        changed = latest != self._latest
        for name, version in latest.items():
            await self.get(name, version)
        self._latest = latest
        return changed

    def latest(self, name: str) -> tuple[int, Workflow] | None:
        version = self._latest.get(name)
        if version is None:
            return None
        return version, self._parsed[(name, version)]

    def names(self) -> list[str]:
        return sorted(self._latest)

    def served(self, kind: str | None = None) -> Iterator[Served]:
        """The enabled triggers of the latest versions (of one kind)."""
        for name in sorted(self._latest):
            version = self._latest[name]
            workflow = self._parsed[(name, version)]
            for trigger in workflow.triggers:
                if trigger.enabled and (kind is None or trigger.kind == kind):
                    yield Served(workflow, version, trigger)
