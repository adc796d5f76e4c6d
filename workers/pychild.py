"""A child process that runs synchronous Python steps for a worker, one at a time.

Started by ``workers.executors.pyprocess`` (and importing nothing of Conveyor's but
the pure ``contracts.values``, so it starts fast); reused for step after step, and killed (with
everything it started) when a step's time is up or its run is cancelled: a thread
cannot be stopped, a process can.

Requests arrive on stdin and answers leave on the file descriptor named in argv, both
as JSON lines; what a step prints goes to this process's stdout and stderr, which the
worker records as the step's log lines.
"""

from __future__ import annotations

import base64
import importlib
import os
import sys
from typing import Any

import msgspec

from contracts.values import EncodedValue, StoredValue
from workers.tracebacks import step_traceback

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def _answer(value: Any) -> dict[str, Any]:
    if isinstance(value, EncodedValue):
        encoded = {"format": value.format, "data": base64.b64encode(value.data).decode()}
        return {"ok": True, "encoded": encoded}
    dump = getattr(value, "model_dump", None)
    return {"ok": True, "result": dump(mode="json") if callable(dump) else value}


def _unmarked(value: Any, mark: str, stored: list[dict[str, Any]]) -> Any:
    """The arguments with the worker's stored values put back in their places."""
    if isinstance(value, dict):
        if len(value) == 1 and mark in value:
            entry = stored[value[mark]]
            return StoredValue(base64.b64decode(entry["data"]), entry["format"])
        return {k: _unmarked(v, mark, stored) for k, v in value.items()}
    if isinstance(value, list):
        return [_unmarked(v, mark, stored) for v in value]
    return value


def _call(request: dict[str, Any]) -> dict[str, Any]:
    for path in reversed(request.get("path", [])):
        if path not in sys.path:
            sys.path.insert(0, path)
    module_name, _, attribute = request["target"].partition(":")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
        args = request["args"]
        if request.get("stored"):
            args = _unmarked(args, request["stored_mark"], request["stored"])
        return _answer(function(**args))
    except BaseException as exc:  # a step's SystemExit fails the step, not the child
        answer: dict[str, Any] = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": step_traceback(exc),
        }
        # A StepError says how it failed and whether to retry (contracts.errors).
        kind = getattr(exc, "kind", None)
        if kind is not None and hasattr(exc, "message"):
            retryable = getattr(exc, "retryable", True)
            answer.update(
                error=getattr(exc, "message", str(exc)), kind=str(kind), retryable=retryable
            )
        return answer


def main() -> None:
    # argv: the file descriptor for answers, and the line printed to stdout and stderr
    # after each step (its output ends there).
    answers = os.fdopen(int(sys.argv[1]), "wb", buffering=0)
    end_of_step = sys.argv[2]
    for line in sys.stdin.buffer:
        answer = _call(_decode(line))
        try:
            data = _encode(answer)
        except TypeError as exc:  # a result the wire cannot carry
            data = _encode({"ok": False, "error": f"TypeError: {exc}"})
        for stream in (sys.stdout, sys.stderr):
            stream.write(f"\n{end_of_step}\n")
            stream.flush()
        answers.write(data + b"\n")


if __name__ == "__main__":
    main()
