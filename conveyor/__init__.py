"""Conveyor's public Python API: typed workflows, and the embedded engine.

Each name is imported from its module when first used, so that a command line or a
process that needs one part (``conveyor show``, a worker) does not load every other:
the embedded engine alone brings the broker's and the HTTP clients.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contracts.errors import ConveyorError, NonRetryableError, StepError
    from contracts.spec import Workflow
    from contracts.triggers import RunRequest, SensorResult
    from contracts.validation import load_workflow, parse_workflow
    from conveyor import triggers
    from conveyor.authoring import task
    from conveyor.caching import task_input_hash
    from conveyor.embedded import EmbeddedEngine
    from conveyor.refs import Ref, span
    from conveyor.steps import amqp, command, container, http, script
    from conveyor.workflowfn import workflow

_HOMES = {
    "contracts.errors": ("ConveyorError", "NonRetryableError", "StepError"),
    "contracts.spec": ("Workflow",),
    "contracts.triggers": ("RunRequest", "SensorResult"),
    "contracts.validation": ("load_workflow", "parse_workflow"),
    "conveyor.authoring": ("task",),
    "conveyor.caching": ("task_input_hash",),
    "conveyor.embedded": ("EmbeddedEngine",),
    "conveyor.refs": ("Ref", "span"),
    "conveyor.steps": ("amqp", "command", "container", "http", "script"),
    "conveyor.workflowfn": ("workflow",),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}

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


def __getattr__(name: str) -> Any:
    module = _HOME_OF.get(name)
    if module is None:
        if name == "triggers":  # a submodule: importing it binds it here
            return importlib.import_module("conveyor.triggers")
        raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
