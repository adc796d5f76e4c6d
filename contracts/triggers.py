"""What starts a workflow's runs from outside: the ``triggers:`` list of a workflow.

Each trigger has a name and exactly one source:

- ``webhook``: ``POST /hooks/{workflow}/{trigger}``, signed the way its ``preset`` says;
- ``schedule``: cron (five fields, or six with seconds first) or a fixed interval;
- ``queue``: messages on a RabbitMQ queue;
- ``sensor``: new or changed objects under an fsspec URL.

``when`` and ``params`` are expressions over what arrived (``body``, ``headers``,
``query``, ``routing_key``, ``event``, ``nominal``): data in the expression language,
never code. A trigger's params name the workflow's own parameters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, field_validator, model_validator

from contracts.durations import Duration
from contracts.errors import ExpressionError, Problem
from contracts.expressions import Expression, templates_in
from contracts.modelbase import EnvName, Model, Name
from contracts.yamlsource import SourceMap

WebhookPreset = Literal["github", "stripe", "slack", "standard", "hmac", "none"]
CatchUpPolicy = Literal["skip", "latest", "all"]
OverlapPolicy = Literal["allow", "skip", "buffer_one", "cancel_other"]
TRIGGER_KINDS = ("webhook", "schedule", "queue", "sensor")

MAX_WEBHOOK_BYTES = 1 << 20
"""Default largest webhook body (1 MiB): larger requests get 413 and start nothing."""


class SignalsRun(Model):
    """A trigger that may send a signal to a run instead of starting one."""

    signal: Name | None = Field(
        default=None,
        description="Instead of starting a run, send this signal to the run that ``run``"
        " names (its params are the signal's data).",
    )
    run: str | None = Field(default=None, description="Expression giving the run to signal.")

    @model_validator(mode="after")
    def _signal_names_its_run(self) -> SignalsRun:
        if (self.signal is None) != (self.run is None):
            raise ValueError("a trigger that signals a run names both the signal and the run")
        return self


class WebhookTrigger(SignalsRun):
    """A signed HTTP callback that starts a run."""

    preset: WebhookPreset = "hmac"
    secret_env: EnvName | None = Field(
        default=None,
        description="Environment variable of the server holding the signing secret.",
    )
    header: str = Field(
        default="x-signature",
        pattern=r"^[A-Za-z0-9-]+$",
        description="The signature header of the hmac preset.",
    )
    tolerance: Duration = Field(default=300.0, description="Replay window of signed timestamps.")
    max_bytes: int = Field(default=MAX_WEBHOOK_BYTES, gt=0, le=64 << 20)
    when: str | None = Field(default=None, description="Start a run only if this is true.")
    params: dict[Name, str] = Field(default_factory=dict, description="param -> expression")
    dedup: str | None = Field(
        default=None,
        description="Expression giving the delivery id, when the preset has none"
        " (a redelivery with the same id returns the same run).",
    )

    @model_validator(mode="after")
    def _secret_named(self) -> WebhookTrigger:
        if self.preset != "none" and self.secret_env is None:
            raise ValueError(
                f"the {self.preset} preset checks a signature: name the server's environment"
                " variable holding the secret (secret_env), or say preset: none on purpose"
            )
        return self


class ScheduleTrigger(Model):
    """Fires at cron times or at a fixed interval, in a time zone."""

    cron: str | None = None
    every: Duration | None = Field(default=None, description="Interval, counted from the epoch.")
    timezone: str = "UTC"
    catchup: CatchUpPolicy = "latest"
    catchup_window: Duration = Field(default=86400.0, description="How far back catch-up looks.")
    catchup_limit: int = Field(default=100, ge=1, le=10_000)
    overlap: OverlapPolicy = "allow"
    params: dict[Name, Any] = Field(
        default_factory=dict,
        description="param -> literal value, or an expression in '{{ }}' (``nominal``: the"
        " fire's nominal time, ISO 8601).",
    )

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleTrigger:
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule needs exactly one of cron and every")
        if self.every is not None and self.every < 1:
            raise ValueError("every must be at least 1s")
        try:
            ZoneInfo(self.timezone)
        except (ValueError, KeyError, OSError):
            raise ValueError(f"unknown time zone {self.timezone!r}") from None
        if self.cron is not None:
            problem = cron_problem(self.cron)
            if problem:
                raise ValueError(problem)
        return self


class QueueTrigger(SignalsRun):
    """Messages on a RabbitMQ queue; each valid message starts one run."""

    queue: str = Field(min_length=1, max_length=255, pattern=r"^[\w.:-]+$")
    url_env: EnvName | None = Field(
        default=None,
        description="Environment variable with the broker URL; default: the engine's broker"
        " (CONVEYOR_AMQP_URL).",
    )
    when: str | None = None
    params: dict[Name, str] = Field(default_factory=dict)
    dedup: str | None = Field(
        default=None, description="Expression giving a message's id when it has no message_id."
    )
    prefetch: int = Field(default=16, ge=1, le=1000)


class SensorTrigger(Model):
    """Starts runs for what it finds, looking every ``interval``: new or changed objects
    matching a glob under any fsspec URL (``files``), or run requests returned by a
    Python function (``python``: ``module:function``, called with the sensor's cursor)."""

    files: str | None = Field(
        default=None, min_length=1, description="fsspec URL with a glob: file:///in/*.csv"
    )
    python: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="module:function(cursor) -> SensorResult (trusted code, run by the server).",
    )
    interval: Duration = Field(default=2.0, description="Seconds between looks.")
    when: str | None = None
    params: dict[Name, str] = Field(default_factory=dict)

    @field_validator("interval")
    @classmethod
    def _not_busy(cls, value: float) -> float:
        if value < 0.1:
            raise ValueError("interval must be at least 100ms")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> SensorTrigger:
        if (self.files is None) == (self.python is None):
            raise ValueError("a sensor needs exactly one of files and python")
        if self.python is not None and self.params:
            raise ValueError("a python sensor's run requests carry their own params")
        return self


NotifyState = Literal["running", "succeeded", "failed", "cancelled"]
_FINISHED: tuple[NotifyState, ...] = ("succeeded", "failed", "cancelled")


class Notify(Model):
    """An outbound webhook: the run's state changes POSTed as CloudEvents, signed the
    Standard Webhooks way when a secret is named, retried with backoff."""

    url: str = Field(pattern=r"^https?://[^\s]+$", max_length=2000)
    on: list[NotifyState] = Field(default_factory=lambda: list(_FINISHED))
    secret_env: EnvName | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    attempts: int = Field(default=5, ge=1, le=20)


class Trigger(Model):
    name: Name
    webhook: WebhookTrigger | None = None
    schedule: ScheduleTrigger | None = None
    queue: QueueTrigger | None = None
    sensor: SensorTrigger | None = None
    enabled: bool = True

    @model_validator(mode="after")
    def _one_source(self) -> Trigger:
        kinds = [k for k in TRIGGER_KINDS if getattr(self, k) is not None]
        if len(kinds) != 1:
            found = ", ".join(kinds) if kinds else "none"
            raise ValueError(
                f"a trigger needs exactly one of {', '.join(TRIGGER_KINDS)} (found: {found})"
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in TRIGGER_KINDS if getattr(self, k) is not None)

    @property
    def source(self) -> WebhookTrigger | ScheduleTrigger | QueueTrigger | SensorTrigger:
        source = getattr(self, self.kind)
        assert source is not None
        return source  # type: ignore[no-any-return]


@dataclass(frozen=True)
class RunRequest:
    """A run a Python sensor asks for: ``key`` names it (the same key is one run, ever),
    ``params`` are the run's parameters."""

    key: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SensorResult:
    """What a Python sensor returns: the runs to start and its cursor for next time."""

    runs: list[RunRequest] = field(default_factory=list)
    cursor: str | None = None


# -- cron with an optional seconds field ------------------------------------------------

_SECOND_PART = re.compile(r"^(\*|\d{1,2}(?:-\d{1,2})?)(?:/(\d{1,2}))?$")


def split_cron(expression: str) -> tuple[frozenset[int] | None, str]:
    """``(seconds, five-field cron)``: seconds is None for a five-field expression.

    Raises ValueError for a seconds field it cannot read.
    """
    fields = expression.split()
    if len(fields) != 6:
        return None, expression
    seconds: set[int] = set()
    for part in fields[0].split(","):
        match = _SECOND_PART.match(part)
        if match is None:
            raise ValueError(f"bad seconds field {fields[0]!r} (use *, N, N-M, */N, N-M/S, lists)")
        span, step_text = match.groups()
        step = int(step_text) if step_text else 1
        if span == "*":
            low, high = 0, 59
        elif "-" in span:
            low, high = (int(x) for x in span.split("-"))
        else:
            low = int(span)
            high = 59 if step_text else low
        if not 0 <= low <= high <= 59 or step < 1:
            raise ValueError(f"bad seconds field {fields[0]!r}: seconds run from 0 to 59")
        seconds.update(range(low, high + 1, step))
    return frozenset(seconds), " ".join(fields[1:])


def cron_problem(expression: str) -> str | None:
    """What is wrong with a cron expression, or None."""
    from cronsim import CronSim, CronSimError

    try:
        _, minutes = split_cron(expression)
        CronSim(minutes, datetime(2000, 1, 1))
    except (CronSimError, ValueError) as exc:
        return f"bad cron expression {expression!r}: {exc}"
    return None


# -- checks across a workflow's triggers ----------------------------------------------

NAMES_IN_SCOPE: dict[str, frozenset[str]] = {
    "webhook": frozenset({"body", "headers", "query", "text"}),
    "queue": frozenset({"body", "headers", "routing_key", "message_id", "text"}),
    "sensor": frozenset({"event", "params"}),
    "schedule": frozenset({"nominal", "trigger"}),
}
"""What each kind of trigger's expressions may read."""


def trigger_expressions(trigger: Trigger) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """(path inside the trigger, expression source) of every expression it holds."""
    source = trigger.source
    kind = trigger.kind
    when = getattr(source, "when", None)
    if when is not None:
        yield (kind, "when"), when
    for field_name in ("dedup", "run"):
        value = getattr(source, field_name, None)
        if value is not None:
            yield (kind, field_name), value
    for name, value in source.params.items():
        if isinstance(source, ScheduleTrigger):
            for part in templates_in(value):
                for expression in part.expressions:
                    yield (kind, "params", name), expression.source
        else:
            yield (kind, "params", name), value


def check_triggers(
    triggers: list[Trigger],
    *,
    known: set[str],
    required: set[str],
    secret: set[str],
    smap: SourceMap,
) -> list[Problem]:
    """Unique names; params that name the workflow's own and cover the required ones;
    expressions that parse and read only what their kind of trigger provides."""
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for i, trigger in enumerate(triggers):
        at: tuple[str | int, ...] = ("triggers", i)
        if trigger.name in seen:
            problems.append(
                smap.problem(
                    (*at, "name"),
                    f"duplicate trigger name {trigger.name!r}"
                    f" (also triggers[{seen[trigger.name]}])",
                )
            )
        seen.setdefault(trigger.name, i)
        given = set(trigger.source.params)
        if getattr(trigger.source, "signal", None) is not None:
            given = set()  # its params are the signal's data, not the workflow's params
        for name in sorted(given - known):
            problems.append(
                smap.problem(
                    (*at, trigger.kind, "params", name),
                    f"{name!r} is not a parameter of the workflow"
                    f" (its parameters: {', '.join(sorted(known)) or 'none'})",
                )
            )
        for name in sorted(given & secret):
            problems.append(
                smap.problem(
                    (*at, trigger.kind, "params", name),
                    f"{name!r} is a secret parameter: the worker reads it from its environment,"
                    " a trigger cannot give it",
                )
            )
        from_function = trigger.sensor is not None and trigger.sensor.python is not None
        signals = getattr(trigger.source, "signal", None) is not None
        for name in sorted(set() if from_function or signals else required - given):
            problems.append(
                smap.problem(
                    (*at, trigger.kind, "params"),
                    f"the workflow's required parameter {name!r} is not given by this trigger",
                )
            )
        scope = NAMES_IN_SCOPE[trigger.kind]
        for path, text in trigger_expressions(trigger):
            try:
                expression = Expression(text)
            except ExpressionError as exc:
                problems.append(smap.problem((*at, *path), str(exc)))
                continue
            for ref in expression.references():
                if ref.path and ref.path[0] not in scope:
                    problems.append(
                        smap.problem(
                            (*at, *path),
                            f"{ref.path[0]!r} is not known here: a {trigger.kind} trigger's"
                            f" expressions read {', '.join(sorted(scope))}",
                        )
                    )
        if isinstance(trigger.source, ScheduleTrigger):
            for name, value in trigger.source.params.items():
                if _reads_like_an_expression(value, scope):
                    problems.append(
                        smap.problem(
                            (*at, trigger.kind, "params", name),
                            f"{value!r} would be passed as this text: a schedule's params are"
                            f" text or templates; to compute it write '{{{{ {value} }}}}'",
                        )
                    )
    return problems


def _reads_like_an_expression(value: Any, scope: frozenset[str]) -> bool:
    """Text outside any template that is an expression over the trigger's names, such as
    ``nominal[:10]``: as a webhook's param it would be computed, here it is passed on
    as written. (A bare name, ``trigger``, is left alone: that is a plausible word.)"""
    if not isinstance(value, str) or "{{" in value or value.strip() in scope:
        return False
    try:
        references = Expression(value).references()
    except ExpressionError:
        return False
    roots = {ref.path[0] for ref in references if ref.path}
    return bool(roots) and roots <= scope  # 'trigger-happy' reads 'happy': plain text
