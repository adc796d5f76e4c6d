"""What a person (or a script, as JSON) is shown about a run."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from contracts.params import secret_variable
from contracts.values import STORED_KEY, is_stored
from contracts.vocabulary import TaskStatus
from engine.state.model import Node, RunState


def when(stamp: float | None) -> str:
    """A moment as the views show it: UTC, to the second (nothing for none)."""
    if stamp is None:
        return ""
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def short_value(value: Any, width: int = 60) -> str:
    """A value in one line of at most ``width`` characters: JSON but for text; a
    stored value or a secret by what it is, never its content."""
    if is_stored(value):
        stored = value[STORED_KEY]
        return f"<stored {stored.get('format')}, {stored.get('size', 0):,} bytes>"
    if isinstance(value, list) and value and all(is_stored(v) for v in value):
        return f"<{len(value)} stored {value[0][STORED_KEY].get('format')} values>"
    variable = secret_variable(value)
    if variable is not None:
        return f"<secret from ${variable}>"
    text = (
        value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    )
    text = text.replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


def params_data(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as JSON gives them: a secret as where it comes from,
    ``{"from_env": NAME}`` (as the workflow declares it), not as the log's mark."""
    shown: dict[str, Any] = {}
    for name, value in params.items():
        variable = secret_variable(value)
        shown[name] = value if variable is None else {"from_env": variable}
    return shown


def params_shown(state: RunState, width: int = 60) -> list[tuple[str, str]]:
    """The run's parameters, each as a name and its value in one short line."""
    return [(name, short_value(value, width)) for name, value in state.params.items()]


def outputs_shown(state: RunState, width: int = 60) -> list[tuple[str, str]]:
    """What the run gave back, each output as a name and its value in one short line."""
    return [(name, short_value(value, width)) for name, value in (state.outputs or {}).items()]


def task_report(node: Node) -> dict[str, Any]:
    duration = (
        node.finished_at - node.started_at
        if node.finished_at is not None and node.started_at is not None
        else None
    )
    attempts = [inst.attempt for inst in node.instances]
    report: dict[str, Any] = {
        "name": node.spec.name,
        "state": node.status,
        "attempts": max(attempts) if attempts else 0,
        "retries": sum(max(0, a - 1) for a in attempts),
        "duration": duration,
        # A task stopped before any of its items succeeded has no outputs to show (a
        # list of nulls, one per item, says nothing).
        "outputs": node.outputs()
        if node.status == TaskStatus.SUCCEEDED
        or any(i.status == TaskStatus.SUCCEEDED for i in node.instances)
        else {},
    }
    if node.spec.fans_out:
        report["items"] = len(node.instances)
        report["items_done"] = node.done
        report["items_failed"] = node.failed
    if node.error:
        report["error"] = node.error
        wrote = next(
            (
                (index, i.stderr_tail)
                for index, i in enumerate(node.instances)
                if i.status == TaskStatus.FAILED and i.stderr_tail
            ),
            None,
        )
        if wrote is not None:
            report["stderr_tail"] = wrote[1]
            if node.spec.fans_out:
                report["stderr_item"] = wrote[0]
    return report


def run_report(state: RunState) -> dict[str, Any]:
    end = state.finished_at if state.finished_at is not None else state.now
    return {
        "run_id": state.run_id,
        "workflow": state.workflow.name,
        "state": state.status,
        "reason": state.reason,
        "params": params_data(state.params),
        "trigger": state.trigger,
        "submitted_at": state.submitted_at,
        "finished_at": state.finished_at,
        "duration": end - state.submitted_at,
        "tasks": [task_report(node) for node in state.nodes.values()],
        "outputs": state.outputs,
    }
