"""Where a template would turn a value into code, and the one way to do it on purpose.

Values from outside a workflow file (parameters, webhook bodies, queue messages, step
outputs derived from them) are data. Spliced into a shell or Python source, or into
the argument of ``sh -c`` / ``python -c``, they would run: ``repo=x; id`` is a shell
command. So a template is refused in those places; the value goes in an environment
variable instead (``env: {REPO: "{{ params.repo }}"}``, then ``"$REPO"`` or
``os.environ["REPO"]``), where no interpreter parses it. Splicing on purpose is
written ``{{ raw(params.repo) }}``, and ``conveyor validate`` lists every such place.

A ``command`` (an argument vector, no shell) is safe as it is: each value is one
argument, never parsed.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass

from contracts.errors import ExpressionError
from contracts.expressions import Expression, Template
from contracts.spec import Task

Path = tuple[str | int, ...]

# Interpreters and the options after which their next argument is a program.
_CODE_OPTIONS: dict[str, frozenset[str]] = {
    **dict.fromkeys(["sh", "bash", "dash", "zsh", "ksh", "ash", "fish"], frozenset({"-c"})),
    "python": frozenset({"-c"}),
    "node": frozenset({"-e", "--eval", "-p", "--print"}),
    "perl": frozenset({"-e", "-E"}),
    "ruby": frozenset({"-e"}),
    "php": frozenset({"-r"}),
    "pwsh": frozenset({"-c", "-command", "-Command"}),
}
_PREFIXES = frozenset({"env", "exec", "busybox", "nice", "nohup", "timeout", "stdbuf"})


@dataclass(frozen=True)
class Splice:
    """A template inside code: where it is, and whether it was asked for with ``raw()``."""

    path: Path
    expression: str
    raw: bool


def splices(task: Task, at: Path) -> Iterator[Splice]:
    """Every template of ``task`` that sits where an interpreter would parse it."""
    for path, text in _code_texts(task, at):
        if "{{" not in text:
            continue
        try:
            parts = Template(text).expressions
        except ExpressionError:
            continue  # reported where templates are checked
        for expression in parts:
            yield Splice(path, expression.source, _is_raw(expression))


def unsafe_message(splice: Splice) -> str:
    name = _variable_name(splice.expression)
    return (
        f"'{{{{ {splice.expression} }}}}' would splice a value into code, where it could run;"
        f" pass it as an environment variable (env: {{{name}: '{{{{ {splice.expression} }}}}'}},"
        f' then "${name}" in a shell or os.environ["{name}"] in Python), or write'
        f" '{{{{ raw({splice.expression}) }}}}' to splice it on purpose"
    )


def _code_texts(task: Task, at: Path) -> Iterator[tuple[Path, str]]:
    if task.script is not None:
        yield (*at, "script", "source"), task.script.source
    if task.command is not None:
        yield from _program_arguments(task.command, (*at, "command"))
    if task.container is not None:
        container = task.container
        if container.script is not None:
            yield (*at, "container", "script"), container.script
        argv = [*(container.command or []), *container.args]
        split = len(container.command or [])
        for index, text in _program_positions(argv):
            where = ("command", index) if index < split else ("args", index - split)
            yield (*at, "container", *where), text


def _program_arguments(argv: list[str], at: Path) -> Iterator[tuple[Path, str]]:
    for index, text in _program_positions(argv):
        yield (*at, index), text


def _program_positions(argv: list[str]) -> Iterator[tuple[int, str]]:
    """Positions in an argument vector that an interpreter runs as a program."""
    start = 0
    while start < len(argv) and (
        _program(argv[start]) in _PREFIXES or re.match(r"^\w+=", argv[start])
    ):
        start += 1
    if start >= len(argv):
        return
    options = _CODE_OPTIONS.get(_program(argv[start]))
    if options is None:
        return
    for index in range(start + 1, len(argv) - 1):
        if argv[index] in options:
            yield index + 1, argv[index + 1]
            return


def _program(word: str) -> str:
    """``/usr/bin/python3.11`` -> ``python``."""
    name = word.rsplit("/", 1)[-1]
    return re.sub(r"[\d.]+$", "", name)


def _is_raw(expression: Expression) -> bool:
    try:
        body = ast.parse(expression.source, mode="eval").body
    except SyntaxError:
        return False
    return (
        isinstance(body, ast.Call)
        and isinstance(body.func, ast.Name)
        and body.func.id == "raw"
        and len(body.args) == 1
    )


def _variable_name(expression: str) -> str:
    last = re.findall(r"[A-Za-z_]\w*", expression)
    return (last[-1] if last else "VALUE").upper()
