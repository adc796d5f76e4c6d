"""What a person watching a run sees: live progress and the summary."""

from __future__ import annotations

import io

from rich.console import Console

from contracts.events import (
    Event,
    RunSubmitted,
    TaskDispatched,
    TaskExpanded,
    TaskFailed,
    TaskStarted,
)
from conveyor.progress import LiveProgress, summary
from engine.state import replay


def render_text(renderable: object, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, force_terminal=False)
    console.print(renderable)
    return console.file.getvalue()  # type: ignore[attr-defined, no-any-return]


LOG: list[Event] = [
    RunSubmitted(
        run_id="r" * 32,
        at=100.0,
        workflow={"name": "w", "tasks": [{"name": "slow", "script": "sleep 60"}]},
        params={},
    ),
    TaskExpanded(run_id="r" * 32, at=100.0, task="slow", index=-1, attempt=0, count=1),
    TaskDispatched(run_id="r" * 32, at=100.0, task="slow"),
    TaskStarted(run_id="r" * 32, at=100.0, task="slow"),
]


def test_the_live_view_keeps_counting_while_a_step_runs_without_events() -> None:
    now = [105.0]
    progress = LiveProgress(Console(file=io.StringIO()), clock=lambda: now[0])
    state = replay(LOG)
    progress(LOG[-1], state)
    assert "5.00s" in render_text(progress.render())
    now[0] = 112.5  # no event in between: only time passed
    assert "12.50s" in render_text(progress.render())


def test_the_summary_of_a_running_run_says_how_long_it_has_run_by_the_clock() -> None:
    # Its last event came with its submission: the clock, not the log, says how long.
    text = render_text(summary(replay(LOG), now=227.0))
    assert text.splitlines()[-1] == "run running for 2.1m"


def test_the_summary_shows_what_a_failed_step_wrote_last() -> None:
    failed = TaskFailed(
        run_id="r" * 32,
        at=101.0,
        task="slow",
        error="exit code 3",
        retryable=False,
        stderr_tail=["reading config", "config file /etc/app.conf not found"],
    )
    text = render_text(summary(replay([*LOG, failed])), width=80)
    assert "slow: exit code 3" in text
    # Under the table, each line whole, not folded into the table's last column.
    table_end = text.index("└")
    lines = text[table_end:].splitlines()
    assert "slow, the last lines it wrote to stderr:" in lines
    assert "  config file /etc/app.conf not found" in lines
    assert "config file" not in text[:table_end]


def test_the_summary_names_the_item_whose_stderr_it_shows() -> None:
    from contracts.validation import parse_workflow
    from conveyor.testing import run_workflow

    flow = parse_workflow(
        "name: w\ntasks:\n  - name: each\n    items: [1, 2, 3]\n"
        "    script: '[ $CONVEYOR_ITEM != 2 ] || { echo item two is bad >&2; exit 4; }'\n"
    )
    text = render_text(summary(run_workflow(flow).state))
    assert "each[1], the last lines it wrote to stderr:" in text.splitlines()
    assert "  item two is bad" in text.splitlines()


def test_the_summary_counts_a_fan_out_in_words() -> None:
    from contracts.validation import parse_workflow
    from conveyor.testing import run_workflow

    flow = parse_workflow(
        "name: w\ntasks:\n  - {name: each, items: [1], retry: 2, script: 'true'}\n"
    )
    once = run_workflow(flow, failures={"each": 1})
    assert "1 item, 1 retry" in render_text(summary(once.state))
    twice = run_workflow(flow, failures={"each": 2})
    assert "1 item, 2 retries" in render_text(summary(twice.state))
    never = run_workflow(flow)
    assert "1 item " in render_text(summary(never.state))  # no "0 retries"


def test_a_fan_out_stopped_before_any_item_succeeded_shows_no_outputs() -> None:
    from contracts.validation import parse_workflow
    from conveyor.report import task_report
    from conveyor.testing import run_workflow

    flow = parse_workflow(
        "name: w\ntasks:\n  - {name: each, items: [1, 2], script: 'echo $CONVEYOR_ITEM'}\n"
    )
    none_ran = run_workflow(flow, failures={"each": 1})
    assert task_report(none_ran.state.nodes["each"])["outputs"] == {}
    assert "result=" not in render_text(summary(none_ran.state))
    one_ran = run_workflow(flow, failures={"each": lambda index, _attempt: index == 1})
    assert task_report(one_ran.state.nodes["each"])["outputs"] == {"result": [1, None]}


def test_a_resumed_run_s_retries_are_tallied_on_the_coordinator_s_side_not_the_drawing_s() -> None:
    """The table is drawn in the live display's thread while the coordinator folds
    events; a tally made there could miss a change. A run taken up from a snapshot has
    none: the drawing shows no retries until the coordinator's side makes it."""
    from contracts.events import RetryScheduled, TaskSucceeded
    from engine.state import fold, snapshot

    run = "r" * 32
    log: list[Event] = [
        RunSubmitted(
            run_id=run,
            at=100.0,
            workflow={
                "name": "w",
                "tasks": [{"name": "each", "items": [1, 2], "script": "x", "retry": {"limit": 2}}],
            },
            params={},
        ),
        TaskExpanded(run_id=run, at=100.0, task="each", index=-1, attempt=0, count=2),
        TaskDispatched(run_id=run, at=100.0, task="each", index=0),
        TaskFailed(run_id=run, at=101.0, task="each", index=0, error="x", retryable=True),
        RetryScheduled(run_id=run, at=101.0, task="each", index=0, attempt=2, due=102.0),
        TaskDispatched(run_id=run, at=102.0, task="each", index=0, attempt=2),
    ]
    state = snapshot.load(snapshot.dump(replay(log)))
    node = state.nodes["each"]
    assert node.tallied is None
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with LiveProgress(console, clock=lambda: 103.0) as progress:
        progress(log[0], state)  # an event of no task: the state is handed over
        progress.render()
        assert node.tallied is None  # the drawing made none
        event = TaskSucceeded(run_id=run, at=103.0, task="each", index=0, attempt=2)
        fold(state, event)
        progress(event, state)
        assert node.tallied is not None
        drawn = render_text(progress.render())
    row = next(line for line in drawn.splitlines() if "each" in line)
    assert row.split("│")[5].strip() == "1", drawn  # the retries column


def test_the_summary_can_say_what_started_the_run_and_its_parameters() -> None:
    submitted = RunSubmitted(
        run_id="p" * 32,
        at=100.0,
        workflow={"name": "w", "tasks": [{"name": "t", "script": "true"}]},
        params={"token": "\x1esecret:DEPLOY_TOKEN\x1e", "n": 3, "notes": "x" * 500},
    )
    state = replay([submitted])
    text = render_text(summary(state, now=101.0, with_origin=True))
    shown = f"params: token=<secret from $DEPLOY_TOKEN> n=3 notes={'x' * 59}…"
    assert text.splitlines()[1:3] == ["started by cli", shown]
    assert "params" not in render_text(summary(state, now=101.0))
