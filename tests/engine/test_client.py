"""The client: every way of steering and reading a run, against both homes."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
from pathlib import Path
from typing import Any

import pytest

from contracts.errors import InvalidInput, NotFound
from contracts.events import Event, RunCompleted, RunSubmitted, TaskStarted
from contracts.ports import LogLine, LogPage
from contracts.validation import parse_workflow
from contracts.vocabulary import RunStatus, TaskStatus
from conveyor.embedded import EmbeddedEngine
from engine.client import Client
from engine.runlog.memory import MemoryRunLog
from engine.state import replay, snapshot


def flow(text: str):  # type: ignore[no-untyped-def]
    return parse_workflow(textwrap.dedent(text))


FLAKY = """
    name: flaky
    tasks:
      - name: a
        script: echo a
      - name: b
        depends: [a]
        script: test -f {marker}
"""


async def test_submit_watch_and_read_back(engine: EmbeddedEngine) -> None:
    client = engine.client
    run_id = await client.submit(flow("name: one\ntasks: [{name: a, script: echo 1}]"), {})
    seen: list[Event] = []
    final = await client.watch(run_id, lambda event, _state: seen.append(event), timeout=30)
    assert final.status == RunStatus.SUCCEEDED
    assert isinstance(seen[0], RunSubmitted) and isinstance(seen[-1], RunCompleted)
    # The watcher saw the log exactly, in order, each event once.
    assert seen == await client.events(run_id)
    assert (await client.state(run_id[:10])).status == RunStatus.SUCCEEDED
    assert [row.run_id for row in await client.runs(workflow="one")] == [run_id]


async def test_a_runs_workflow_is_read_from_its_submission(
    engine: EmbeddedEngine,
) -> None:
    client = engine.client
    workflow = flow(
        """
        name: shape
        tasks:
          - {name: make, script: echo 1}
          - {name: each, depends: [make], items: [1, 2], env: {I: "{{ item }}"}, script: echo}
          - {name: last, depends: [each], script: echo done}
        """
    )
    run_id = await client.submit(workflow, {})
    await client.watch(run_id, timeout=30)

    assert await client.workflow(run_id[:10]) == workflow


async def test_follow_from_a_cursor_yields_only_what_is_new(engine: EmbeddedEngine) -> None:
    client = engine.client
    run_id = await client.submit(flow("name: two\ntasks: [{name: a, script: echo 1}]"), {})
    await client.watch(run_id, timeout=30)
    everything = await client.events(run_id)
    batches = client.follow(run_id, after=2, timeout=0.2)
    tail = [event async for batch in batches for event in batch]
    assert tail == everything[2:]


async def test_watch_takes_up_after_the_events_its_caller_has_read(
    engine: EmbeddedEngine,
) -> None:
    client = engine.client
    run_id = await client.submit(flow("name: three\ntasks: [{name: a, script: echo 1}]"), {})
    await client.watch(run_id, timeout=30)
    everything = await client.events(run_id)
    seen: list[Event] = []
    start = (3, replay(everything[:3]))
    final = await client.watch(run_id, lambda e, _s: seen.append(e), start=start)
    assert final.status == RunStatus.SUCCEEDED and seen == everything[3:]
    seen.clear()  # all of it read already: finished, nothing to observe or wait for
    start = (len(everything), replay(everything))
    final = await client.watch(run_id, lambda e, _s: seen.append(e), start=start)
    assert final.status == RunStatus.SUCCEEDED and seen == []


async def test_cancel_and_its_refusals(engine: EmbeddedEngine) -> None:
    client = engine.client
    started = asyncio.Event()
    engine.coordinator.observe(
        lambda event, _s: started.set() if isinstance(event, TaskStarted) else None
    )
    run_id = await client.submit(flow("name: long\ntasks: [{name: s, script: sleep 30}]"), {})
    await asyncio.wait_for(started.wait(), 10)
    with pytest.raises(InvalidInput, match="still running"):
        await client.retry(run_id)
    assert await client.cancel(run_id[:12]) == run_id
    final = await client.watch(run_id, timeout=10)
    assert final.status == RunStatus.CANCELLED
    assert final.nodes["s"].status == TaskStatus.CANCELLED
    with pytest.raises(InvalidInput, match="already cancelled"):
        await client.cancel(run_id)
    with pytest.raises(NotFound):
        await client.cancel("no-such-run")


async def test_retry_reruns_the_failed_part_and_watch_waits_for_the_new_round(
    engine: EmbeddedEngine, tmp_path: Path
) -> None:
    client = engine.client
    marker = tmp_path / "fixed"
    run_id = await client.submit(flow(FLAKY.format(marker=marker)), {})
    failed = await client.watch(run_id, timeout=30)
    assert failed.status == RunStatus.FAILED
    marker.touch()
    before = await client.retry(run_id)
    assert before.round == 0
    again = await client.watch(run_id, past_round=before.round, timeout=30)
    assert again.status == RunStatus.SUCCEEDED and again.round == 1
    # The task that had succeeded kept its one attempt.
    assert again.nodes["a"].instances[0].attempt == 1
    with pytest.raises(InvalidInput, match="nothing to retry"):
        await client.retry(run_id)


async def test_resume_takes_up_a_run_its_coordinator_lost() -> None:
    """A run whose coordinator forgot it (its process died) is finished after resume."""
    store = MemoryRunLog()
    async with EmbeddedEngine(store, workers=2) as first:
        run_id = await first.client.submit(
            flow("name: r\ntasks: [{name: a, script: echo a}, {name: b, script: echo b}]"),
            {},
        )
        await first.client.watch(run_id, timeout=30)
    # Cut the log back to its submission: what a coordinator that died straight after
    # recording it would leave behind.
    submitted = (await store.read(run_id))[:1]
    cut = MemoryRunLog()
    await cut.append(run_id, submitted)
    async with EmbeddedEngine(cut, workers=2) as second:
        await second.ensure_pools({"default"})
        assert (await second.client.state(run_id)).status == RunStatus.RUNNING
        assert await second.client.resume(run_id[:8]) == run_id
        final = await second.client.watch(run_id, timeout=30)
    assert final.status == RunStatus.SUCCEEDED
    with pytest.raises(InvalidInput, match="already succeeded"):
        await Client(cut).resume(run_id)


async def test_resume_runs_a_task_recorded_dispatched_whose_process_died() -> None:
    """A process killed between dispatching a task and recording its start leaves it
    dispatched in the log: resuming sends it again, and a worker is there to take it."""
    store = MemoryRunLog()
    workflow = flow("name: d\ntasks: [{name: a, script: echo a}, {name: b, script: echo b}]")
    dispatched: set[str] = set()
    both = asyncio.Event()

    def seen(event: Event, _state: object) -> None:
        if event.kind == "task_dispatched":
            dispatched.add(event.task)
            if len(dispatched) == 2:
                both.set()

    async with EmbeddedEngine(store, run_steps=False) as first:  # nothing takes the tasks
        first.coordinator.observe(seen)
        run_id = await first.client.submit(workflow, {})
        await asyncio.wait_for(both.wait(), 30)
    async with EmbeddedEngine(store, workers=2) as second:
        await second.client.resume(run_id, steps_lost=True)
        final = await second.client.watch(run_id, timeout=30)
    assert final.status == RunStatus.SUCCEEDED
    started = [e.task for e in await store.read(run_id) if e.kind == "task_started"]
    assert sorted(started) == ["a", "b"]


async def test_a_client_without_a_transport_reads_but_does_not_steer() -> None:
    store = MemoryRunLog()
    async with EmbeddedEngine(store) as engine:
        run_id = await engine.client.submit(flow("name: x\ntasks: [{name: a, script: 'true'}]"), {})
        await engine.client.watch(run_id, timeout=30)
    reader = Client(store)
    assert (await reader.state(run_id)).status == RunStatus.SUCCEEDED
    with pytest.raises(Exception, match="no transport"):
        await reader.submit(flow("name: y\ntasks: [{name: a, script: 'true'}]"), {})


async def test_a_state_read_again_folds_only_what_is_new_and_equals_a_rebuild(
    engine: EmbeddedEngine,
) -> None:
    workflow = flow(
        """
        name: grows
        tasks:
          - name: each
            items: "{{ range(300) }}"
            command: [echo, "{{ item }}"]
          - name: flaky
            depends: [each]
            retry: {limit: 2, backoff: {delay: 0.01s}}
            script: exit 1
        """
    )
    run_id = await engine.submit(workflow, {})
    reads = []
    async with asyncio.timeout(60):
        while not reads or not reads[-1].finished:
            with contextlib.suppress(NotFound):  # submitted, not yet recorded
                reads.append(await engine.client.state(run_id))
            await asyncio.sleep(0.01)  # reading as it runs, not synchronising on it
    assert len(reads) > 2
    kept = reads[-1]
    log = await engine.store.read(run_id)
    assert kept.events_folded == len(log)
    rebuilt = await Client(engine.store).state(run_id)  # a client that kept nothing
    assert snapshot.dump(kept) == snapshot.dump(rebuilt)
    assert kept.nodes["flaky"].instances[0].attempt == 3


class PagedReads:
    """A run store that notes the limit of every read of a run's log."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self.limits: list[int | None] = []

    async def read(self, run_id: str, after: int = 0, *, limit: int | None = None) -> list[Event]:
        self.limits.append(limit)
        return await self._inner.read(run_id, after, limit=limit)  # type: ignore[attr-defined, no-any-return]

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


async def test_following_lines_reads_the_runs_log_a_page_at_a_time(
    engine: EmbeddedEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log follow opened on a big run holds a page of its log, never all of it."""
    monkeypatch.setattr("engine.client.FOLLOW_PAGE", 2)
    workflow = flow("""
        name: printing
        tasks:
          - name: each
            items: "{{ range(3) }}"
            env: {ITEM: "{{ item }}"}
            script: echo "item $ITEM"
          - name: last
            depends: [each]
            script: echo done
    """)
    run_id = await engine.client.submit(workflow, {})
    await engine.client.watch(run_id, timeout=30)
    reads = PagedReads(engine.client.store)
    client = Client(reads)  # type: ignore[arg-type]

    got = [read async for read in client.follow_lines(run_id, every=0.05)]

    texts = sorted(line.text for read in got for line in read.lines)
    assert texts == ["done", "item 0", "item 1", "item 2"]
    assert reads.limits and set(reads.limits) == {2}  # every read paged, none whole
    assert got[-1].answered == len(await engine.client.events(run_id))


class EndsDuringALook:
    """A run store holding a run up to its first task's start. A look's read of that
    task lets the rest happen (the second task's lines and events, the run's end) and
    returns only once the follow's watch has read the end: the end is noted while the
    look reads."""

    def __init__(self, inner: MemoryRunLog, rest: list[Event], lines: list[LogLine]) -> None:
        self._inner = inner
        self._rest, self._lines = rest, lines
        self._end_read = asyncio.Event()

    async def read(self, run_id: str, after: int = 0, *, limit: int | None = None) -> list[Event]:
        events = await self._inner.read(run_id, after, limit=limit)
        if any(isinstance(event, RunCompleted) for event in events):
            self._end_read.set()
        return events

    async def page_lines(
        self, run_id: str, task: str | None = None, *args: Any, **kwargs: Any
    ) -> LogPage:
        if task is not None and self._rest:  # a look, not the read of what was stored
            await self._inner.write_lines(self._lines)
            rest, self._rest = self._rest, []
            await self._inner.append(run_id, rest)
            async with asyncio.timeout(10):
                await self._end_read.wait()
        return await self._inner.page_lines(run_id, task, *args, **kwargs)

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


async def test_following_lines_reads_what_ended_while_its_last_look_read() -> None:
    """The run is made once, in memory, for its events and lines: the race is in the
    client's follow, which reads them from a store of its own."""
    workflow = flow("""
        name: two
        tasks:
          - name: first
            script: echo one
          - name: second
            depends: [first]
            script: echo two
    """)
    async with EmbeddedEngine(workers=2) as engine:
        run_id = await engine.client.submit(workflow, {})
        await engine.client.watch(run_id, timeout=30)
        events = await engine.store.read(run_id)
        lines = await engine.store.read_lines(run_id)
    split = 1 + next(
        n for n, e in enumerate(events) if isinstance(e, TaskStarted) and e.task == "first"
    )
    store = MemoryRunLog()
    await store.append(run_id, events[:split])
    await store.write_lines([line for line in lines if line.task == "first"])
    held = EndsDuringALook(store, events[split:], [ln for ln in lines if ln.task == "second"])
    client = Client(held)  # type: ignore[arg-type]

    got = [read async for read in client.follow_lines(run_id, every=0.01)]

    assert sorted(line.text for read in got for line in read.lines) == ["one", "two"]
