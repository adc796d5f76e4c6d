"""What an executor is, and what it reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from contracts.errors import StepError
from contracts.events import ArtifactRef
from contracts.messages import TaskReady
from contracts.vocabulary import FailureKind

LogEmitter = Callable[[str, str], None]
"""``emit(stream, text)``: record one line of a step's output."""


@dataclass
class StepOutcome:
    ok: bool
    result: Any = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    reason: FailureKind = FailureKind.ERROR
    retryable: bool = True
    exit_code: int | None = None
    artifacts: dict[str, ArtifactRef] = field(default_factory=dict)


class Executor(Protocol):
    """Runs one kind of step. Started before the first step, stopped after the last."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def run(self, task: TaskReady, emit: LogEmitter, workdir: Path) -> StepOutcome:
        """Run the step to the end in ``workdir``; on cancellation, stop what it started first.

        Time limits are not the executor's business: the chain cancels it (see
        ``workers.executors.chain.enforce_timeout``).
        """
        ...


def parse_result(text: str) -> Any:
    """A step's printed result: JSON when it is JSON, else the text without its last newline."""
    stripped = text.strip()
    if not stripped:
        return None
    try:
        return json.loads(stripped)
    except ValueError:
        return text.rstrip("\n")


def succeeded(stdout_parts: list[bytes], workdir: Path, outputs: dict[str, str]) -> StepOutcome:
    """The outcome of a process that exited 0: its stdout as result, its output files read."""
    data = b"".join(stdout_parts)
    values, problem = read_outputs(workdir, outputs)
    if problem:
        return StepOutcome(ok=False, error=problem, exit_code=0)
    result = parse_result(data.decode("utf-8", errors="replace"))
    return StepOutcome(ok=True, result=result, outputs=values, exit_code=0)


def confined(workdir: Path, relative: str, what: str) -> Path:
    """``workdir / relative`` with every symlink resolved, refused if it lands outside.

    A step controls its directory: a link it made to ``/etc/shadow`` or to
    ``/proc/self/environ`` must not make the worker read that file for it.
    """
    root = workdir.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise StepError(
            f"{what} {relative!r} leads outside the step's working directory",
            kind=FailureKind.ERROR,
            retryable=False,
        )
    return target


def read_outputs(workdir: Path, outputs: dict[str, str]) -> tuple[dict[str, Any], str | None]:
    """Named output parameters from the files a step wrote; an error for a missing one."""
    values: dict[str, Any] = {}
    for name, relative in outputs.items():
        try:
            path = confined(workdir, relative, f"output {name!r}:")
            data = path.read_bytes()
        except FileNotFoundError:
            return values, f"output {name!r}: the step did not write {relative!r}"
        except OSError as exc:
            return values, f"output {name!r}: cannot read {relative!r}: {exc.strerror}"
        except StepError as exc:
            return values, exc.message
        values[name] = parse_result(data.decode("utf-8", errors="replace"))
    return values, None
