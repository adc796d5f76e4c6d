"""Pages of task logs, in page order: task by name, then item, then attempt, then as
printed. What every ``TaskLogStore`` shares about where a page ends."""

from __future__ import annotations

from contracts.ports import LogLine, LogPage, LogPosition

Attempt = tuple[str, int, int]

MAX_LINES_PER_ATTEMPT = 10_000
"""Lines a Redis log keeps of one attempt (its last ones): past that its list shifts as
it grows, which a follower reading on from a count has to know."""


def attempt_of(line: LogLine) -> Attempt:
    return line.task, line.index, line.attempt


def page_ending(lines: list[LogLine], limit: int, after: LogPosition | None) -> LogPage:
    """The page of ``lines``, read from ``after`` on up to ``limit``: a full page says
    where the next one starts, a short one is the last."""
    if len(lines) < limit:
        return LogPage(lines=lines, next=None)
    last = attempt_of(lines[-1])
    read = sum(1 for line in lines if attempt_of(line) == last)
    if after is not None and after[:3] == last:
        read += after[3]  # the page began inside this attempt
    return LogPage(lines=lines, next=(*last, read))


def page_of(
    lines: list[LogLine], attempt: int | None, after: LogPosition | None, limit: int
) -> LogPage:
    """A page cut from all of a run's (or task's) lines, read whole."""
    ordered = sorted(
        (line for line in lines if attempt is None or line.attempt == attempt), key=attempt_of
    )
    first = 0
    if after is not None:
        first = sum(1 for line in ordered if attempt_of(line) < after[:3])
        if first < len(ordered) and attempt_of(ordered[first]) == after[:3]:
            first += after[3]  # the page begins inside this attempt
    return page_ending(ordered[first : first + limit], limit, after)
