"""Branching, ported from Airflow's ``example_branch_operator_decorator.py``.

A branch task picks one of four paths at random; the others are skipped, and the
join runs once any path succeeded and none failed. The second stage does the same
in a separate Python process (Airflow's ``@task.branch_external_python``: here, a task
with a timeout runs in a child process the worker can kill).

    conveyor run branching:branch_python_operator_decorator

What changed from the Airflow version: ``@task.branch`` is ``@task(branch=True)``;
``EmptyOperator`` is a task that does nothing; ``task_id`` is ``name``; the daily
schedule is a trigger served by ``conveyor server``.
"""

from __future__ import annotations

import random

from conveyor import task, triggers, workflow

OPTIONS = ["a", "b", "c", "d"]


@task
def empty() -> None:
    """Airflow's EmptyOperator: a point in the graph that does no work."""


@task(branch=True)
def branching(choices: list[str]) -> str:
    return f"branch_{random.choice(choices)}"


@task
def some_task() -> None:
    print("doing something in Python")


@task(branch=True, timeout="5m")
def branching_ext_python(choices: list[str]) -> str:
    return f"ext_py_{random.choice(choices)}"


@task(timeout="5m")
def some_ext_py_task() -> None:
    print("doing something in external Python")


@workflow(triggers=[triggers.schedule("daily", cron="0 0 * * *", catchup="skip")])
def branch_python_operator_decorator() -> None:
    """Pick a path at random, twice: in the worker, then in a child process."""
    run_this_first = empty.with_options(name="run_this_first")()
    random_choice_instance = branching(OPTIONS)
    run_this_first >> random_choice_instance
    join = empty.with_options(name="join", trigger_rule="none_failed_min_one_success")
    follows = []
    for option in OPTIONS:
        t = some_task.with_options(name=f"branch_{option}")()
        follow = empty.with_options(name=f"follow_{option}")()
        random_choice_instance >> t >> follow
        follows.append(follow)
    joined = follows >> join()

    random_choice_ext_py = branching_ext_python(OPTIONS)
    joined >> random_choice_ext_py
    join_ext_py = empty.with_options(name="join_ext_py", trigger_rule="none_failed_min_one_success")
    ext_tasks = []
    for option in OPTIONS:
        t = some_ext_py_task.with_options(name=f"ext_py_{option}")()
        random_choice_ext_py >> t
        ext_tasks.append(t)
    ext_tasks >> join_ext_py()
