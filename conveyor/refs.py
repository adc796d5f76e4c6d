"""References to values known only when a run runs: a task's output or a workflow
parameter, while a Python workflow is being built. Formatting one gives its template;
arithmetic on one gives an expression; looping over one is refused with the way to fan
out instead."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _no_builder(before: list[Any], after: Any) -> None:
    raise TypeError("a >> b orders tasks inside a @workflow function only")


ORDERING: list[Callable[[list[Any], Any], None]] = [_no_builder]
"""How ``a >> b`` records order: set by the workflow builder (``conveyor.authoring``),
which knows the tasks; refs do not."""


def task_expression(name: str) -> str:
    """How expressions name a task: ``tasks.a``, or ``tasks['my-task']`` when needed."""
    return f"tasks.{name}" if name.isidentifier() else f"tasks[{name!r}]"


@dataclass(frozen=True)
class Ref(Generic[T]):
    """The output of a task (or a workflow parameter) while a workflow is being built.

    Formatting it gives its template (``f"echo {ref}"``), so refs can be used inside
    script sources and commands too.
    """

    expression: str
    type: Any
    producer: str | None
    """The task that produces it; None for a workflow parameter."""

    def __format__(self, spec: str) -> str:
        return "{{ " + self.expression + " }}"

    def __str__(self) -> str:
        return self.__format__("")

    def __getitem__(self, key: str | int) -> Ref[Any]:
        return Ref(f"{self.expression}[{key!r}]", Any, self.producer)

    def output(self, name: str) -> Ref[Any]:
        """A named output parameter of the producing task."""
        if self.producer is None:
            raise TypeError("parameters have no named outputs")
        return Ref(f"{task_expression(self.producer)}.outputs.{name}", Any, self.producer)

    # Arithmetic on a value known only when the run runs becomes an expression.
    def _op(self, symbol: str, other: Any, reflected: bool = False) -> Ref[Any]:
        if isinstance(other, Ref):
            right = other.expression
            producer = self.producer or other.producer
        elif isinstance(other, int | float) and not isinstance(other, bool):
            right, producer = repr(other), self.producer
        else:
            return NotImplemented  # type: ignore[no-any-return]
        left = self.expression
        text = f"({right} {symbol} {left})" if reflected else f"({left} {symbol} {right})"
        return Ref(text, Any, producer)

    def __add__(self, other: Any) -> Ref[Any]:
        return self._op("+", other)

    def __radd__(self, other: Any) -> Ref[Any]:
        return self._op("+", other, reflected=True)

    def __sub__(self, other: Any) -> Ref[Any]:
        return self._op("-", other)

    def __rsub__(self, other: Any) -> Ref[Any]:
        return self._op("-", other, reflected=True)

    def __mul__(self, other: Any) -> Ref[Any]:
        return self._op("*", other)

    def __rmul__(self, other: Any) -> Ref[Any]:
        return self._op("*", other, reflected=True)

    def __floordiv__(self, other: Any) -> Ref[Any]:
        return self._op("//", other)

    def __index__(self) -> int:
        readable = self.expression.replace("params.", "")
        if readable.startswith("(") and readable.endswith(")"):
            readable = readable[1:-1]
        raise TypeError(
            f"{readable} is known only when the run runs, so Python cannot loop or count"
            f" with it while the workflow is built; fan out instead, e.g."
            f" task.map(span(1, {readable})) (from conveyor import span)"
        )

    def __iter__(self) -> Any:
        raise TypeError(
            f"{self.expression} is known only when the run runs: map over it"
            " (task.map(ref)) instead of looping in Python"
        )

    def __rshift__(self, other: Ref[Any]) -> Ref[Any]:
        """``a >> b``: b runs after a (order without data); returns b, so chains read
        ``a >> b >> c``."""
        ORDERING[0]([self], other)
        return other

    def __rrshift__(self, others: list[Ref[Any]]) -> Ref[Any]:
        """``[a, b] >> c``: c runs after both."""
        ORDERING[0](list(others), self)
        return self

    def artifact(self, name: str) -> Ref[Any]:
        if self.producer is None:
            raise TypeError("parameters have no artifacts")
        return Ref(f"{task_expression(self.producer)}.artifacts.{name}", Any, self.producer)


def span(start: Any, stop: Any = None) -> Ref[list[int]]:
    """``range`` of values known only when the run runs (parameters, outputs, arithmetic
    on them), for ``task.map``: ``fetch.map(span(1, pages + 1))``."""
    if stop is None:
        start, stop = 0, start

    def text(value: Any) -> str:
        return value.expression if isinstance(value, Ref) else repr(int(value))

    producers = [v.producer for v in (start, stop) if isinstance(v, Ref) and v.producer]
    producer = producers[0] if producers else None
    return Ref(f"range({text(start)}, {text(stop)})", list[int], producer)
