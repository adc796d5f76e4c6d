"""Conveyor's public Python API."""

from contracts.errors import ConveyorError, NonRetryableError, StepError
from contracts.spec import Workflow
from contracts.validation import load_workflow, parse_workflow
from engine.embedded import EmbeddedEngine

__all__ = [
    "ConveyorError",
    "EmbeddedEngine",
    "NonRetryableError",
    "StepError",
    "Workflow",
    "load_workflow",
    "parse_workflow",
]
