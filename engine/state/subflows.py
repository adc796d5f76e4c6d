"""Child runs, decided without I/O: what a workflow step's dispatch submits, and what a
child run's start and end tell the step that started it.

A child run's id derives from the attempt that starts it, so submitting it again (a
coordinator taking the parent up after a crash) is the same submission, and collapses
into the one run; a retried attempt starts a child of its own.
"""

from __future__ import annotations

import uuid

from contracts.errors import ExpressionError, InvalidInput
from contracts.events import (
    ParentTask,
    RunCancelRequested,
    RunCompleted,
    RunSubmitted,
    TaskFailed,
    TaskStarted,
    TaskSucceeded,
)
from contracts.expressions import render_value
from contracts.params import resolve_params
from contracts.vocabulary import CHILD_TRIGGER, FailureKind, RunStatus, TaskStatus
from engine.state.context import instance_context
from engine.state.model import RunState

CHILD_RUNS = uuid.UUID("5b1f6f3e-2a57-4c1e-9d0a-6c3f0c9e7a41")
"""The namespace of child run ids (uuid5 of the attempt that starts the run)."""


def child_run_id(run_id: str, task: str, index: int, attempt: int) -> str:
    return uuid.uuid5(CHILD_RUNS, f"{run_id}/{task}/{index}/{attempt}").hex


def child_submission(
    state: RunState, task: str, index: int, attempt: int, *, at: float, parent_shard: int
) -> RunSubmitted:
    """The child run one attempt of a workflow step starts. Raises ExpressionError when
    its parameters do not render, or do not fit the child workflow."""
    node = state.nodes[task]
    step = node.spec.workflow
    assert step is not None and step.spec is not None
    given = render_value(step.params, instance_context(state, node, index))
    try:
        params = resolve_params(step.spec, given, source=f"workflow {step.spec.name!r}")
    except InvalidInput as exc:
        raise ExpressionError(exc.message) from None
    return RunSubmitted(
        run_id=child_run_id(state.run_id, task, index, attempt),
        at=at,
        workflow=step.spec.model_dump(mode="json", exclude_unset=True, by_alias=True),
        params=params,
        trigger=f"{CHILD_TRIGGER}{state.run_id}",
        parent=ParentTask(
            run_id=state.run_id, task=task, index=index, attempt=attempt, shard=parent_shard
        ),
    )


def child_started(submitted: RunSubmitted) -> TaskStarted:
    """The parent's attempt, started: its child run is under way (named as its worker)."""
    parent = submitted.parent
    assert parent is not None
    return TaskStarted(
        run_id=parent.run_id,
        at=submitted.at,
        task=parent.task,
        index=parent.index,
        attempt=parent.attempt,
        worker=f"run {submitted.run_id}",
    )


def child_ended(completed: RunCompleted) -> TaskSucceeded | TaskFailed:
    """The parent's attempt, ended as its child run did: its outputs as the result, or
    its failure (a child run cancelled is an attempt cancelled)."""
    parent = completed.parent
    assert parent is not None
    run_id, at, task, index, attempt = (
        parent.run_id,
        completed.at,
        parent.task,
        parent.index,
        parent.attempt,
    )
    if completed.state == RunStatus.SUCCEEDED:
        return TaskSucceeded(
            run_id=run_id, at=at, task=task, index=index, attempt=attempt, result=completed.outputs
        )
    cancelled = completed.state == RunStatus.CANCELLED
    return TaskFailed(
        run_id=run_id,
        at=at,
        task=task,
        index=index,
        attempt=attempt,
        error=f"run {completed.run_id} {completed.state}: {completed.reason}",
        reason=FailureKind.CANCELLED if cancelled else FailureKind.ERROR,
    )


def has_workflow_steps(submitted: RunSubmitted) -> bool:
    """Whether the run's workflow has a workflow step, read off its submission (without
    building its state): only such a run can have child runs."""
    tasks = submitted.workflow.get("tasks") or []
    return any(isinstance(task, dict) and "workflow" in task for task in tasks)


def children_started(state: RunState) -> list[str]:
    """The ids of the child runs the run's workflow steps may have started: one per
    attempt made of each item (a retried attempt's child is a run of its own)."""
    return [
        child_run_id(state.run_id, node.spec.name, index, attempt)
        for node in state.nodes.values()
        if node.spec.workflow is not None
        for index, inst in enumerate(node.instances)
        for attempt in range(1, inst.attempt + 1)
    ]


def children_running(state: RunState) -> list[str]:
    """The ids of the child runs the run's workflow steps are waiting on now."""
    return _children_of_attempts_in(state, TaskStatus.RUNNING)


def children_to_stop(state: RunState) -> list[RunCancelRequested]:
    """The child runs a run that ended leaves behind: one per attempt of its workflow
    steps cut short by the end (cancelled; a child already ended ignores it)."""
    reason = f"its parent run {state.run_id} {state.status}"
    return [
        RunCancelRequested(run_id=child, at=state.now, reason=reason)
        for child in _children_of_attempts_in(state, TaskStatus.CANCELLED)
    ]


def _children_of_attempts_in(state: RunState, status: TaskStatus) -> list[str]:
    """The child runs of the workflow steps' current attempts in ``status`` (an item
    never dispatched has made no attempt, and has none)."""
    return [
        child_run_id(state.run_id, node.spec.name, index, inst.attempt)
        for node in state.nodes.values()
        if node.spec.workflow is not None
        for index, inst in enumerate(node.instances)
        if inst.status == status and inst.attempt > 0
    ]
