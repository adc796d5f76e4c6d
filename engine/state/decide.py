"""The decision: ``state -> actions``, each action expressed as the event that records it.

``decide`` only looks at the state's work queues (tasks whose upstream just finished,
tasks with free dispatch slots, failures awaiting a retry decision), never at every
task. It mutates nothing: calling it twice without folding gives the same answer.
The caller appends the returned events, folds them, and calls ``decide`` again until
it returns nothing.
"""

from __future__ import annotations

import zlib

from contracts.errors import ExpressionError
from contracts.events import (
    Event,
    RetryScheduled,
    RunCompleted,
    RunTimedOut,
    TaskDispatched,
    TaskExpanded,
    TaskFailed,
    TaskFailedByEngine,
    TaskSkipped,
    TaskSucceeded,
    TimerFired,
)
from contracts.vocabulary import AttemptRef, FailureKind, RunStatus, TaskStatus
from engine.state.context import evaluate_items, evaluate_when, run_outputs
from engine.state.model import Node, RunState


def decide(state: RunState) -> list[Event]:
    if state.finished:
        return []
    now = state.now
    if state.cancel_reason is not None:
        return [
            RunCompleted(
                run_id=state.run_id,
                at=now,
                state=RunStatus.CANCELLED,
                reason=state.cancel_reason,
                round=state.round,
            )
        ]
    if state.timed_out:
        limit = state.workflow.timeout
        return [
            RunCompleted(
                run_id=state.run_id,
                at=now,
                state=RunStatus.FAILED,
                reason=f"run timed out after {limit:g}s",
                round=state.round,
            )
        ]
    out: list[Event] = []
    for name in state.evaluable:
        out.append(_evaluate(state, state.nodes[name]))
    for task, index in state.retry_due:
        node = state.nodes[task]
        attempt = node.instances[index].attempt + 1
        if node.instances[index].reason == FailureKind.LOST:
            delay = 0.0  # the step did not fail; its worker went away
        else:
            delay = node.spec.retry.delay_before(
                attempt, _jitter_unit(state.run_id, task, index, attempt)
            )
        out.append(
            RetryScheduled(
                run_id=state.run_id,
                at=now,
                task=task,
                index=index,
                attempt=attempt,
                due=now + delay,
            )
        )
    for task, index in state.signal_due:
        inst = state.nodes[task].instances[index]
        signal = state.nodes[task].spec.signal
        assert signal is not None
        out.append(
            TaskSucceeded(
                run_id=state.run_id,
                at=now,
                task=task,
                index=index,
                attempt=inst.attempt,
                result=state.signals[signal],
            )
        )
    for name in state.dispatchable:
        out.extend(_dispatches(state, state.nodes[name]))
    if not out and state.open_nodes == 0:
        out.append(_completion(state))
    return out


def decided_here(state: RunState, event: Event) -> bool:
    """Whether the coordinator decided ``event``: every decided kind, and a wait's release,
    a success (the kind a worker reports) of a step no worker runs."""
    if event.decided:
        return True
    if not isinstance(event, TaskSucceeded):
        return False
    node = state.nodes.get(event.task)
    return node is not None and node.spec.wait is not None


def lost_with_their_process(state: RunState, at: float) -> list[Event]:
    """The attempts running on workers when the process that ran them ended (a local
    run's): nothing will ever report on them, so they fail as lost and run again. A wait
    goes on waiting, and a workflow step's attempt is its child run, taken up with it."""
    return [
        TaskFailed(
            run_id=state.run_id,
            at=at,
            task=ref.task,
            index=ref.index,
            attempt=ref.attempt,
            error="its process ended while it ran",
            reason=FailureKind.LOST,
        )
        for ref in running_on_workers(state)
    ]


def running_on_workers(state: RunState) -> list[AttemptRef]:
    """The run's attempts a worker is running (a wait, or a workflow step's child run,
    is running on none)."""
    return [
        AttemptRef(state.run_id, node.spec.name, index, inst.attempt)
        for node in state.nodes.values()
        if node.spec.runs_on_a_worker
        for index, inst in enumerate(node.instances)
        if inst.status == TaskStatus.RUNNING
    ]


def _evaluate(state: RunState, node: Node) -> Event:
    """A task whose upstream is final: skip it, fail it, or expand it into instances."""
    spec = node.spec
    # Decisions about the task as a whole carry index -1, and the run's retry round as
    # their attempt, so a retried run's decisions get fresh ids.
    run_id, now, name = state.run_id, state.now, spec.name

    def skip(reason: str) -> TaskSkipped:
        return TaskSkipped(run_id=run_id, at=now, task=name, index=-1, attempt=rnd, reason=reason)

    def fail(error: str) -> TaskFailedByEngine:
        return TaskFailedByEngine(
            run_id=run_id, at=now, task=name, index=-1, attempt=0, error=error
        )

    rnd = state.round
    for dep in spec.depends:
        upstream = state.nodes[dep]
        chose_other = upstream.spec.branch and upstream.status == TaskStatus.SUCCEEDED
        if chose_other and name not in _chosen(upstream):
            return skip(f"branch {dep!r} chose another path")
    reason = _rule_unmet(state, node)
    if reason is not None:
        return skip(reason)
    if spec.when is not None:
        try:
            go = evaluate_when(state, node)
        except ExpressionError as exc:
            return fail(f"when: {exc.message}")
        if not go:
            return skip(f"when {spec.when.strip()!r} was false")
    count = 1
    if spec.fans_out:
        try:
            count = len(evaluate_items(state, node))
        except ExpressionError as exc:
            return fail(f"items: {exc.message}")
    return TaskExpanded(run_id=run_id, at=now, task=name, index=-1, attempt=rnd, count=count)


def _chosen(branch: Node) -> set[str]:
    """The downstream tasks a branch task's result names (a name or a list of names)."""
    result = branch.instances[0].result if branch.instances else None
    if isinstance(result, str):
        return {result}
    if isinstance(result, list):
        return {str(r) for r in result}
    return set()


def _rule_unmet(state: RunState, node: Node) -> str | None:
    """Why the task's trigger rule keeps it from running, or None if it runs."""
    rule = node.spec.trigger_rule
    if rule == "all_done":
        return None
    outcomes: dict[str, str] = {}
    for dep in node.spec.depends:
        upstream = state.nodes[dep]
        broke = upstream.status == TaskStatus.FAILED and not upstream.spec.continue_on_failure
        outcomes[dep] = (
            "failed"
            if broke
            else ("skipped" if upstream.status == TaskStatus.SKIPPED else "succeeded")
        )
    failed = [d for d, o in outcomes.items() if o == "failed"]
    succeeded = [d for d, o in outcomes.items() if o == "succeeded"]
    if rule == "all_succeeded":
        for dep, outcome in outcomes.items():
            if outcome != "succeeded":
                verb = "failed" if outcome == "failed" else "was skipped"
                return f"upstream task {dep!r} {verb}"
        return None
    if rule == "none_failed":
        return f"upstream task {failed[0]!r} failed" if failed else None
    if rule == "none_failed_min_one_success":
        if failed:
            return f"upstream task {failed[0]!r} failed"
        return None if succeeded or not outcomes else "no upstream task succeeded"
    if rule == "one_success":
        return None if succeeded else "no upstream task succeeded"
    if rule == "one_failed":
        return None if failed else "no upstream task failed"
    # all_failed
    return None if outcomes and len(failed) == len(outcomes) else "not every upstream task failed"


def _dispatches(state: RunState, node: Node) -> list[Event]:
    slots = node.capacity
    out: list[Event] = []
    name = node.spec.name
    for index in node.retry_ready:
        if slots <= 0:
            return out
        attempt = node.instances[index].attempt + 1
        out.append(
            TaskDispatched(
                run_id=state.run_id, at=state.now, task=name, index=index, attempt=attempt
            )
        )
        slots -= 1
    index = node.next_index
    while slots > 0 and index < len(node.instances):
        inst = node.instances[index]
        if inst.status == TaskStatus.PENDING:
            out.append(
                TaskDispatched(
                    run_id=state.run_id,
                    at=state.now,
                    task=name,
                    index=index,
                    attempt=inst.attempt + 1,
                )
            )
            slots -= 1
        index += 1
    return out


def _completion(state: RunState) -> RunCompleted:
    """The run's end once every task has ended: failed if a task failed (one that may
    not), or if its outputs do not render; else succeeded, with its outputs."""
    failed = [
        n
        for n in state.nodes.values()
        if n.status == TaskStatus.FAILED and not n.spec.continue_on_failure
    ]
    status, reason, outputs = RunStatus.SUCCEEDED, "", None
    if failed:
        names = ", ".join(n.spec.name for n in failed)
        status, reason = RunStatus.FAILED, f"failed tasks: {names} ({failed[0].error or 'failed'})"
    elif state.workflow.outputs:
        try:
            outputs = run_outputs(state)
        except ExpressionError as exc:
            status, reason = RunStatus.FAILED, exc.message
    return RunCompleted(
        run_id=state.run_id,
        at=state.now,
        state=status,
        reason=reason,
        round=state.round,
        outputs=outputs,
        parent=state.parent,
    )


def _jitter_unit(run_id: str, task: str, index: int, attempt: int) -> float:
    """A stable pseudo-random number in [0, 1).

    Jitter without a random source, so replaying a log makes the same decision.
    """
    return zlib.crc32(f"{run_id}/{task}/{index}/{attempt}".encode()) / 2**32


def pending_timers(state: RunState) -> list[tuple[float, Event]]:
    """Timers the shell must arm for this state: retries waiting, and the run deadline."""
    if state.finished:
        return []
    timers: list[tuple[float, Event]] = []
    if state.workflow.timeout is not None and not state.timed_out:
        due = state.deadline_base + state.workflow.timeout
        timers.append((due, RunTimedOut(run_id=state.run_id, at=due)))
    for node in state.nodes.values():
        if node.status != TaskStatus.RUNNING:
            continue
        timers.extend(wait_timeouts(state, node))
        for index, inst in enumerate(node.instances):
            if inst.status == TaskStatus.RETRY_WAIT and inst.due is not None:
                fired = TimerFired(
                    run_id=state.run_id,
                    at=inst.due,
                    task=node.spec.name,
                    index=index,
                    attempt=inst.attempt + 1,
                )
                timers.append((inst.due, fired))
    return timers


def wait_timeouts(state: RunState, node: Node) -> list[tuple[float, Event]]:
    """A waiting instance fails at its task's timeout (ignored if its signal came first)."""
    spec = node.spec
    if spec.signal is None or spec.timeout is None:
        return []
    found: list[tuple[float, Event]] = []
    for index, inst in enumerate(node.instances):
        if inst.status != TaskStatus.RUNNING or inst.started_at is None:
            continue
        due = inst.started_at + spec.timeout
        failure = TaskFailed(
            run_id=state.run_id,
            at=due,
            task=spec.name,
            index=index,
            attempt=inst.attempt,
            error=f"no signal {spec.signal!r} within {spec.timeout:g}s",
            reason=FailureKind.TIMEOUT,
            retryable=False,
        )
        found.append((due, failure))
    return found
