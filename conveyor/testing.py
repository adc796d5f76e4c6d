"""Testing workflows in-process: no broker, no Redis, no network, no waiting.

    from conveyor.testing import run_workflow

    def test_scoring():
        result = run_workflow(scoring, params={"size": 4}, failures={"score": 2})
        assert result.succeeded
        assert result.task("score").retries == 8          # 4 items x 2 forced failures
        assert result.task("report").result["items"] == 4

``fakes`` replace tasks by canned values or functions; ``failures`` force attempts to
fail (to exercise retries and branches); time is a ``FakeClock`` that jumps to the
next timer whenever the engine is idle, so backoff and timeouts cost no real time.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from contracts.events import Event, TaskFailed, TaskSucceeded
from contracts.ports import ArtifactStore, LogLine
from contracts.spec import Workflow
from contracts.validation import resolve_params
from contracts.vocabulary import FailureKind
from conveyor.embedded import EmbeddedEngine
from conveyor.logsetup import configure_logging
from conveyor.loop import run_plain
from conveyor.values import decoded
from engine.announce import AnnounceLevel, cloud_event
from engine.state.model import Node, RunState
from workers.artifacts import FsspecArtifactStore
from workers.executors import DEFAULT_MIDDLEWARE, Middleware, Proceed, StepCall, StepOutcome
from workers.staging import fetch_stored

EPOCH = 1_700_000_000.0


class FakeClock:
    """Time that moves only when told to (or when the harness jumps to the next timer)."""

    def __init__(self, start: float = EPOCH) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ManualTimers:
    """Timers on a ``FakeClock``: they fire when the harness says the time has come."""

    def __init__(self, fire: Callable[[Event], Any], clock: FakeClock) -> None:
        self._fire = fire
        self._clock = clock
        self._due: dict[str, tuple[float, Event]] = {}

    async def start(self) -> None:
        return None

    async def schedule(self, due: float, event: Event) -> None:
        self._due.setdefault(event.id, (due, event))

    def next_due(self) -> float | None:
        return min((due for due, _e in self._due.values()), default=None)

    async def fire_due(self) -> None:
        for key, (due, event) in sorted(self._due.items(), key=lambda kv: kv[1][0]):
            if due <= self._clock.now:
                del self._due[key]
                await self._fire(event)

    async def close(self) -> None:
        self._due.clear()


Fake = Any
"""A canned result, or a function called with the step's arguments (python steps) or
``item=`` (other fan-out steps) whose return value is the result."""


def harness(
    fakes: Mapping[str, Fake], failures: Mapping[str, int | Callable[[int, int], bool]]
) -> Middleware:
    """Executor middleware: forced failures first, then fakes, else the real step."""

    async def middleware(call: StepCall, proceed: Proceed) -> StepOutcome:
        task, emit = call.task, call.emit
        rule = failures.get(task.task)
        if rule is not None:
            fail = rule(task.index, task.attempt) if callable(rule) else task.attempt <= rule
            if fail:
                emit("system", f"forced failure of attempt {task.attempt} (conveyor.testing)")
                return StepOutcome(ok=False, error="forced failure", reason=FailureKind.ERROR)
        if task.task not in fakes:
            return await proceed(call)
        fake = fakes[task.task]
        if callable(fake):
            kwargs = dict(task.step.args) if task.step.kind == "python" else {}
            if task.item is not None and "item" in inspect.signature(fake).parameters:
                kwargs["item"] = task.item
            value = fake(**kwargs)
            if inspect.isawaitable(value):
                value = await value
        else:
            value = fake
        emit("system", "faked (conveyor.testing)")
        return StepOutcome(
            ok=True, result=getattr(value, "model_dump", lambda **_: value)(mode="json")
        )

    return middleware


@dataclass
class TaskResult:
    name: str
    state: str
    attempts: int
    retries: int
    outputs: dict[str, Any]
    error: str | None
    logs: list[LogLine] = field(default_factory=list)
    artifacts: ArtifactStore | None = None

    @property
    def result(self) -> Any:
        """The result as it travels: a stored value is its reference."""
        return self.outputs.get("result")

    @property
    def value(self) -> Any:
        """The result with stored values (``result_serializer``) fetched and decoded:
        the DataFrame or object the task returned."""
        return _loaded(self.result, self.artifacts)

    def log_text(self, stream: str | None = None) -> list[str]:
        return [line.text for line in self.logs if stream is None or line.stream == stream]


@dataclass(frozen=True)
class Notification:
    """A ``notify:`` delivery the run calls for. Not sent: a test makes no network calls."""

    url: str
    state: str
    """The run's new state: running, succeeded, failed or cancelled."""
    change: dict[str, Any]
    """The CloudEvent that would be its body."""


@dataclass
class RunResult:
    state: RunState
    events: list[Event]
    logs: list[LogLine]
    artifacts: ArtifactStore | None = None

    @property
    def notifications(self) -> list[Notification]:
        """The deliveries the workflow's ``notify`` entries call for, in order."""
        found = []
        for event in self.events:
            announced = cloud_event(event, self.state.workflow.name, AnnounceLevel.RUNS)
            if announced is None:
                continue
            change = announced[1]
            state = change["data"]["state"]
            for entry in self.state.workflow.notify:
                if state in entry.on:
                    found.append(Notification(entry.url, state, change))
        return found

    @property
    def status(self) -> str:
        return self.state.status

    @property
    def succeeded(self) -> bool:
        return self.state.status == "succeeded"

    @property
    def reason(self) -> str:
        return self.state.reason

    @property
    def run_id(self) -> str:
        return self.state.run_id

    @property
    def outputs(self) -> dict[str, Any] | None:
        """What the run gave back (the workflow's ``outputs``), if it succeeded."""
        return self.state.outputs

    def task(self, name: str) -> TaskResult:
        node: Node = self.state.nodes[name]
        attempts = [inst.attempt for inst in node.instances]
        return TaskResult(
            name=name,
            state=node.status,
            attempts=max(attempts, default=0),
            retries=sum(max(0, a - 1) for a in attempts),
            outputs=node.outputs() if node.instances else {},
            error=node.error,
            logs=[line for line in self.logs if line.task == name],
            artifacts=self.artifacts,
        )

    def events_of(self, kind: str, task: str | None = None) -> list[Event]:
        return [
            e
            for e in self.events
            if e.kind == kind and (task is None or getattr(e, "task", None) == task)
        ]

    def attempts_of(self, task: str, index: int = 0) -> list[str]:
        """Outcomes of a task's attempts in order, e.g. ``["failed", "failed", "succeeded"]``."""
        outcomes = []
        for event in self.events:
            if getattr(event, "task", None) == task and getattr(event, "index", 0) == index:
                if isinstance(event, TaskSucceeded):
                    outcomes.append("succeeded")
                elif isinstance(event, TaskFailed):
                    outcomes.append("failed")
        return outcomes


async def run_workflow_async(
    workflow: Workflow | Any,
    params: Mapping[str, Any] | None = None,
    *,
    fakes: Mapping[str, Fake] | None = None,
    failures: Mapping[str, int | Callable[[int, int], bool]] | None = None,
    clock: FakeClock | None = None,
    workers: int = 4,
    timeout: float = 60.0,
    artifacts: ArtifactStore | None = None,
) -> RunResult:
    """``artifacts``: where stored results, big values and cached results go; by
    default a fresh store in memory (pass one store to two runs to see caching)."""
    spec: Workflow = getattr(workflow, "spec", workflow)
    artifacts = artifacts or FsspecArtifactStore(f"memory://conveyor-test-{uuid.uuid4().hex}")
    if not structlog.is_configured():
        # A test's output is for its own failures: the engine speaks up only for warnings.
        configure_logging("warning", "console")
    clock = clock or FakeClock()
    timers: list[ManualTimers] = []

    def make_timers(fire: Callable[[Event], Any]) -> ManualTimers:
        timers.append(ManualTimers(fire, clock))
        return timers[-1]

    async with EmbeddedEngine(
        workers=workers,
        clock=clock,
        timers=make_timers,
        artifacts=artifacts,
        middleware=(*DEFAULT_MIDDLEWARE, harness(fakes or {}, failures or {})),
    ) as engine:
        run_id = await engine.submit(spec, resolve_params(spec, dict(params or {})))
        done = asyncio.ensure_future(engine.wait(run_id))
        async with asyncio.timeout(timeout):
            while not done.done():
                # The virtual scheduler: when nothing is moving, time jumps to the next timer.
                await asyncio.sleep(0.001)
                if engine.coordinator.is_finished(run_id):
                    continue
                if engine.idle() and timers and (due := timers[0].next_due()) is not None:
                    clock.now = max(clock.now, due)
                    await timers[0].fire_due()
        state = done.result()
        events = await engine.store.read(run_id)
        logs = await engine.store.read_lines(run_id)
    return RunResult(state=state, events=events, logs=logs, artifacts=artifacts)


def run_workflow(
    workflow: Workflow | Any, params: Mapping[str, Any] | None = None, **kwargs: Any
) -> RunResult:
    """Run a workflow (a spec, or a ``@workflow`` function) to the end, in-process."""
    return run_plain(run_workflow_async(workflow, params, **kwargs))


def _loaded(value: Any, store: ArtifactStore | None) -> Any:
    """A result with its stored values fetched (as a worker would) and decoded."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # callable inside a loop too
        return decoded(pool.submit(asyncio.run, fetch_stored(value, store)).result())
