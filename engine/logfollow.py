"""Following what a run's steps print, reading each line once.

Lines are kept per task attempt, in the order printed, so a follower keeps one count
per attempt: what it has printed of it. It reads everything stored at the start page by
page (the pages of ``TaskLogStore.page_lines``), then, on each look, only the attempts
still running and those that ended since the last look, each from its count on. An
attempt that ended before the follow began is read once, with the pages: a worker
writes an attempt's lines before it reports the attempt's end.

So a look costs what is new, not the run: a 100,000-item task is not read again every
second for the few steps running.

On Redis an attempt keeps its last 10,000 lines (``pages.MAX_LINES_PER_ATTEMPT``):
past that its list shifts as it grows, so the count no longer says where to go on. An
attempt that long is read whole on each look and followed from the last line printed.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from contracts.events import Event, TaskFailed, TaskStarted, TaskSucceeded
from contracts.ports import LogLine, LogPosition, TaskLogStore
from engine.runlog.pages import MAX_LINES_PER_ATTEMPT

Attempt = tuple[str, int, int]

PAGE = 5000
"""Lines read at a time."""
READ_AT_ONCE = 32
"""Attempts read at the same time on a look (each is its own store read)."""


class LinesRead(NamedTuple):
    lines: list[LogLine]
    answered: int | None
    """Where a follower taking up again goes on from (``LineFollower.answered``), given
    with a read's last lines only."""


@dataclass
class LineFollower:
    """The lines of a run (of one task, item or attempt, if asked) as they come."""

    store: TaskLogStore
    run_id: str
    task: str | None = None
    index: int | None = None
    attempt: int | None = None
    _read: dict[Attempt, int] = field(default_factory=dict, init=False)
    """Lines printed of each attempt seen so far."""
    _last: dict[Attempt, LogLine] = field(default_factory=dict, init=False)
    """The last line printed of each attempt long enough to be capped."""
    _running: set[Attempt] = field(default_factory=set, init=False)
    _ending: set[Attempt] = field(default_factory=set, init=False)
    """Ended since the last look: read once more, then no longer looked at."""
    _had_whole: set[Attempt] = field(default_factory=set, init=False)
    _ended_before: set[Attempt] = field(default_factory=set, init=False)
    """Ended in the log read before the stored lines (``read_past``)."""
    _seen: int = field(default=0, init=False)
    answered: int = field(default=0, init=False)
    """Events of the run's log the lines returned so far answer for: every line of the
    attempts that ended in the first ``answered`` has been returned (a place to take up
    again from, with ``begin(had=...)``)."""

    def wanted(self, attempt: Attempt) -> bool:
        task, index, number = attempt
        return (
            (self.task is None or task == self.task)
            and (self.index is None or index == self.index)
            and (self.attempt is None or number == self.attempt)
        )

    async def begin(self, past: Sequence[Event], *, had: int = 0) -> list[LogLine]:
        """Every line stored now, in page order (``begin_pages``, gathered)."""
        return [line async for page in self.begin_pages(past, had=had) for line in page]

    def read_past(self, events: Sequence[Event], *, had: int = 0) -> None:
        """Take note of the next events of the run's log, read just before the stored
        lines: they say which attempts are running (those that have ended are read whole
        by ``begin_pages``). A log read a page at a time is noted a page at a time.

        ``had``: a reader taking up again where an earlier follower's ``answered`` was
        has every line of the attempts that ended in the first ``had`` events: they are
        left out.
        """
        for position, event in enumerate(events, start=self._seen):
            self._note(event, ended=self._had_whole if position < had else self._ended_before)
        self._seen = self.answered = self._seen + len(events)

    async def begin_pages(
        self, past: Sequence[Event] = (), *, had: int = 0
    ) -> AsyncIterator[list[LogLine]]:
        """Every line stored now, a page at a time in page order, so that no more than a
        page is held; ``past`` (with ``had``) is the rest of the run's log read before
        (``read_past``)."""
        self.read_past(past, had=had)
        had_whole, over = self._had_whole, self._had_whole | self._ended_before
        self._running -= over
        self._had_whole, self._ended_before = set(), set()
        # The attempts in ``over`` are never looked at again: their counts are not kept.
        async for page in self._pages(self.task, self.index, self.attempt, None):
            for line in page:
                if (line.task, line.index, line.attempt) not in over:
                    self._took(line)
            yield [ln for ln in page if (ln.task, ln.index, ln.attempt) not in had_whole]

    def observe(self, event: Event) -> None:
        """Take note of an event of the run appended after ``past``."""
        self._seen += 1
        self._note(event, ended=self._ending)

    async def look(self) -> list[LogLine]:
        """The lines printed since the last look by attempts running or just ended, in
        the order they were printed (each attempt's in its own order)."""
        # Events are noted while the reads wait: an attempt that ends meanwhile is read
        # on the next look.
        ending, self._ending = self._ending, set()
        answers_for = self._seen
        attempts = sorted(self._running | ending)
        found: list[list[LogLine]] = []
        for start in range(0, len(attempts), READ_AT_ONCE):
            found += await asyncio.gather(
                *(self._new_lines(a) for a in attempts[start : start + READ_AT_ONCE])
            )
        self._running -= ending
        for attempt in ending:  # never looked at again
            self._read.pop(attempt, None)
            self._last.pop(attempt, None)
        self.answered = answers_for
        return list(heapq.merge(*found, key=lambda line: line.at))

    def _note(self, event: Event, *, ended: set[Attempt]) -> None:
        if not isinstance(event, TaskStarted | TaskSucceeded | TaskFailed):
            return
        attempt = (event.task, event.index, event.attempt)
        if not self.wanted(attempt):
            return
        if isinstance(event, TaskStarted):
            self._running.add(attempt)
        else:
            ended.add(attempt)

    def _took(self, line: LogLine) -> None:
        attempt = (line.task, line.index, line.attempt)
        count = self._read[attempt] = self._read.get(attempt, 0) + 1
        if count >= MAX_LINES_PER_ATTEMPT:
            self._last[attempt] = line

    async def _new_lines(self, attempt: Attempt) -> list[LogLine]:
        task, index, number = attempt
        count = self._read.get(attempt, 0)
        capped = count >= MAX_LINES_PER_ATTEMPT
        after = None if capped else (*attempt, count)
        lines = [line async for page in self._pages(task, index, number, after) for line in page]
        if capped:
            lines = _after_last(lines, self._last.get(attempt))
        for line in lines:
            self._took(line)
        return lines

    async def _pages(
        self, task: str | None, index: int | None, attempt: int | None, after: LogPosition | None
    ) -> AsyncIterator[list[LogLine]]:
        """Every line stored from ``after`` on, a page at a time."""
        while True:
            page = await self.store.page_lines(
                self.run_id, task, index, attempt, after=after, limit=PAGE
            )
            yield page.lines
            if page.next is None:
                return
            after = page.next


def _after_last(lines: list[LogLine], last: LogLine | None) -> list[LogLine]:
    """The lines after ``last`` (all of them if it is no longer kept)."""
    if last is None:
        return lines
    for position in range(len(lines) - 1, -1, -1):
        if lines[position] == last:
            return lines[position + 1 :]
    return lines
