"""How the command-line entry points run their event loop."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from conveyor import loop


class _Watched:
    """A result that counts how often it is turned into text."""

    def __init__(self) -> None:
        self.reprs = 0

    def __repr__(self) -> str:
        self.reprs += 1
        return "<watched>"


@pytest.mark.parametrize("run", [loop.run, loop.run_plain])
def test_a_command_s_result_is_not_turned_into_text_on_its_way_out_of_the_loop(
    run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    """Putting back the SIGINT handler made the ``signal`` module write out the main
    task, result and all, into an error it discards: seconds for the state of a
    million-item run that ``conveyor show`` returns (``run``), and a ``RunResult`` of
    ``conveyor.testing`` with every event of its run (``run_plain``)."""
    result = _Watched()

    async def command() -> _Watched:
        return result

    assert run(command()) is result
    assert result.reprs == 0
