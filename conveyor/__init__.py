"""Conveyor's public Python API: typed workflows, and the embedded engine."""

from contracts.errors import ConveyorError, NonRetryableError, StepError
from contracts.spec import Workflow
from contracts.validation import load_workflow, parse_workflow
from conveyor.authoring import Ref, task, workflow
from conveyor.embedded import EmbeddedEngine
from conveyor.steps import command, container, script

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
