"""Script, command and container steps in a Python workflow (tasks that are not functions).

Each records a node in the workflow being built; refs formatted into its text become
templates and dependencies, as with task calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.authoring import Ref, apply_options, current_builder, task_expression


def _step(kind: str, name: str, body: dict[str, Any], options: dict[str, Any]) -> Ref[Any]:
    builder = current_builder(kind)
    node: dict[str, Any] = {"name": name, **body}
    apply_options(node, dict(options), None)
    recorded = builder.add(node, [])
    return Ref(f"{task_expression(recorded)}.outputs.result", Any, recorded)


def script(name: str, source: str, *, interpreter: str = "sh", **options: Any) -> Ref[Any]:
    """A script step. Values reach its source as environment variables:
    ``script("show", 'echo "$N"', env={"N": numbers(5)})`` (refs in ``env`` become
    templates and dependencies). A ref formatted into the source itself is refused when
    the workflow is checked: the value would become code."""
    return _step(
        "script", name, {"script": {"source": source, "interpreter": interpreter}}, options
    )


def command(name: str, argv: list[Any], **options: Any) -> Ref[Any]:
    return _step("command", name, {"command": [str(a) for a in argv]}, options)


def container(
    name: str,
    image: str,
    *,
    command: list[str] | None = None,
    args: Sequence[Any] = (),
    script: str | None = None,
    **options: Any,
) -> Ref[Any]:
    body: dict[str, Any] = {"image": image}
    if command is not None:
        body["command"] = command
    if args:
        body["args"] = [str(a) for a in args]
    if script is not None:
        body["script"] = script
    for key in ("user", "network", "cpus", "memory", "pull"):
        if key in options:
            body[key] = options.pop(key)
    return _step("container", name, {"container": body}, options)
