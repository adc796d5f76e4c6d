"""The house rules of the layout: who may import what, and a core without I/O."""

from __future__ import annotations

import ast
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
        ("workers", {"engine", "conveyor"}),
        ("engine", {"conveyor"}),
    ],
)
def test_import_direction(package: str, forbidden: set[str]) -> None:
    offenders = {
        file: sorted(names & forbidden)
        for file, names in imports_of(package).items()
        if names & forbidden
    }
    assert offenders == {}
