"""Python function steps (``module:function``), run inside the worker process."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import importlib
import inspect
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contracts.errors import StepError
from contracts.messages import TaskReady
from contracts.vocabulary import FailureKind
from workers.executors.base import LogEmitter, StepOutcome


class PythonExecutor:
    """Calls the function with the step's rendered ``args`` as keyword arguments.

    Coroutine functions run on the worker's loop; plain functions in a thread so a
    slow one does not stall the worker. A cancelled (or timed-out) coroutine stops; a
    thread cannot be stopped, so its result is discarded when it eventually returns.
    """

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def run(self, task: TaskReady, emit: LogEmitter, workdir: Path) -> StepOutcome:
        step = task.step
        assert step.target
        try:
            function = load_function(step.target)
        except StepError as exc:
            emit("system", exc.message)
            return StepOutcome(
                ok=False, error=exc.message, reason=FailureKind.START, retryable=False
            )
        mismatch = _argument_mismatch(function, tuple(step.args))
        if mismatch is not None:
            message = f"{step.target}: arguments do not match the function: {mismatch}"
            emit("system", message)
            return StepOutcome(ok=False, error=message, reason=FailureKind.START, retryable=False)
        try:
            if _is_async(function):
                result = await function(**step.args)
            else:
                # The thread gets a copy of the context, so log lines from the step
                # carry the run and task ids.
                call = functools.partial(contextvars.copy_context().run, function)
                result = await asyncio.get_running_loop().run_in_executor(
                    None, functools.partial(call, **step.args)
                )
        except StepError as exc:
            emit("stderr", traceback.format_exc().rstrip())
            return StepOutcome(
                ok=False, error=exc.message, reason=exc.kind, retryable=exc.retryable
            )
        except Exception as exc:
            for line in traceback.format_exc().rstrip().splitlines():
                emit("stderr", line)
            return StepOutcome(
                ok=False, error=f"{type(exc).__name__}: {exc}", reason=FailureKind.ERROR
            )
        return StepOutcome(ok=True, result=_plain(result))


@functools.lru_cache(maxsize=4096)
def _argument_mismatch(function: Callable[..., Any], names: tuple[str, ...]) -> str | None:
    """Why ``function`` cannot be called with these keyword arguments, if it cannot.

    Depends on the names only, so it is worked out once per function and set of names.
    """
    try:
        inspect.signature(function).bind(**dict.fromkeys(names))
    except TypeError as exc:
        return str(exc)
    return None


@functools.lru_cache(maxsize=1024)
def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function) or bool(getattr(function, "is_async", False))


def load_function(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import can fail in any way its module's code can
        raise StepError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}", kind=FailureKind.START
        ) from exc
    function = getattr(module, attr, None)
    if function is None or not callable(function):
        raise StepError(f"{module_name!r} has no function {attr!r}", kind=FailureKind.START)
    return function  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    """Results travel as JSON: turn pydantic models and similar into plain data."""
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return value
