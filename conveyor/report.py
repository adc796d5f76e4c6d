"""What a person (or a script, as JSON) is shown about a run."""

from __future__ import annotations

from typing import Any

from contracts.vocabulary import TaskStatus
from engine.state.model import Node, RunState


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
        "params": state.params,
        "submitted_at": state.submitted_at,
        "finished_at": state.finished_at,
        "duration": end - state.submitted_at,
        "tasks": [task_report(node) for node in state.nodes.values()],
    }
