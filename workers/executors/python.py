"""Python function steps (``module:function``).

Where each runs, so that a timeout or a cancel really ends it:

- a coroutine function on the worker's event loop (cancelling it stops it);
- a plain function with a ``timeout`` in a child process kept for such steps
  (``workers.executors.pyprocess``), killed when its time is up or its run is
  cancelled;
- a plain function without a timeout in one of the worker's daemon threads, the fast
  path (no process hop, no copy of arguments and result). A cancel reports the step
  cancelled at once; the thread itself runs on until it returns or the process exits,
  which it does not hold up.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import importlib
import inspect
import os
import queue
import secrets
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from contracts.errors import StepError
from contracts.messages import TaskReady
from contracts.spec import STEP_PATH_VARIABLE
from contracts.values import EncodedValue, StoredValue
from contracts.vocabulary import FailureKind
from workers.executors.base import LogEmitter, StepOutcome
from workers.executors.pyprocess import ChildDied, ChildPool
from workers.executors.stepoutput import capture, release
from workers.tracebacks import step_traceback


class PythonExecutor:
    """Calls the function with the step's rendered ``args`` as keyword arguments."""

    def __init__(self) -> None:
        self._threads = DaemonThreads()
        self._children = ChildPool()

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._threads.close()
        await self._children.close()

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
        if step.timeout is not None and not _is_async(function):
            return await self._in_child(step.target, step.args, emit)
        lines, token = capture(emit)  # what the step prints is its log
        try:
            if _is_async(function):
                result = await function(**step.args)
            else:
                result = await self._threads.call(function, step.args)
        except asyncio.CancelledError:
            raise
        except Raised as raised:  # from a thread, with the traceback it had there
            for line in raised.trace.rstrip().splitlines():
                emit("stderr", line)
            return _failed(raised.original)
        except BaseException as exc:  # whatever a step raises fails its attempt only
            for line in step_traceback(exc).rstrip().splitlines():
                emit("stderr", line)
            return _failed(exc)
        finally:
            release(lines, token)
        return StepOutcome(ok=True, result=_plain(result))

    async def _in_child(self, target: str, args: dict[str, Any], emit: LogEmitter) -> StepOutcome:
        # Stored values go beside the arguments, each replaced by a mark no sender of the
        # arguments can guess (so none can make the child take its data for a value).
        mark = f"$stored-{secrets.token_hex(16)}"
        stored: list[dict[str, Any]] = []
        request = {
            "target": target,
            "args": _marked(args, mark, stored),
            "path": sys.path,
            "stored_mark": mark,
            "stored": stored,
        }
        try:
            answer = await self._children.run(request, emit)
        except ChildDied as exc:
            return StepOutcome(ok=False, error=str(exc), reason=FailureKind.ERROR)
        if answer["ok"]:
            encoded = answer.get("encoded")
            if encoded is not None:
                data = base64.b64decode(encoded["data"])
                return StepOutcome(ok=True, result=EncodedValue(data, encoded["format"]))
            return StepOutcome(ok=True, result=answer.get("result"))
        for line in answer.get("traceback", "").rstrip().splitlines():
            emit("stderr", line)
        kind = str(answer.get("kind", FailureKind.ERROR))
        return StepOutcome(
            ok=False,
            error=answer["error"],
            reason=FailureKind(kind) if kind in set(FailureKind) else FailureKind.ERROR,
            retryable=answer.get("retryable", True),
        )


def _marked(value: Any, mark: str, stored: list[dict[str, Any]]) -> Any:
    if isinstance(value, StoredValue):
        stored.append({"format": value.format, "data": base64.b64encode(value.data).decode()})
        return {mark: len(stored) - 1}
    if isinstance(value, dict):
        return {k: _marked(v, mark, stored) for k, v in value.items()}
    if isinstance(value, list):
        return [_marked(v, mark, stored) for v in value]
    return value


Job = Callable[[], Callable[[], object]]
"""A plain function's call, run in a step thread; returns how to hand its result over."""


class DaemonThreads:
    """Threads for plain functions, kept for reuse, that never hold up the process's exit.

    (The event loop's default executor joins its threads at exit: a cancelled step that
    sleeps for an hour would keep a finished ``conveyor run`` waiting for an hour.)
    ``close`` ends them: the idle ones at once, a busy one when its function returns.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._started = 0
        self._idle = 0
        self._lock = threading.Lock()

    async def call(self, function: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        # The thread gets a copy of the context, so log lines from the step carry the
        # run and task ids.
        context = contextvars.copy_context()

        def job() -> Callable[[], object]:
            result, raised = None, None
            try:
                result = context.run(function, **kwargs)
            except BaseException as exc:
                # Never the exception itself: a StopIteration cannot be set on a future,
                # and a SystemExit must not end the worker.
                raised = Raised(exc, step_traceback(exc))
            return functools.partial(loop.call_soon_threadsafe, _settle, future, result, raised)

        with self._lock:
            jobs = self._jobs
            if self._idle:
                self._idle -= 1
            else:
                self._started += 1
                threading.Thread(
                    target=self._serve, args=(jobs,), daemon=True, name="conveyor-step"
                ).start()
        jobs.put(job)
        return await future

    def close(self) -> None:
        """One ``None`` per thread ends each when it next looks for work; threads started
        afterwards serve a new queue, so none of them takes a ``None`` meant for these."""
        with self._lock:
            jobs, started = self._jobs, self._started
            self._jobs, self._started, self._idle = queue.SimpleQueue(), 0, 0
        for _ in range(started):
            jobs.put(None)

    def _serve(self, jobs: queue.SimpleQueue[Job | None]) -> None:
        while (job := jobs.get()) is not None:
            report = job()
            # Idle before the result is out: the step that follows it may come at once.
            with self._lock:
                if jobs is self._jobs:
                    self._idle += 1
            report()


class Raised(Exception):
    """What a step's function raised in a thread, carried to the event loop."""

    def __init__(self, original: BaseException, trace: str) -> None:
        super().__init__(str(original))
        self.original = original
        self.trace = trace


def _failed(exc: BaseException) -> StepOutcome:
    if isinstance(exc, StepError):
        return StepOutcome(ok=False, error=exc.message, reason=exc.kind, retryable=exc.retryable)
    return StepOutcome(ok=False, error=f"{type(exc).__name__}: {exc}", reason=FailureKind.ERROR)


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():
        return  # cancelled meanwhile: the result is not wanted
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


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


def _where(module_name: str, exc: Exception) -> str:
    """Where this process looks for a step's module, when it is the module (or its
    package) that is missing, not something it imports."""
    missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
    if not missing or not f"{module_name}.".startswith(f"{missing}."):
        return ""
    return (
        f" (to find it, the process running the step needs its folder in"
        f" {STEP_PATH_VARIABLE} or as its current directory, here {os.getcwd()})"
    )


@functools.lru_cache(maxsize=1024)
def _is_async(function: Callable[..., Any]) -> bool:
    return inspect.iscoroutinefunction(function) or bool(getattr(function, "is_async", False))


def load_function(target: str) -> Callable[..., Any]:
    module_name, _, attr = target.partition(":")
    # A module imported already is taken as it is now (the import system's own lookup,
    # done for every step of a big fan-out, costs more than a small step); the function
    # is looked up each time, so a test's monkeypatch of it still applies.
    module = sys.modules.get(module_name)
    if module is not None:
        function = getattr(module, attr, None)
        if function is not None and callable(function):
            return function  # type: ignore[no-any-return]
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import can fail in any way its module's code can
        raise StepError(
            f"cannot import {module_name!r}: {type(exc).__name__}: {exc}{_where(module_name, exc)}",
            kind=FailureKind.START,
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
