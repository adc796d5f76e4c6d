"""The house rules of the layout: who may import what, and a core without I/O."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports_of(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for file in (ROOT / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(file.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        (
            "contracts",
            {
                "engine",
                "workers",
                "conveyor",
                "asyncio",
                "redis",
                "aio_pika",
                "sqlite3",
                "subprocess",
            },
        ),
        (
            "engine/state",
            {
                "workers",
                "conveyor",
                "asyncio",
                "time",
                "redis",
                "aio_pika",
                "sqlite3",
                "random",
                "os",
            },
        ),
        # The deciding side and the doing side stand side by side: only the
        # composition wing (conveyor/) wires them together.
        ("workers", {"engine", "conveyor"}),
        ("engine", {"workers", "conveyor"}),
    ],
)
def test_import_direction(package: str, forbidden: set[str]) -> None:
    offenders = {
        file: sorted(names & forbidden)
        for file, names in imports_of(package).items()
        if names & forbidden
    }
    assert offenders == {}


PACKAGES = ("contracts", "engine", "workers", "conveyor")


def _module_name(file: Path) -> str:
    parts = list(file.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of ours it imports (anywhere in it, lazily or not)."""
    files = {_module_name(f): f for p in PACKAGES for f in (ROOT / p).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, file in files.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names if alias.name in files)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    if submodule in files:
                        edges.add(submodule)
                    elif node.module in files:
                        edges.add(node.module)
        edges.discard(module)
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in graph:
        if module not in index:
            visit(module)
    return found


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_step_timeouts_are_enforced_in_one_place() -> None:
    """Only the executor chain reads a step's timeout; no executor keeps its own clock."""
    readers = sorted(
        str(file.relative_to(ROOT))
        for file in (ROOT / "workers").rglob("*.py")
        if any(
            isinstance(node, ast.Attribute)
            and node.attr == "timeout"
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "step"
            for node in ast.walk(ast.parse(file.read_text()))
        )
    )
    assert readers == ["workers/executors/chain.py"]


def test_no_module_is_too_big_to_hold() -> None:
    sizes = {
        str(file.relative_to(ROOT)): len(file.read_text().splitlines())
        for package in PACKAGES
        for file in (ROOT / package).rglob("*.py")
    }
    assert {name: size for name, size in sizes.items() if size > 450} == {}


def loaded_by(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    printed = subprocess.run(
        [sys.executable, "-c", f"{code}; import sys; print(*sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return set(printed.split())


CLIENTS = {"redis", "aio_pika", "httpx", "opentelemetry.sdk"}
"""Clients and SDKs that take 0.05 to 0.3 s each to import; each is imported where the
backend that needs it is chosen."""


@pytest.mark.parametrize(
    ("code", "not_loaded", "loaded_too"),
    [
        # Embedded mode (the engine, conveyor.testing) never uses Redis; the broker's and
        # the HTTP client wait for a step that calls a service.
        ("from conveyor import EmbeddedEngine", CLIENTS, "conveyor.embedded"),
        # The package's names are imported as they are used.
        ("import conveyor", CLIENTS | {"conveyor.embedded"}, "conveyor"),
        ("from conveyor import task, workflow", CLIENTS, "conveyor.workflowfn"),
        # A command that reads or steers runs in a local home, or asks for help, uses
        # none of them (`conveyor run` loads the engine as it starts one).
        ("import conveyor.cli.app", CLIENTS | {"conveyor.embedded"}, "conveyor.cli.server"),
        # A local run's notify: webhooks, whose client waits for a workflow that has some.
        ("import conveyor.local_notify", CLIENTS, "engine.triggers.notify"),
    ],
)
def test_clients_are_imported_once_chosen(code: str, not_loaded: set[str], loaded_too: str) -> None:
    loaded = loaded_by(code)
    assert not_loaded & loaded == set()
    assert loaded_too in loaded


def test_every_public_name_of_the_package_is_there() -> None:
    import conveyor

    # The names it exports are the names it knows where to find, and each is found.
    assert set(conveyor.__all__) == {*conveyor._HOME_OF, "triggers"}
    for name in conveyor.__all__:
        assert getattr(conveyor, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Enginee'"):
        conveyor.Enginee  # noqa: B018


DESIGN_CARD_ROOT = {
    "pyproject.toml",
    "README.md",
    "docker-compose.yml",
    "Dockerfile",
    "engine",
    "workers",
    "contracts",
    "conveyor",
    "deploy",
    "tests",
    "docs",
    "examples",
    "benchmarks",
}
"""The root's layout: the design card's parts, and the docs, examples and benchmarks."""


def test_the_root_holds_the_layout_and_nothing_stray() -> None:
    git = shutil.which("git")
    tracked = (
        subprocess.run(
            [git or "git", "ls-files"], capture_output=True, text=True, cwd=ROOT, check=False
        )
        if git
        else None
    )
    if tracked is None or tracked.returncode != 0:
        pytest.skip("not a git checkout")
    at_root = {line.split("/")[0] for line in tracked.stdout.splitlines()}
    assert {name for name in at_root if not name.startswith(".")} == DESIGN_CARD_ROOT
