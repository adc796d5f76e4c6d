"""Triggers for workflows written in Python: ``@workflow(triggers=[...])``.

    @workflow(triggers=[
        triggers.webhook("push", preset="github", secret_env="GITHUB_SECRET",
                         params={"repo": "body['repository']['full_name']"}),
        triggers.schedule("nightly", cron="0 2 * * *", timezone="Europe/Berlin"),
    ])
    def build(repo: str = "acme/shop") -> None: ...

Each function takes the fields of its YAML form (docs/triggers.md) and checks them
at once.
"""

from __future__ import annotations

from typing import Any

from contracts.triggers import (
    QueueTrigger,
    RunRequest,
    ScheduleTrigger,
    SensorResult,
    SensorTrigger,
    Trigger,
    WebhookTrigger,
)


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not None}


def webhook(name: str, **fields: Any) -> Trigger:
    """``POST /hooks/{workflow}/{name}``: preset, secret_env, header, when, params, dedup."""
    return Trigger(name=name, webhook=WebhookTrigger(**_given(fields)))


def schedule(name: str, **fields: Any) -> Trigger:
    """cron or every, timezone, catchup, catchup_window, catchup_limit, overlap, params."""
    return Trigger(name=name, schedule=ScheduleTrigger(**_given(fields)))


def queue(name: str, queue: str, **fields: Any) -> Trigger:
    """Messages on a RabbitMQ queue: url_env, when, params, dedup, prefetch."""
    return Trigger(name=name, queue=QueueTrigger(queue=queue, **_given(fields)))


def files(name: str, url: str, **fields: Any) -> Trigger:
    """New or changed objects matching an fsspec URL glob: interval, when, params."""
    return Trigger(name=name, sensor=SensorTrigger(files=url, **_given(fields)))


def sensor(name: str, function: str, **fields: Any) -> Trigger:
    """A Python sensor: ``module:function(cursor) -> SensorResult``, every ``interval``."""
    return Trigger(name=name, sensor=SensorTrigger(python=function, **_given(fields)))


__all__ = ["RunRequest", "SensorResult", "files", "queue", "schedule", "sensor", "webhook"]
