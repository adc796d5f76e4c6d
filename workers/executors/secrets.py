"""Secrets reach a step as environment variables, and nothing the step reports holds them.

A secret parameter travels as a mark naming the worker's environment variable that
holds it (``contracts.vocabulary.SECRET_MARK``): the run log, the task message and the
coordinator never see the value. Here, on the worker, just before the step starts, the
marks in the step's ``env`` are swapped for the values; every line the step writes,
its error and its results are masked (``***``) before they leave the worker, as
GitHub Actions masks secrets in its logs.
"""

from __future__ import annotations

import os
import re
from typing import Any

import msgspec

from contracts.vocabulary import SECRET_MARKS, FailureKind
from workers.executors.base import StepOutcome
from workers.executors.call import Proceed, StepCall

MASK = "***"


async def reveal_secrets(call: StepCall, proceed: Proceed) -> StepOutcome:
    env = call.task.step.env
    if not any("\x1esecret:" in value for value in env.values()):
        return await proceed(call)
    values: list[str] = []
    missing: list[str] = []

    def reveal(match: re.Match[str]) -> str:
        name = match.group(1)
        value = os.environ.get(name)
        if value is None:
            missing.append(name)
            return ""
        values.append(value)
        return value

    revealed = {key: SECRET_MARKS.sub(reveal, value) for key, value in env.items()}
    if missing:
        return StepOutcome(
            ok=False,
            error=f"secret {', '.join(sorted(set(missing)))} is not set on this worker",
            reason=FailureKind.START,
            retryable=False,
        )
    hidden = sorted({v for v in values if v}, key=len, reverse=True)

    def mask(text: str) -> str:
        for value in hidden:
            text = text.replace(value, MASK)
        return text

    def emit(stream: str, text: str) -> None:
        call.emit(stream, mask(text))

    step = msgspec.structs.replace(call.task.step, env=revealed)
    task = msgspec.structs.replace(call.task, step=step)
    outcome = await proceed(StepCall(task, emit, call.workdir, call.log))
    outcome.error = mask(outcome.error)
    outcome.result = _masked(outcome.result, mask)
    outcome.outputs = _masked(outcome.outputs, mask)
    return outcome


def _masked(value: Any, mask: Any) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    if isinstance(value, dict):
        return {k: _masked(v, mask) for k, v in value.items()}
    return value
