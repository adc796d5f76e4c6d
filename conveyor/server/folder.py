"""A folder of workflow files registered with the server, re-read when a file changes."""

from __future__ import annotations

from pathlib import Path

import structlog

from contracts.errors import InvalidInput
from contracts.validation import load_workflow
from engine.triggers.registry import Registry

log = structlog.get_logger("conveyor.server")

PATTERNS = ("*.yaml", "*.yml")


class WorkflowFolder:
    def __init__(self, path: Path, registry: Registry) -> None:
        self.path = path
        self._registry = registry
        self._stamps: dict[Path, tuple[int, float]] = {}
        self.problems: dict[Path, str] = {}
        """Files that did not load, and why (their last good version stays registered)."""

    async def load(self) -> int:
        """Register the files again once one is new or changed since the last look (a
        workflow holds the files its workflow steps name); how many."""
        registered = 0
        files = sorted(f for pattern in PATTERNS for f in self.path.glob(pattern))
        stamps: dict[Path, tuple[int, float]] = {}
        for file in files:
            try:
                stat = file.stat()
            except OSError:
                continue
            stamps[file] = (stat.st_size, stat.st_mtime)
        if stamps == self._stamps:
            return 0
        self._stamps = stamps
        for file in stamps:
            try:
                workflow = load_workflow(file)
                version = await self._registry.register(workflow)
            except InvalidInput as exc:
                self.problems[file] = str(exc)
                log.error("workflow file not registered", file=str(file), error=str(exc))
                continue
            self.problems.pop(file, None)
            registered += 1
            log.info("workflow registered", file=str(file), workflow=workflow.name, version=version)
        return registered
