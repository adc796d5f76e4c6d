"""Live progress of a run on the terminal, and the summary table at its end."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from contracts.events import Event, RunCompleted
from contracts.vocabulary import TaskStatus
from conveyor.report import run_report, task_report
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


def _short(value: Any, width: int = 60) -> str:
    text = (
        value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)
    )
    text = text.replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


def progress_table(state: RunState, now: float) -> Table:
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
        retries = sum(max(0, i.attempt - 1) for i in node.instances)
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
    """An observer for the coordinator: redraws a task table as events arrive.

    On a terminal it is a live table; elsewhere it prints one line per task that
    starts or finishes, which reads well in CI logs.
    """

    def __init__(self, console: Console) -> None:
        self._console = console
        self._live: Live | None = None
        self._state: RunState | None = None
        self._last_draw = 0.0
        self._printed: dict[str, str] = {}

    def __enter__(self) -> LiveProgress:
        if self._console.is_terminal:
            self._live = Live(console=self._console, refresh_per_second=10, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            if self._state is not None:
                self._live.update(progress_table(self._state, time.time()))
            self._live.__exit__(None, None, None)

    def __call__(self, event: Event, state: RunState) -> None:
        self._state = state
        if self._live is not None:
            now = time.monotonic()
            # Drawing walks every instance (retries): big fan-outs are redrawn less often.
            size = sum(len(node.instances) for node in state.nodes.values())
            interval = 0.05 if size < 10_000 else 0.5
            if now - self._last_draw > interval or isinstance(event, RunCompleted):
                self._last_draw = now
                self._live.update(progress_table(state, state.now))
            return
        task = getattr(event, "task", None)
        node = state.nodes.get(task) if task is not None else None
        if node is None or self._printed.get(node.spec.name) == node.status:
            return
        self._printed[node.spec.name] = node.status
        note = f" ({len(node.instances)} items)" if node.spec.fans_out and node.instances else ""
        if node.error and node.status in (TaskStatus.FAILED, TaskStatus.SKIPPED):
            note += f": {node.error}"
        self._console.print(f"{SYMBOL.get(node.status, '')} {node.spec.name}: {node.status}{note}")


def summary(state: RunState) -> Group:
    report = run_report(state)
    table = Table(title=f"run {state.run_id} · {state.workflow.name}", title_justify="left")
    table.add_column("task")
    table.add_column("state")
    table.add_column("attempts", justify="right")
    table.add_column("time", justify="right")
    table.add_column("outputs / error", overflow="fold")
    for node in state.nodes.values():
        row = task_report(node)
        detail = row.get("error") or (
            " ".join(f"{k}={_short(v)}" for k, v in row["outputs"].items())
            if row["outputs"]
            else ""
        )
        attempts = str(row["attempts"])
        if node.spec.fans_out:
            attempts = f"{row['items']} items, {row['retries']} retries"
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
        (f" in {_duration(report['duration'])}", ""),
        (f": {state.reason}" if state.reason else "", style),
    )
    return Group(table, headline)
