"""Pictures of a run for the UI, computed here and drawn as SVG by the templates: the
DAG (a fan-out is one box with its counts per state, however many items) and a
timeline of the tasks. Pure: the run's state in, positions out."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from contracts.events import Event, TaskDispatched, TaskFailed, TaskStarted, TaskSucceeded
from conveyor.server.shapes import status_counts
from engine.state.model import RunState

BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 190, 58, 60, 24, 16
ROW_H, LABEL_W = 22, 160
BOX_NAME_CHARS, LABEL_CHARS = 21, 22
"""About how many characters of a name fit in a box, and in the timeline's labels."""
MIN_BAR = 0.002
"""The narrowest bar, as a share of the run's span: a step of a millisecond in an hour's
run is still seen."""
TICKS = 6
"""About how many times the timeline's axis names."""


def fitted(name: str, chars: int) -> str:
    """``name`` in at most ``chars`` characters: cut in the middle, so that names that
    differ only at the end (``extract_10``, ``extract_11``) stay told apart."""
    if len(name) <= chars:
        return name
    tail = (chars - 1) // 2
    return f"{name[: chars - 1 - tail]}…{name[-tail:]}"


@dataclass(frozen=True)
class Box:
    name: str
    x: int
    y: int
    state: str
    kind: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def shown_name(self) -> str:
        return fitted(self.name, BOX_NAME_CHARS)

    @property
    def caption(self) -> str:
        if not self.counts:
            return f"{self.kind} · {self.state}"
        total = sum(self.counts.values())
        done = self.counts.get("succeeded", 0)
        failed = self.counts.get("failed", 0)
        text = f"{done:,}/{total:,} done"
        return text + (f" · {failed:,} failed" if failed else "")


@dataclass(frozen=True)
class Edge:
    path: str


@dataclass(frozen=True)
class Graph:
    boxes: list[Box]
    edges: list[Edge]
    width: int
    height: int


def dag(state: RunState) -> Graph:
    """Tasks in columns by depth (the longest chain of dependencies before them)."""
    depth: dict[str, int] = {}
    for name, node in state.nodes.items():  # tasks come in a valid order: deps first
        depth[name] = 1 + max((depth[d] for d in node.spec.depends if d in depth), default=-1)
    columns: dict[int, list[str]] = {}
    for name in state.nodes:
        columns.setdefault(depth[name], []).append(name)
    boxes: dict[str, Box] = {}
    for column, names in columns.items():
        for row, name in enumerate(names):
            node = state.nodes[name]
            counts = status_counts(node) if node.spec.fans_out else {}
            boxes[name] = Box(
                name=name,
                x=MARGIN + column * (BOX_W + GAP_X),
                y=MARGIN + row * (BOX_H + GAP_Y),
                state=str(node.status),
                kind=f"{node.spec.kind} x{len(node.instances):,}"
                if node.spec.fans_out
                else node.spec.kind,
                counts=counts,
            )
    edges = []
    for name, node in state.nodes.items():
        child = boxes[name]
        for dep in node.spec.depends:
            parent = boxes[dep]
            x1, y1 = parent.x + BOX_W, parent.y + BOX_H // 2
            x2, y2 = child.x, child.y + BOX_H // 2
            bend = (x2 - x1) // 2
            edges.append(Edge(f"M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}"))
    width = MARGIN * 2 + (max(columns) + 1) * (BOX_W + GAP_X) - GAP_X
    height = MARGIN * 2 + max(len(c) for c in columns.values()) * (BOX_H + GAP_Y) - GAP_Y
    return Graph(list(boxes.values()), edges, width, height)


@dataclass(frozen=True)
class Bar:
    name: str
    y: int
    start: float
    """Where the bar begins, as a share of the run's span (0 to 1): the picture
    stretches to the width it is given."""
    length: float
    """The bar's length, as a share of the run's span."""
    state: str
    label: str

    @property
    def shown_name(self) -> str:
        return fitted(self.name, LABEL_CHARS)


@dataclass(frozen=True)
class Tick:
    at: float
    """A share of the run's span."""
    label: str


@dataclass(frozen=True)
class Timeline:
    bars: list[Bar]
    height: int
    span: float
    """Seconds from the run's submission to its end (or now)."""
    per_attempt: bool = False

    @property
    def ticks(self) -> list[Tick]:
        return ticks(self.span)


CLOCK_STEPS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
"""Steps of a minute or more that a clock reads as round."""


def ticks(span: float) -> list[Tick]:
    """Round times from 0 to ``span`` seconds, about ``TICKS`` of them, for an axis."""
    raw = span / TICKS
    if raw <= 30:
        magnitude = 10 ** math.floor(math.log10(raw))
        step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    else:
        step = next((s for s in CLOCK_STEPS if s >= raw), math.ceil(raw / 86400) * 86400)
    digits = max(0, -math.floor(math.log10(step) + 1e-9))
    count = math.floor(span / step + 1e-9)
    return [Tick(n * step / span, _clock(n * step, digits)) for n in range(count + 1)]


def _clock(seconds: float, digits: int) -> str:
    if seconds == 0:
        return "0s"
    if seconds < 60 or seconds % 60:
        return f"{seconds:.{digits}f}s"
    hours, minutes = divmod(round(seconds) // 60, 60)
    if not hours:
        return f"{minutes}m"
    return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"


def _bar_at(first: float, last: float, begin: float, span: float) -> tuple[float, float]:
    return (first - begin) / span, max((last - first) / span, MIN_BAR)


def timeline(state: RunState, now: float, events: list[Event] | None = None) -> Timeline:
    """A Gantt of the run: with its ``events``, one bar per attempt of each plain task;
    a fan-out is one bar from its first start to its last finish, whatever its size.
    An unfinished run's picture ends at ``now``."""
    if events is not None:
        return _attempts(state, now, events)
    begin = state.submitted_at
    end = state.finished_at or max(now, state.now)
    span = max(end - begin, 0.001)
    bars: list[Bar] = []
    for row, (name, node) in enumerate(state.nodes.items()):
        # Kept by the fold once read: a fan-out's million instances are not read again
        # on every view of the run.
        tally = node.tally()
        first = tally.first_start
        if first is None:
            continue
        last = (
            tally.last_finish
            if tally.last_finish is not None and tally.finished == len(node.instances)
            else end
        )
        label = f"{last - first:.2f}s"
        if node.spec.fans_out:
            label += f" · {len(node.instances):,} items"
        at = _bar_at(first, last, begin, span)
        bars.append(Bar(name, row * ROW_H, *at, str(node.status), label))
    return Timeline(bars, max(len(state.nodes), 1) * ROW_H, span)


def _attempts(state: RunState, now: float, events: list[Event]) -> Timeline:
    begin = state.submitted_at
    end = state.finished_at or max(now, state.now)
    span = max(end - begin, 0.001)
    started: dict[tuple[str, int], float] = {}
    ended: dict[tuple[str, int], tuple[float, str]] = {}
    for event in events:
        if not isinstance(event, TaskDispatched | TaskStarted | TaskSucceeded | TaskFailed):
            continue
        node = state.nodes.get(event.task)
        if node is None or node.spec.fans_out:
            continue
        key = (event.task, event.attempt)
        if isinstance(event, TaskDispatched):
            if node.spec.wait is not None:  # a wait step starts waiting when dispatched
                started[key] = event.at
        elif isinstance(event, TaskStarted):
            started[key] = event.at
        else:
            ended[key] = (event.at, "succeeded" if isinstance(event, TaskSucceeded) else "failed")
    aggregated = timeline(state, now)
    by_task = {bar.name: bar for bar in aggregated.bars}
    bars: list[Bar] = []
    row = 0
    for name, node in state.nodes.items():
        if node.spec.fans_out:
            if name in by_task:
                bar = by_task[name]
                bars.append(Bar(name, row * ROW_H, bar.start, bar.length, bar.state, bar.label))
            row += 1
            continue
        attempts = sorted((a, at) for (task, a), at in started.items() if task == name)
        for attempt, first in attempts:
            last, outcome = ended.get((name, attempt), (end, "running"))
            label = f"attempt {attempt}: {outcome}, {last - first:.2f}s"
            at = _bar_at(first, last, begin, span)
            bars.append(Bar(f"{name} #{attempt}", row * ROW_H, *at, outcome, label))
            row += 1
        if not attempts:
            row += 1
    return Timeline(bars, max(row, 1) * ROW_H, span, per_attempt=True)
