"""A folder of workflow files registered with the server, re-read when a file changes."""

from __future__ import annotations

from pathlib import Path

import structlog

from contracts.errors import InvalidInput
from contracts.validation import load_workflow
from engine.triggers.registry import Registry

log = structlog.get_logger("conveyor.server")

PATTERNS = ("*.yaml", "*.yml")

Stamp = tuple[int, float]
MISSING: Stamp = (-1, 0.0)
"""The stamp of a file named but not there: its appearance is a change."""


class WorkflowFolder:
    def __init__(self, path: Path, registry: Registry) -> None:
        self.path = path
        self._registry = registry
        self._stamps: dict[Path, Stamp] = {}
        self._named: set[Path] = set()
        """Files the folder's workflows read from elsewhere (child workflows in another
        folder or below this one): watched with the folder's own."""
        self.problems: dict[Path, str] = {}
        """Files that did not load, and why (their last good version stays registered)."""

    async def load(self) -> int:
        """Register the files again once one is new or changed since the last look, or a
        file one of them reads (a workflow holds the files its workflow steps name);
        how many."""
        files = sorted(f for pattern in PATTERNS for f in self.path.glob(pattern))
        stamps = _stamps([*files, *self._named])
        if stamps == self._stamps:
            return 0
        registered = 0
        named: set[Path] = set()
        for file in files:
            read: list[Path] = []
            try:
                workflow = load_workflow(file, read=read)
                version = await self._registry.register(workflow)
            except InvalidInput as exc:
                self.problems[file] = str(exc)
                log.error("workflow file not registered", file=str(file), error=str(exc))
                continue
            finally:
                named.update(read[1:])
            self.problems.pop(file, None)
            registered += 1
            log.info("workflow registered", file=str(file), workflow=workflow.name, version=version)
        self._named = named - {f.resolve() for f in files}
        # The stamps read before loading (a file changed while loading is seen next
        # time), of the files watched from now on.
        watched = [*files, *self._named]
        self._stamps = {f: stamps.get(f) or stamp for f, stamp in _stamps(watched).items()}
        return registered


def _stamps(files: list[Path] | set[Path]) -> dict[Path, Stamp]:
    stamps: dict[Path, Stamp] = {}
    for file in files:
        try:
            stat = file.stat()
        except OSError:
            stamps[file] = MISSING
            continue
        stamps[file] = (stat.st_size, stat.st_mtime)
    return stamps
