"""Checks of a workflow against this machine, before anything starts.

The workflow language is checked in ``contracts``; what depends on what is installed
and importable here (an artifact URL's filesystem package, a Python step's module) is
checked here, where the composition root knows which machine will run the steps.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from contracts.errors import InvalidInput, Problem
from contracts.spec import STEP_PATH_VARIABLE, Workflow
from workers.artifacts import backend_problem


def step_import_paths(workflow_file: Path | None, extra: str | None = None) -> list[str]:
    """Where Python steps are imported from, first match wins: the workflow's own folder,
    then ``CONVEYOR_PYTHON_PATH`` (or ``extra``), then the current directory (all after
    the installed packages)."""
    paths: list[str] = []
    if workflow_file is not None:
        paths.append(str(workflow_file.resolve().parent))
    listed = extra if extra is not None else os.environ.get(STEP_PATH_VARIABLE, "")
    paths += [str(Path(p).resolve()) for p in listed.split(os.pathsep) if p]
    paths.append(os.getcwd())
    return list(dict.fromkeys(paths))


def use_import_paths(paths: Iterable[str]) -> None:
    """Let Python steps import from ``paths``, in their order, *after* the engine's own.

    The step folders come last, so a file beside a workflow (a ``uvloop.py``, a
    ``yaml.py``) can never stand in for a module the engine imports; the current
    directory, which ``python -m`` puts first, moves back with them.
    """
    ordered = list(paths)
    engine = [p for p in sys.path if p not in ordered and p not in ("", os.getcwd())]
    sys.path[:] = engine + ordered


def problems(workflow: Workflow, *, modules: bool = True) -> list[Problem]:
    """What would stop this workflow's steps here: unserved artifact URLs, missing modules."""
    found: list[Problem] = []
    for index, task in enumerate(workflow.tasks):
        at = f"tasks[{index}]"
        for path, source in task.artifacts.in_.items():
            if isinstance(source, str) and "{{" not in source and "://" in source:
                reason = backend_problem(source)
                if reason:
                    found.append(Problem(reason, path=f"{at}.artifacts.in.{path}"))
        if modules and task.python is not None:
            module = task.python.partition(":")[0]
            if not _importable(module):
                found.append(
                    Problem(
                        f"cannot import {module!r} for task {task.name!r}: no such module on the"
                        f" step import path (the workflow's folder, {STEP_PATH_VARIABLE}, the"
                        " current directory)",
                        path=f"{at}.python",
                    )
                )
    return found


def check(workflow: Workflow, source: str, *, modules: bool = True) -> None:
    found = problems(workflow, modules=modules)
    if found:
        raise InvalidInput(found, source=source)


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
