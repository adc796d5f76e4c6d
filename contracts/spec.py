"""The workflow language: pydantic models for a workflow file, and their validation.

A workflow is a DAG of tasks. Each task runs one step (a script, a command or a
Python function), optionally once per item of a list (fan-out). The models here are
the single source of truth: YAML files and the Python authoring API both produce a
``Workflow``, and the engine runs nothing else.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from contracts.calls import AmqpCall, HttpCall
from contracts.durations import Duration
from contracts.errors import did_you_mean
from contracts.modelbase import EnvName, Model, Name, StepPath
from contracts.paramtypes import ParamType, check_type, infer_type
from contracts.triggers import Notify, Trigger
from contracts.vocabulary import RetryableKind

MAX_TASKS = 2_000
"""Tasks in one workflow. Each knows its ancestors, so a chain of n tasks costs n²/2;
work over many things is a fan-out (up to a million items), not many tasks."""


TriggerRule = Literal[
    "all_succeeded",
    "all_done",
    "none_failed",
    "none_failed_min_one_success",
    "one_success",
    "one_failed",
    "all_failed",
]
"""When a task runs, judged once all its upstream tasks are final (Airflow's names)."""

_PARAM_KEYS = {"type", "default", "description", "secret", "from_env"}


class Param(Model):
    """A workflow parameter. Without ``default`` it must be given at submit time."""

    type: ParamType = "any"
    default: Any = None
    description: str | None = None
    secret: bool = False
    from_env: EnvName | None = Field(
        default=None,
        description="A secret: the worker reads it from this environment variable when a"
        " step needs it; it is never given at submit time nor stored.",
    )

    @property
    def required(self) -> bool:
        return "default" not in self.model_fields_set and not self.is_secret

    @property
    def is_secret(self) -> bool:
        return self.secret or self.from_env is not None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `count: 3` is short for `count: {type: int, default: 3}`.
        if isinstance(value, dict) and value and set(value) <= _PARAM_KEYS:
            return value
        if isinstance(value, dict) and "type" in value:
            # Most likely a parameter's keys with a typo, not a dict default: refused
            # rather than taken silently for a default value.
            unknown = sorted(set(value) - _PARAM_KEYS)
            hints = [f"{key!r}{did_you_mean(key, _PARAM_KEYS)}" for key in unknown]
            raise ValueError(
                f"unknown parameter key {', '.join(hints)}: a parameter has "
                f"{', '.join(sorted(_PARAM_KEYS))}; a dict default with a 'type' key is"
                " written {type: dict, default: {...}}"
            )
        return {"type": infer_type(value), "default": value}

    @model_validator(mode="after")
    def _default_matches_type(self) -> Param:
        if self.is_secret:
            if self.from_env is None:
                raise ValueError(
                    "a secret parameter names the worker's environment variable that holds it"
                    " (from_env: NAME): a value given at submit time would be stored"
                )
            if "default" in self.model_fields_set:
                raise ValueError("a secret parameter has no default")
            return self
        if not self.required and self.default is not None:
            check_type(self.type, self.default)
        return self


class Backoff(Model):
    """Delay before retry n (1-based): ``min(max, delay * factor**(n-1))``, +/- jitter."""

    delay: Duration = 1.0
    factor: float = Field(default=2.0, ge=1.0)
    max: Duration = 300.0
    jitter: float = Field(default=0.1, ge=0.0, le=1.0)


_DEFAULT_RETRY_ON: tuple[RetryableKind, ...] = ("error", "timeout")


class RetryPolicy(Model):
    """How often a failed task is tried again, how long to wait, and on which failures."""

    limit: int = Field(default=0, ge=0, le=100, description="Retries after the first attempt.")
    backoff: Backoff = Backoff()
    delays: list[Duration] | None = Field(
        default=None,
        max_length=100,
        description="Explicit delays before retry 1, 2, ... (the last repeats); instead of"
        " backoff.",
    )
    on: list[RetryableKind] = Field(default_factory=lambda: list(_DEFAULT_RETRY_ON))

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"limit": value}
        return value

    def delay_before(self, attempt: int, jitter_unit: float) -> float:
        """Seconds to wait before ``attempt`` (2 = first retry); ``jitter_unit`` in [0, 1)."""
        if self.delays:
            return float(self.delays[min(max(0, attempt - 2), len(self.delays) - 1)])
        b = self.backoff
        base = min(b.max, b.delay * b.factor ** max(0, attempt - 2))
        return max(0.0, base * (1.0 + b.jitter * (2.0 * jitter_unit - 1.0)))


class CachePolicy(Model):
    """Memoization: an attempt whose cache key was seen before, within ``expire``, is
    not run; the result, outputs and artifacts recorded then are its own."""

    key: str | None = Field(
        default=None,
        max_length=1000,
        description="The key (templated). Default: the step's inputs, content-addressed:"
        " its code, arguments, environment, item and input artifacts' digests.",
    )
    key_fn: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function(context, parameters) -> str | None, called by the"
        " worker for a python step (Prefect's cache_key_fn); None means do not cache.",
    )
    expire: Duration | None = Field(
        default=None, description="How long a cached result is used; forever if unset."
    )
    refresh: bool = Field(
        default=False, description="Run anyway and record the new result (refresh_cache)."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if value is True:
            return {}
        return value


Interpreter = Literal["sh", "bash", "python"]
STEP_KINDS = ("script", "command", "python", "container", "http", "amqp", "wait", "workflow")
STEP_PATH_VARIABLE = "CONVEYOR_PYTHON_PATH"
"""Extra folders a ``python`` step's module is imported from, separated like PATH
(``os.pathsep``), by every process that runs steps."""


class Wait(Model):
    """Suspend the task until the run receives a signal (an approval, a webhook or a
    message sent to the run), holding no worker slot; the signal's data is the task's
    result. The task's ``timeout`` bounds the wait."""

    signal: Name | None = Field(
        default=None, description="The signal's name (default: the task's name)."
    )


class Script(Model):
    """Inline source run by an interpreter."""

    source: str
    interpreter: Interpreter = "sh"

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"source": value} if isinstance(value, str) else value


PullPolicy = Literal["always", "if-not-present", "never"]


class Container(Model):
    """A step run in a container image, on Docker or Podman, without Kubernetes.

    ``script`` is Argo's script template: the source is written to a file mounted
    into the container and run with ``command`` (default ``[sh]``). The task's
    ``env`` and ``workdir`` apply inside the container; the working directory is a
    fresh host directory mounted there, so named outputs and output artifacts written
    relative to it are read after the step.
    """

    image: str = Field(
        min_length=1,
        pattern=r"^[^-\s]",
        description="An image reference; never starts with '-' (it would be read as a flag).",
    )
    command: list[str] | None = None
    args: list[str] = Field(default_factory=list)
    script: str | None = None
    user: str | None = None
    network: str | None = Field(default=None, description="none, host, bridge, or a network name.")
    cpus: float | None = Field(default=None, gt=0)
    memory: str | None = Field(default=None, pattern=r"^\d+(\.\d+)?[bkmgBKMG]?$")
    pull: PullPolicy = "if-not-present"


class Artifacts(Model):
    """Files passed between tasks through the artifact store.

    ``out``: name -> path the step writes (a file or a directory), uploaded after the
    step. ``in``: path -> what to put there before the step: an upstream task's
    artifact (``tasks.a.artifacts.report``; a fan-out task's gives one file per item
    in a directory) or a URL any configured filesystem can read.
    """

    out: dict[Name, StepPath] = Field(default_factory=dict)
    in_: dict[StepPath, str] = Field(default_factory=dict, alias="in")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Subflow(Model):
    """Run another workflow as this task's step, once per item for a fan-out; its run's
    outputs are the task's result, and its failure the task's."""

    file: str | None = Field(
        default=None,
        description="A workflow file, relative to this one's folder; read with this one.",
    )
    spec: Workflow | None = Field(
        default=None,
        description="The child workflow itself (a file's is read into it).",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="The child run's parameters (templated; a value that is exactly one"
        " {{ }} keeps its type).",
    )


class Task(Model):
    """One node of the DAG: a step, its inputs, outputs, fan-out and failure policy."""

    name: Name
    depends: list[Name] = Field(default_factory=list)

    script: Script | None = None
    command: list[str] | None = Field(default=None, min_length=1)
    python: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function run inside the worker process.",
    )
    container: Container | None = None
    http: HttpCall | None = None
    amqp: AmqpCall | None = None
    wait: Wait | None = None
    workflow: Subflow | None = None
    artifacts: Artifacts = Artifacts()
    args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments of a python step (templated)."
    )
    env: dict[EnvName, str] = Field(default_factory=dict)
    workdir: str | None = Field(
        default=None,
        description="Working directory (a fixed path: templates are refused here, so no value"
        " from outside can pick a host directory).",
    )
    outputs: dict[Name, StepPath] = Field(
        default_factory=dict,
        description="Named output parameters: name -> file the step writes (relative to workdir).",
    )

    when: str | None = None
    items: list[Any] | str | None = Field(
        default=None, description="Fan out: a literal list, or an expression giving a list."
    )
    parallelism: int | None = Field(default=None, ge=1)

    retry: RetryPolicy = RetryPolicy()
    timeout: Duration | None = None
    cache: CachePolicy | None = Field(
        default=None, description="Reuse results of earlier attempts with the same inputs."
    )
    continue_on_failure: bool = False
    trigger_rule: TriggerRule = "all_succeeded"
    branch: bool = Field(
        default=False,
        description="The task's result names the downstream task(s) to follow; the others"
        " are skipped.",
    )
    pool: Name = "default"

    @field_validator("workdir")
    @classmethod
    def _workdir_is_fixed(cls, value: str | None) -> str | None:
        if value is not None and "{{" in value:
            raise ValueError(
                "workdir cannot be templated: a value from outside would choose a host"
                " directory; pass values to the step as env or args instead"
            )
        return value

    @field_validator("outputs")
    @classmethod
    def _result_is_reserved(cls, value: dict[str, str]) -> dict[str, str]:
        if "result" in value:
            raise ValueError("'result' is reserved for the step's own result")
        return value

    @model_validator(mode="before")
    @classmethod
    def _old_trigger_name(cls, data: Any) -> Any:
        # Run logs recorded before the rename hold ``trigger``; they must replay as they ran.
        if isinstance(data, dict) and "trigger" in data and "trigger_rule" not in data:
            data = {k: v for k, v in data.items() if k != "trigger"} | {
                "trigger_rule": data["trigger"]
            }
        return data

    @model_validator(mode="after")
    def _one_step(self) -> Task:
        kinds = [k for k in STEP_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(
                f"a task needs exactly one of {', '.join(STEP_KINDS)} (found: {found})"
            )
        if self.args and self.python is None:
            raise ValueError("'args' applies only to python steps")
        if self.parallelism is not None and self.items is None:
            raise ValueError("'parallelism' applies only to tasks with 'items'")
        if self.cache is not None and self.wait is not None:
            raise ValueError("'cache' does not apply to wait steps")
        if self.cache is not None and self.cache.key_fn and self.python is None:
            raise ValueError("'cache.key_fn' applies only to python steps")
        return self

    @property
    def kind(self) -> str:
        # Not cached: model_copy(update=...) copies a cache without revalidating.
        return next(k for k in STEP_KINDS if getattr(self, k) is not None)

    @property
    def signal(self) -> str | None:
        """The signal a wait step waits for."""
        return None if self.wait is None else (self.wait.signal or self.name)

    @property
    def fans_out(self) -> bool:
        return self.items is not None

    @property
    def runs_on_a_worker(self) -> bool:
        """Whether a worker runs its attempts (and beats for them while they run). A wait
        step waits in the coordinator, and a workflow step's attempt is a child run."""
        return self.wait is None and self.workflow is None


class Workflow(Model):
    """A named DAG of tasks with typed parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="Conveyor workflow")

    name: Name
    description: str | None = None
    params: dict[Name, Param] = Field(default_factory=dict)
    tasks: list[Task] = Field(
        min_length=1,
        max_length=MAX_TASKS,
        description=f"At most {MAX_TASKS:,} tasks (fan out over items for more work).",
    )
    timeout: Duration | None = Field(default=None, description="Run timeout.")
    triggers: list[Trigger] = Field(
        default_factory=list, description="What starts runs from outside (docs/triggers.md)."
    )

    notify: list[Notify] = Field(
        default_factory=list, description="Outbound webhooks on run state changes."
    )
    outputs: dict[Name, Any] = Field(
        default_factory=dict,
        description=(
            "What a run that succeeds gives back: values with {{ }} templates over params,"
            " run and tasks (a string that is exactly one {{ }} keeps the value's type)."
        ),
    )

    def trigger(self, name: str) -> Trigger:
        for trigger in self.triggers:
            if trigger.name == name:
                return trigger
        raise KeyError(name)

    def task(self, name: str) -> Task:
        for task in self.tasks:
            if task.name == name:
                return task
        raise KeyError(name)


Subflow.model_rebuild()  # it holds a Workflow, defined after it


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow file, with the workflow at its root (a workflow
    step's child refers back to it in ``$defs``)."""
    document = Workflow.model_json_schema()
    defs = document.pop("$defs", {})
    root = defs.get("Workflow", document)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **root,
        "$defs": defs,
    }
