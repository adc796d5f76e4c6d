"""The embedded server takes up a run of its home only once it has found nothing
driving it at two checks in a row, and never one a process took up meanwhile."""

from __future__ import annotations

from typing import cast

from contracts.errors import Conflict, Problem
from contracts.ports import RunSummary
from contracts.vocabulary import CHILD_TRIGGER
from conveyor.server.served import ServedClient
from conveyor.server.takeup import take_up_left_unfinished, take_up_stalled


class Home:
    """A served home's runs as the take-up sees them: unfinished, and driven or not."""

    def __init__(self, **driven: bool) -> None:
        self.driven = driven
        self.parents: dict[str, str] = {}
        """The parent run of each child run."""
        self.resumed: list[tuple[str, bool]] = []
        self.taken_meanwhile: set[str] = set()
        self.store = self

    async def running(self) -> list[str]:
        return list(self.driven)

    async def summary(self, run_id: str) -> RunSummary:
        parent = self.parents.get(run_id)
        trigger = "cli" if parent is None else f"{CHILD_TRIGGER}{parent}"
        return RunSummary(
            run_id=run_id, workflow="w", state="running", submitted_at=0.0, trigger=trigger
        )

    def stalled(self, run_id: str) -> bool:
        return not self.driven[run_id]

    async def resume(self, run_id: str, *, steps_lost: bool = False) -> str:
        if run_id in self.taken_meanwhile:
            raise Conflict([Problem(f"run {run_id} is being run by process 42")])
        self.resumed.append((run_id, steps_lost))
        self.driven[run_id] = True
        return run_id


def served(home: Home) -> ServedClient:
    return cast(ServedClient, home)


async def test_a_run_found_undriven_twice_in_a_row_is_taken_up_with_its_steps_lost() -> None:
    home = Home(driven_run=True, orphan=False)
    seen = await take_up_stalled(served(home), set())
    assert (seen, home.resumed) == ({"orphan"}, [])  # once: it may be starting
    seen = await take_up_stalled(served(home), seen)
    assert home.resumed == [("orphan", True)]
    assert seen == set()
    assert await take_up_stalled(served(home), seen) == set()  # driven now
    assert home.resumed == [("orphan", True)]


async def test_a_run_driven_again_between_two_checks_is_not_taken_up() -> None:
    home = Home(run=False)
    seen = await take_up_stalled(served(home), set())
    home.driven["run"] = True  # its process had only just started it
    assert await take_up_stalled(served(home), seen) == set()
    assert home.resumed == []


async def test_a_run_a_process_takes_up_first_is_left_to_it() -> None:
    home = Home(first=False, second=False)
    seen = await take_up_stalled(served(home), set())
    home.taken_meanwhile.add("first")  # conveyor resume, between the look and the resume
    await take_up_stalled(served(home), seen)
    assert home.resumed == [("second", True)]


async def test_at_the_start_every_undriven_run_is_taken_up_at_once() -> None:
    home = Home(held=True, left=False, also_left=False)
    await take_up_left_unfinished(served(home))
    assert sorted(home.resumed) == [("also_left", True), ("left", True)]


async def test_a_child_run_goes_with_its_parent_and_alone_only_if_its_parent_is_not_taken_up() -> (
    None
):
    home = Home(parent=False, child=False, orphaned_child=False)
    home.parents.update(child="parent", orphaned_child="gone")
    await take_up_left_unfinished(served(home))
    # Resumed, the parent takes its child up itself; a second resume would resend its steps.
    assert sorted(home.resumed) == [("orphaned_child", True), ("parent", True)]
