"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.receiver import receiver  # noqa: F401  (a fixture of these tests)
from tests.e2e.served import Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    made: list[Server] = []

    def make(grace: float, wake: float | None = None, debug: bool = False) -> Server:
        made.append(Server(tmp_path, grace=grace, wake=wake, debug=debug))
        return made[-1]

    yield make
    for each in made:
        each.kill()
