"""Live progress of a run on the terminal, and the summary table at its end."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from contracts.events import Event
from contracts.vocabulary import TaskStatus
from conveyor.report import outputs_shown, params_shown, run_report, short_value, task_report
from conveyor.terminal import displayable, plain
from engine.state.model import RunState

STYLE: dict[str, str] = {
    TaskStatus.SUCCEEDED: "green",
    TaskStatus.FAILED: "red",
    TaskStatus.SKIPPED: "yellow",
    TaskStatus.CANCELLED: "magenta",
    TaskStatus.RUNNING: "cyan",
    TaskStatus.PENDING: "dim",
}
SYMBOL = {
    TaskStatus.SUCCEEDED: "✓",
    TaskStatus.FAILED: "✗",
    TaskStatus.SKIPPED: "↷",
    TaskStatus.CANCELLED: "⊘",
    TaskStatus.RUNNING: "▶",
    TaskStatus.PENDING: "·",
}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.2f}s"
    return f"{seconds / 60:.1f}m"


def progress_table(state: RunState, now: float) -> Table:
    """The run's tasks as they stand. Reads no instance: it may be drawn in the live
    display's thread while the coordinator folds events into the state (a retry count
    shows once the node's tally is made, on the coordinator's side)."""
    table = Table(title=f"{state.workflow.name} · run {state.run_id[:12]}", title_justify="left")
    table.add_column("task")
    table.add_column("state")
    table.add_column("progress", width=24)
    table.add_column("done", justify="right")
    table.add_column("retries", justify="right")
    table.add_column("time", justify="right")
    for node in state.nodes.values():
        total = len(node.instances)
        if node.finished_at is not None and node.started_at is not None:
            elapsed = node.finished_at - node.started_at
        elif node.started_at is not None:
            elapsed = max(0.0, now - node.started_at)
        else:
            elapsed = None
        bar = ProgressBar(total=max(total, 1), completed=node.done if total else 0, width=22)
        tally = node.tallied
        retries = tally.retries if tally is not None else 0
        style = STYLE.get(node.status, "")
        table.add_row(
            node.spec.name,
            Text(f"{SYMBOL.get(node.status, '')} {node.status}", style=style),
            bar if node.instances else Text(""),
            f"{node.done}/{total}" if node.instances else "",
            str(retries) if retries else "",
            _duration(elapsed),
        )
    return table


class LiveProgress:
    """An observer for the coordinator: a task table that stays current.

    On a terminal it is a live table, redrawn ten times a second whether events arrive
    or not, so a long step's time keeps counting; elsewhere it prints one line per
    task that starts or finishes, which reads well in CI logs.
    """

    def __init__(self, console: Console, clock: Callable[[], float] = time.time) -> None:
        self._console = console
        self._clock = clock
        self._live: Live | None = None
        self._state: RunState | None = None
        self._table: Table | None = None
        self._printed: dict[str, str] = {}

    def __enter__(self) -> LiveProgress:
        if self._console.is_terminal:
            self._live = Live(
                console=self._console,
                refresh_per_second=10,
                transient=False,
                get_renderable=self.render,
            )
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            # Made on the coordinator's thread, as in ``__call__``: the final table shows
            # the retries of tasks that had no event since this process took up the run.
            if self._state is not None:
                for node in self._state.nodes.values():
                    node.tally()
            self._live.refresh()
            self._live.__exit__(None, None, None)

    def render(self) -> Table | Text:
        """The table as of now (called by the live display's refresh)."""
        state = self._state
        if state is None:
            return Text("")
        # The state may change under the drawing thread (a RuntimeError): next time.
        with contextlib.suppress(RuntimeError):
            self._table = progress_table(state, self._clock() if not state.finished else state.now)
        return self._table if self._table is not None else Text("")

    def __call__(self, event: Event, state: RunState) -> None:
        if state.parent is not None:
            return  # a child run of a workflow step: its parent's table counts it
        self._state = state
        if self._live is not None:
            # Made here, on the coordinator's side, for the drawing thread to read: one
            # made there could miss a change folded while it read the instances.
            node = state.nodes.get(getattr(event, "task", ""))
            if node is not None and node.tallied is None:
                node.tally()
            return
        task = getattr(event, "task", None)
        node = state.nodes.get(task) if task is not None else None
        if node is None or self._printed.get(node.spec.name) == node.status:
            return
        self._printed[node.spec.name] = node.status
        note = f" ({len(node.instances)} items)" if node.spec.fans_out and node.instances else ""
        if node.error and node.status in (TaskStatus.FAILED, TaskStatus.SKIPPED):
            note += f": {node.error}"
        self._console.print(
            plain(f"{SYMBOL.get(node.status, '')} {node.spec.name}: {node.status}{note}")
        )


def summary(state: RunState, now: float | None = None, *, with_origin: bool = False) -> Group:
    """The run's tasks as a table, with a headline: how it ended and how long it took, or,
    while it runs, how long it has been running (by the clock, ``now``). ``with_origin``:
    what started it and with which parameters, under its title."""
    report = run_report(state)
    # The title as a line of its own: a table's title is padded to the table's width,
    # which leaves trailing spaces in a pipe.
    title = Text(f"run {state.run_id} · {state.workflow.name}", style="table.title")
    if with_origin and state.trigger:
        title.append_text(plain(f"\nstarted by {state.trigger}"))
    if with_origin and state.params:
        title.append("\nparams: ", style="")
        title.append_text(plain(" ".join(f"{k}={v}" for k, v in params_shown(state))))
    table = Table()
    table.add_column("task")
    table.add_column("state")
    table.add_column("attempts", justify="right")
    table.add_column("time", justify="right")
    table.add_column("outputs / error", overflow="fold")
    # A failed step's last stderr lines (a traceback) go under the table, at full width:
    # folded into a column they are unreadable.
    tails: list[Text] = []
    for node in state.nodes.values():
        row = task_report(node)
        detail = plain(
            row.get("error")
            or (
                " ".join(f"{k}={short_value(v)}" for k, v in row["outputs"].items())
                if row["outputs"]
                else ""
            )
        )
        if row.get("stderr_tail"):
            item = row.get("stderr_item")
            writer = node.spec.name if item is None else f"{node.spec.name}[{item}]"
            tails.append(_stderr_tail(writer, row["stderr_tail"]))
        attempts = str(row["attempts"])
        if node.spec.fans_out:
            attempts = counted(row["items"], "item")
            if row["retries"]:
                attempts += f", {counted(row['retries'], 'retry', 'retries')}"
        table.add_row(
            node.spec.name,
            Text(node.status, style=STYLE.get(node.status, "")),
            attempts,
            _duration(row["duration"]),
            detail,
        )
    style = STYLE.get(state.status, "")
    headline = Text.assemble(
        ("run ", ""),
        (state.status, f"bold {style}"),
        (f" in {_duration(report['duration'])}", "")
        if state.finished
        else (f" for {_duration((now or time.time()) - state.submitted_at)}", ""),
        (displayable(f": {state.reason}") if state.reason else "", style),
    )
    if state.outputs:
        headline.append("\noutputs: ", style="")
        headline.append_text(plain(" ".join(f"{k}={v}" for k, v in outputs_shown(state))))
    return Group(title, table, *tails, headline)


def _stderr_tail(writer: str, lines: list[str]) -> Text:
    text = Text.assemble((writer, "bold"), (", the last lines it wrote to stderr:", ""))
    for line in lines:
        text.append("\n  ")
        text.append_text(plain(line, "dim"))
    return text


def counted(n: int, one: str, many: str = "") -> str:
    """``1 item``, ``3 items``, ``2 retries``, ``100,000 items``."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"
