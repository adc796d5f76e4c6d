"""Conveyor's public Python API: typed workflows, and the embedded engine."""

from contracts.errors import ConveyorError, NonRetryableError, StepError
from contracts.spec import Workflow
from contracts.triggers import RunRequest, SensorResult
from contracts.validation import load_workflow, parse_workflow
from conveyor import triggers
from conveyor.authoring import task, workflow
from conveyor.caching import task_input_hash
from conveyor.embedded import EmbeddedEngine
from conveyor.refs import Ref, span
from conveyor.steps import amqp, command, container, http, script

__all__ = [
    "ConveyorError",
    "EmbeddedEngine",
    "NonRetryableError",
    "Ref",
    "RunRequest",
    "SensorResult",
    "StepError",
    "Workflow",
    "amqp",
    "command",
    "container",
    "http",
    "load_workflow",
    "parse_workflow",
    "script",
    "span",
    "task",
    "task_input_hash",
    "triggers",
    "workflow",
]
