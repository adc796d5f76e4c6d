"""What every command shares: consoles, exit codes, options, error printing, loading input."""

from __future__ import annotations

import importlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from contracts.errors import ConveyorError, InvalidInput, Problem
from contracts.params import params_from_yaml
from contracts.ports import TriggerRecord
from contracts.spec import Workflow
from contracts.validation import document_text, load_workflow, read_document, resolve_params
from conveyor.settings import Settings

EXIT_OK, EXIT_RUN_FAILED, EXIT_INVALID = 0, 1, 2
EXIT_FAILED = 1
"""A service process whose essential loop ended: its supervisor should start it again."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
"""What stops a long-running process (server, coordinator, worker) as asked: systemd and
Kubernetes send SIGTERM, a terminal Ctrl-C, a closed terminal or SSH session SIGHUP."""

PIPED_WIDTH = 10_000
"""Columns to draw in when the output is not a terminal: a pipe or a file is read by
lines (grep, awk, a CI log), and at a terminal's usual 80 a table would wrap its cells,
and a progress line its reason, onto lines of their own. ``COLUMNS`` still sets a
width of its own."""


def _console(*, stderr: bool) -> Console:
    console = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console.width = PIPED_WIDTH
    return console


out = _console(stderr=False)
err = _console(stderr=True)

DEFAULT_HOME = Path(".conveyor")
HomeOption = Annotated[
    Path,
    typer.Option(
        "--home",
        envvar="CONVEYOR_HOME",
        help="Directory of the local run store (embedded mode).",
        show_default=True,
    ),
]
AmqpOption = Annotated[
    str | None,
    typer.Option(
        "--amqp-url",
        envvar="CONVEYOR_AMQP_URL",
        help="RabbitMQ URL; a cluster's nodes comma-separated, tried in turn.",
    ),
]
RedisOption = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        envvar="CONVEYOR_REDIS_URL",
        help="Redis URL; redis+cluster://host:port for a Redis Cluster.",
    ),
]
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json/--no-json", help="Print the result as JSON (for scripts) instead of tables."
    ),
]
ShardsOption = Annotated[
    int | None,
    typer.Option(
        "--shards",
        envvar="CONVEYOR_SHARDS",
        min=1,
        help="Coordinator shards if no shard map is stored yet (see `conveyor shards`).",
    ),
]


SECRET_SETTINGS = frozenset({"amqp_url", "redis_url", "signing_keys"})
"""Settings whose values may hold passwords or keys: an error about one never repeats it."""


def settings_from(
    amqp_url: str | None = None,
    redis_url: str | None = None,
    shards: int | None = None,
    home: Path | None = None,
) -> Settings:
    values: dict[str, Any] = {}
    if amqp_url:
        values["amqp_url"] = amqp_url
    if redis_url:
        values["redis_url"] = redis_url
    if shards:
        values["shards"] = shards
    if home is not None:
        values["home"] = home
    try:
        return Settings(**values)
    except ValidationError as exc:
        # A setting comes from a flag or from the environment; either way, the variable
        # is what a user looks for.
        raise fail_input(
            InvalidInput(
                [
                    Problem(
                        error["msg"].removeprefix("Value error, ")
                        + (
                            ""
                            if error["loc"][0] in SECRET_SETTINGS
                            else f" (got {error['input']!r})"
                        ),
                        path="CONVEYOR_" + "_".join(map(str, error["loc"])).upper(),
                    )
                    for error in exc.errors()
                ]
            )
        ) from None


def write_json(data: Any) -> None:
    """A result for scripts: plain JSON on stdout (no colouring, at any size)."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def say(text: str) -> None:
    """One line for a person (and for grep): never wrapped, unlike tables."""
    sys.stdout.write(text + "\n")


def say_notify_wait(owed: int) -> None:
    """A run's ``notify:`` webhooks still being delivered after it ended."""
    changes = "1 change" if owed == 1 else f"{owed} changes"
    sys.stderr.write(
        f"notify: delivering the run's webhooks ({changes} left); Ctrl-C leaves them"
        " to the next `conveyor server` on this home\n"
    )


def say_notified(outcomes: list[TriggerRecord]) -> None:
    """What became of each ``notify:`` delivery of the run made here."""
    for record in outcomes:
        say(f"notify {record.decision}: {record.reason}")


def print_error(exc: ConveyorError) -> None:
    # Plain writes: error lines must not be wrapped, so they can be grepped and clicked.
    problems = (
        [p.render(exc.source) for p in exc.problems]
        if isinstance(exc, InvalidInput)
        else [exc.message or type(exc).__name__]
    )
    if len(problems) == 1:
        sys.stderr.write(f"error: {problems[0]}\n")
    else:
        sys.stderr.write(
            f"error: {len(problems)} problems\n" + "".join(f"  {problem}\n" for problem in problems)
        )


def fail_input(exc: ConveyorError) -> typer.Exit:
    print_error(exc)
    return typer.Exit(EXIT_INVALID)


def parse_param_args(values: list[str]) -> dict[str, str]:
    given: dict[str, str] = {}
    problems = []
    for raw in values:
        key, sep, value = raw.partition("=")
        if not sep or not key.strip():
            problems.append(Problem(f"expected key=value, got {raw!r}", path="-p"))
            continue
        if key.strip() in given:
            problems.append(Problem(f"parameter {key.strip()!r} is given twice", path="-p"))
            continue
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:  # bytes the terminal could not decode
            byte = ord(value[exc.start]) - 0xDC00
            problems.append(
                Problem(
                    f"parameter {key.strip()!r} is not UTF-8 text: byte 0x{byte & 0xFF:02x}"
                    f" at offset {exc.start}",
                    path="-p",
                )
            )
            continue
        given[key.strip()] = value
    if problems:
        raise InvalidInput(problems, source="command line")
    return given


WorkflowTarget = Annotated[
    Path,
    typer.Argument(
        help="Workflow YAML file, Python file (file.py, or file.py:NAME) or module:NAME."
    ),
]


def load_target(target: Path) -> Workflow:
    """A workflow from a YAML file, a Python file (``flows/etl.py``, or
    ``flows/etl.py:name`` when it holds more than one), or ``module:name``."""
    text = str(target)
    path_text, colon, attribute = text.rpartition(":") if ":" in text else (text, "", "")
    if path_text.endswith(".py") and not target.exists():
        return _from_python_file(Path(path_text), attribute, text)
    if text.endswith(".py"):
        return _from_python_file(target, "", text)
    if target.exists() or not colon or text.endswith((".yaml", ".yml")):
        return load_workflow(target, max_bytes=Settings().max_workflow_bytes)
    if path_text.endswith((".yaml", ".yml")):
        said = f"a YAML file holds one workflow: name the file alone ({path_text})"
        raise InvalidInput([Problem(said)], source=text)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return _workflow_in(_imported(path_text, text), attribute, text)


def _from_python_file(path: Path, attribute: str, text: str) -> Workflow:
    """The workflow of a Python file, imported as a module named after it, from its folder
    (so the step functions it defines import by the same name in a worker).

    The folder goes after the engine's own paths (``conveyor.preflight``): a file named
    like a module imported from before them is refused, not taken for that module.
    """
    if not path.is_file():
        raise InvalidInput([Problem("no such file")], source=text)
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.append(folder)
    module = _imported(path.stem, text)
    where = Path(getattr(module, "__file__", None) or "")
    if where.resolve() != path.resolve():
        raise InvalidInput(
            [
                Problem(
                    f"the module name {path.stem!r} is taken by {where or 'a built-in module'}:"
                    " rename the file"
                )
            ],
            source=text,
        )
    if attribute:
        return _workflow_in(module, attribute, text)
    workflows = _workflows_of(module)
    if len(workflows) == 1:
        return workflows[0][1]
    if not workflows:
        said = "defines no workflow (decorate one with @conveyor.workflow)"
    else:
        names = ", ".join(name for name, _ in workflows)
        said = f"defines {len(workflows)} workflows ({names}): name one as {text}:NAME"
    raise InvalidInput([Problem(said)], source=text)


def _imported(module_name: str, text: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # an import runs arbitrary code; report whatever it raised
        raise InvalidInput(
            [Problem(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}")], source=text
        ) from exc


def _workflows_of(module: Any) -> list[tuple[str, Workflow]]:
    """The workflows a module defines (not those it imports from elsewhere), by name."""
    found: dict[int, tuple[str, Workflow]] = {}
    for name, value in vars(module).items():
        spec = getattr(value, "spec", value)
        defined_here = getattr(value, "__module__", module.__name__) == module.__name__
        if isinstance(spec, Workflow) and defined_here:
            found.setdefault(id(spec), (name, spec))
    return sorted(found.values(), key=lambda pair: pair[0])


def _workflow_in(module: Any, attribute: str, text: str) -> Workflow:
    found = getattr(module, attribute, None)
    spec = getattr(found, "spec", found)
    if isinstance(spec, Workflow):
        return spec
    if found is None:
        workflows = ", ".join(name for name, _ in _workflows_of(module)) or "none"
        said = f"{module.__name__} has no {attribute!r} (its workflows: {workflows})"
    else:
        said = f"{text} is not a workflow (decorate it with @conveyor.workflow)"
    raise InvalidInput([Problem(said)], source=text)


ParamOption = Annotated[
    list[str] | None,
    typer.Option(
        "--param", "-p", help="Parameter value, key=value (repeatable; wins over --params-file)."
    ),
]
ParamsFileOption = Annotated[
    Path | None,
    typer.Option(
        "--params-file",
        "-f",
        help="Parameter values from a YAML or JSON file (a mapping of names to values;"
        " - reads standard input).",
    ),
]


def load_for_run(
    file: Path, params: list[str], params_file: Path | None = None
) -> tuple[Workflow, dict[str, Any]]:
    """The workflow and its parameters: defaults, then the file's values, then ``-p``'s."""
    workflow = load_target(file)
    given: dict[str, Any] = {}
    if params_file is not None:
        max_bytes = Settings().max_workflow_bytes
        if str(params_file) == "-":  # piped in: jq ... | conveyor submit flow.yaml -f -
            raw = sys.stdin.buffer.read(max_bytes + 1)
            source = "stdin"
            text = document_text(raw, "parameters", max_bytes=max_bytes, source=source)
        else:
            source = str(params_file)
            text = read_document(params_file, "parameters", max_bytes=max_bytes)
        given = params_from_yaml(workflow, text, source)
    texts = parse_param_args(params)
    return workflow, resolve_params(workflow, given | texts, from_text=texts.keys(), source="-p")
