"""Script, command, container, http and amqp steps in a Python workflow (tasks that are
not functions).

Each records a node in the workflow being built; refs formatted into its text become
templates and dependencies, as with task calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.authoring import current_builder, templated
from conveyor.refs import Ref, task_expression
from conveyor.task_options import apply_options


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


def _templated(value: Any) -> Any:
    """Refs anywhere in a request become templates (their tasks become dependencies when
    the node is added: the builder reads them from its templates)."""
    return templated(value, [])


def http(
    name: str,
    url: Any,
    *,
    method: str = "GET",
    headers: dict[str, Any] | None = None,
    body: Any = None,
    expect: list[int] | None = None,
    **options: Any,
) -> Ref[Any]:
    """An HTTP request made by the worker; its result is the parsed response."""
    request: dict[str, Any] = {"url": _templated(url), "method": method}
    if headers:
        request["headers"] = _templated(headers)
    if body is not None:
        request["body"] = _templated(body)
    if expect is not None:
        request["expect"] = expect
    return _step("http", name, {"http": request}, options)


def amqp(
    name: str, routing_key: str, *, body: Any = None, reply: bool = True, **options: Any
) -> Ref[Any]:
    """A message published to RabbitMQ; with ``reply`` its correlated reply is the result."""
    request: dict[str, Any] = {"routing_key": routing_key, "reply": reply}
    if body is not None:
        request["body"] = _templated(body)
    for key in ("exchange", "url_env", "wait", "headers"):
        if key in options:
            request[key] = options.pop(key)
    return _step("amqp", name, {"amqp": request}, options)
