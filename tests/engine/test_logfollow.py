"""Following a run's lines: each line once, and a look reads only the attempts running."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.events import Event, TaskFailed, TaskStarted, TaskSucceeded
from contracts.ports import LogLine, LogPage, RunStore
from contracts.vocabulary import FailureKind
from engine import logfollow
from engine.logfollow import LineFollower
from engine.runlog.pages import MAX_LINES_PER_ATTEMPT

RUN = "r1"


class Reads:
    """A store that remembers which attempts each page read asked for."""

    def __init__(self, inner: RunStore) -> None:
        self.inner = inner
        self.asked: list[tuple[str | None, int | None, int | None]] = []

    async def write_lines(self, lines: list[LogLine]) -> None:
        await self.inner.write_lines(lines)

    async def read_lines(self, *args: Any) -> list[LogLine]:
        raise AssertionError("a follow reads pages, never the whole run")

    async def page_lines(self, run_id: str, *args: Any, **kwargs: Any) -> LogPage:
        task, index, attempt = (*args, None, None, None)[:3]
        self.asked.append((task, index, attempt))
        return await self.inner.page_lines(run_id, *args, **kwargs)


clock = iter(range(1, 1_000_000))


def line(task: str, index: int, text: str, attempt: int = 1) -> LogLine:
    return LogLine(
        run_id=RUN,
        task=task,
        index=index,
        attempt=attempt,
        stream="stdout",
        at=float(next(clock)),
        text=text,
    )


def started(task: str, index: int, attempt: int = 1) -> TaskStarted:
    return TaskStarted(run_id=RUN, at=1.0, task=task, index=index, attempt=attempt)


def succeeded(task: str, index: int, attempt: int = 1) -> TaskSucceeded:
    return TaskSucceeded(run_id=RUN, at=2.0, task=task, index=index, attempt=attempt)


def texts(lines: list[LogLine]) -> list[str]:
    return [f"{x.task}[{x.index}]#{x.attempt} {x.text}" for x in lines]


async def test_each_line_once_and_a_look_reads_only_running_attempts(store: RunStore) -> None:
    # Ten items ended before the follow began; item 10 runs and prints on.
    past: list[Event] = []
    for i in range(10):
        await store.write_lines([line("each", i, f"done {i}")])
        past += [started("each", i), succeeded("each", i)]
    await store.write_lines([line("each", 10, "one")])
    past.append(started("each", 10))
    reads = Reads(store)
    follower = LineFollower(reads, RUN)  # type: ignore[arg-type]

    first = await follower.begin(past)
    assert texts(first) == [*(f"each[{i}]#1 done {i}" for i in range(10)), "each[10]#1 one"]
    assert await follower.look() == []  # nothing new

    await store.write_lines([line("each", 10, "two"), line("each", 10, "three")])
    reads.asked.clear()
    assert texts(await follower.look()) == ["each[10]#1 two", "each[10]#1 three"]
    assert reads.asked == [("each", 10, 1)]  # not the ten that ended

    # Item 11 starts, prints and ends between two looks; item 10 ends too.
    for event in [started("each", 11), succeeded("each", 11), succeeded("each", 10)]:
        follower.observe(event)  # the run's log after ``past``, as a watch gives it
    await store.write_lines([line("each", 11, "eleven"), line("each", 10, "four")])
    reads.asked.clear()
    assert texts(await follower.look()) == ["each[11]#1 eleven", "each[10]#1 four"]
    assert sorted(reads.asked) == [("each", 10, 1), ("each", 11, 1)]

    await store.write_lines([line("each", 10, "late")])  # after its end: not followed
    reads.asked.clear()
    assert await follower.look() == []
    assert reads.asked == []


async def test_a_retry_is_a_new_attempt_and_filters_hold(store: RunStore) -> None:
    follower = LineFollower(store, RUN, task="t", index=2)
    assert await follower.begin([]) == []
    await store.write_lines([line("t", 2, "try 1"), line("t", 1, "other item"), line("u", 2, "x")])
    failed = TaskFailed(
        run_id=RUN, at=3.0, task="t", index=2, error="boom", reason=FailureKind.ERROR
    )
    for event in [started("t", 2), failed, started("t", 2, 2), started("t", 1), started("u", 2)]:
        follower.observe(event)
    await store.write_lines([line("t", 2, "try 2", attempt=2)])
    assert texts(await follower.look()) == ["t[2]#1 try 1", "t[2]#2 try 2"]
    await store.write_lines([line("t", 2, "more", attempt=2)])
    assert texts(await follower.look()) == ["t[2]#2 more"]


async def test_an_attempt_past_the_redis_cap_goes_on_from_its_last_line(store: RunStore) -> None:
    # Redis keeps an attempt's last 10,000 lines: the list shifts as it grows.
    many = [line("chatty", 0, f"line {i}") for i in range(MAX_LINES_PER_ATTEMPT + 5)]
    await store.write_lines(many)
    follower = LineFollower(store, RUN)
    first = await follower.begin([started("chatty", 0)])
    assert first[-1].text == f"line {MAX_LINES_PER_ATTEMPT + 4}"
    await store.write_lines([line("chatty", 0, "new 1"), line("chatty", 0, "new 2")])
    assert texts(await follower.look()) == ["chatty[0]#1 new 1", "chatty[0]#1 new 2"]
    assert await follower.look() == []


async def test_an_attempt_that_ends_while_a_look_reads_is_read_on_the_next(
    store: RunStore,
) -> None:
    follower = LineFollower(store, RUN)
    await follower.begin([started("each", 0)])

    class EndsMeanwhile(Reads):
        async def page_lines(self, run_id: str, *args: Any, **kwargs: Any) -> LogPage:
            # The watch notes an end while this read waits on the store.
            follower.observe(succeeded("each", 1))
            return await super().page_lines(run_id, *args, **kwargs)

    follower.store = EndsMeanwhile(store)  # type: ignore[assignment]
    follower.observe(started("each", 1))
    await store.write_lines([line("each", 0, "zero")])
    assert texts(await follower.look()) == ["each[0]#1 zero"]
    await store.write_lines([line("each", 1, "one")])
    follower.store = store
    assert texts(await follower.look()) == ["each[1]#1 one"]


async def test_a_follow_taken_up_again_leaves_out_attempts_it_had_whole(store: RunStore) -> None:
    # The first follower returned item 0 whole; items 1 and 2 were running.
    past: list[Event] = [started("each", 0), started("each", 1), started("each", 2)]
    await store.write_lines([line("each", i, f"first {i}") for i in range(3)])
    first = LineFollower(store, RUN)
    await first.begin(past)
    await store.write_lines([line("each", 0, "last 0")])
    past.append(succeeded("each", 0))
    first.observe(past[-1])
    assert texts(await first.look()) == ["each[0]#1 last 0"]
    had = first.answered
    assert had == len(past)
    past.append(succeeded("each", 1))
    first.observe(past[-1])  # noted but not yet looked at: not answered for
    assert first.answered == had
    # The reader left there; item 2 printed more before it came back.
    await store.write_lines([line("each", 2, "later 2")])
    again = LineFollower(store, RUN)
    lines = await again.begin(past, had=had)
    assert texts(lines) == ["each[1]#1 first 1", "each[2]#1 first 2", "each[2]#1 later 2"]
    assert again.answered == len(past)
    await store.write_lines([line("each", 2, "end 2")])
    again.observe(succeeded("each", 2))
    assert texts(await again.look()) == ["each[2]#1 end 2"]


async def test_what_is_stored_comes_a_page_at_a_time(
    store: RunStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logfollow, "PAGE", 2)
    past: list[Event] = []
    for i in range(5):
        await store.write_lines([line("each", i, f"done {i}")])
        past += [started("each", i), succeeded("each", i)]
    follower = LineFollower(store, RUN)
    pages = [texts(page) async for page in follower.begin_pages(past)]
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [text for page in pages for text in page] == [f"each[{i}]#1 done {i}" for i in range(5)]
