"""A server's folder of workflow files: a parent workflow holds the child files its
workflow steps name, so a change to a child file registers the parent again."""

from __future__ import annotations

import os
from pathlib import Path

from conveyor.server.folder import WorkflowFolder
from engine.triggers.registry import Registry
from engine.triggers.stores.memory import MemoryTriggerStore

CHILD = "name: child\ntasks:\n  - name: a\n    command: [echo, {said}]\n"
PARENT = "name: parent\ntasks:\n  - name: step\n    workflow: {file: child.yaml}\n"


def said_by_child(workflow: object) -> list[str]:
    step = workflow.task("step").workflow  # type: ignore[attr-defined]
    return list(step.spec.task("a").command)


async def test_a_changed_child_file_registers_its_parent_again(tmp_path: Path) -> None:
    (tmp_path / "child.yaml").write_text(CHILD.format(said="one"))
    (tmp_path / "parent.yaml").write_text(PARENT)
    registry = Registry(MemoryTriggerStore())
    folder = WorkflowFolder(tmp_path, registry)
    assert await folder.load() == 2
    version, parent = await registry.get("parent")
    assert (version, said_by_child(parent)) == (1, ["echo", "one"])
    assert await folder.load() == 0  # nothing changed: nothing read

    child = tmp_path / "child.yaml"
    child.write_text(CHILD.format(said="two"))
    os.utime(child, (1, 1))  # a stamp of its own, whatever the clock's grain
    await folder.load()
    version, parent = await registry.get("parent")
    assert (version, said_by_child(parent)) == (2, ["echo", "two"])


async def test_a_child_file_outside_the_folder_is_watched_too(tmp_path: Path) -> None:
    served, shared = tmp_path / "flows", tmp_path / "shared" / "deeper"
    served.mkdir()
    shared.mkdir(parents=True)
    child = shared / "child.yaml"
    (served / "parent.yaml").write_text(PARENT.replace("child.yaml", "../shared/deeper/child.yaml"))
    registry = Registry(MemoryTriggerStore())
    folder = WorkflowFolder(served, registry)
    # Not there yet: the parent is refused, and the child's arrival is a change.
    assert await folder.load() == 0 and "child.yaml" in folder.problems[served / "parent.yaml"]
    assert await folder.load() == 0
    child.write_text(CHILD.format(said="one"))
    assert await folder.load() == 1
    version, parent = await registry.get("parent")
    assert (version, said_by_child(parent)) == (1, ["echo", "one"])
    assert await folder.load() == 0  # nothing changed: nothing read

    child.write_text(CHILD.format(said="two"))
    os.utime(child, (1, 1))  # a stamp of its own, whatever the clock's grain
    assert await folder.load() == 1
    version, parent = await registry.get("parent")
    assert (version, said_by_child(parent)) == (2, ["echo", "two"])
    assert await folder.load() == 0
