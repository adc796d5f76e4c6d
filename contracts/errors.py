"""One error root for Conveyor, with retry semantics carried on the error itself."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

from contracts.vocabulary import FailureKind


class ConveyorError(Exception):
    """Root of every error Conveyor raises on purpose.

    ``retryable`` tells callers whether trying the same thing again may help, so no
    caller ever has to parse a message to decide.
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a piece of input, located as precisely as we can."""

    message: str
    path: str = ""
    line: int | None = None

    def render(self, source: str | None = None) -> str:
        where = source or ""
        if self.line is not None:
            where = f"{where}:{self.line}" if where else f"line {self.line}"
        location = ", ".join(part for part in (where, self.path) if part)
        return f"{location}: {self.message}" if location else self.message


class InvalidInput(ConveyorError):
    """Input a user gave (a workflow, a parameter, an expression) is wrong.

    Never retryable: the same input fails the same way.
    """

    def __init__(self, problems: list[Problem], *, source: str | None = None) -> None:
        # One mistake written twice in a field (a template used twice in a script) is
        # found twice; it is said once.
        self.problems = list(dict.fromkeys(problems))
        self.source = source
        super().__init__("\n".join(p.render(source) for p in self.problems), retryable=False)


class Conflict(InvalidInput):
    """The input is well formed, but the run is not where it could be taken: another
    process drives it, or it is running here already."""


class ExpressionError(ConveyorError):
    """An expression could not be parsed, or failed while evaluating."""


class ReplayDivergence(ConveyorError):
    """A recorded event log disagrees with what the engine decides for the same history."""


class StepError(ConveyorError):
    """A step failed; ``kind`` says how, for the retry policy to select."""

    retryable = True

    def __init__(
        self, message: str, *, kind: FailureKind = FailureKind.ERROR, retryable: bool | None = None
    ) -> None:
        super().__init__(message, retryable=retryable)
        self.kind = kind


class NonRetryableError(StepError):
    """Raise from a Python step to fail the task without further retries."""

    def __init__(self, message: str) -> None:
        super().__init__(message, kind=FailureKind.ERROR, retryable=False)


class NotFound(ConveyorError):
    """A run, task or log asked for does not exist."""


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` naming the known word closest to a misspelt one, or
    nothing when none is close."""
    close = difflib.get_close_matches(word, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
