"""Conveyor's public Python API: typed workflows, and the embedded engine."""

from contracts.errors import ConveyorError, NonRetryableError, StepError
from contracts.spec import Workflow
from contracts.validation import load_workflow, parse_workflow
from conveyor.authoring import Ref, command, container, script, task, workflow
from engine.embedded import EmbeddedEngine

__all__ = [
    "ConveyorError",
    "EmbeddedEngine",
    "NonRetryableError",
    "Ref",
    "StepError",
    "Workflow",
    "command",
    "container",
    "load_workflow",
    "parse_workflow",
    "script",
    "task",
    "workflow",
]
