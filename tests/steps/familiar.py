"""Python workflows written the way Prefect and Dagster users write them, for the tests."""

from __future__ import annotations

import dataclasses
import enum
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel

from conveyor import span, task, workflow


@task
def fetch(page: int) -> list[int]:
    return [page * 10, page * 10 + 1]


@task
def combine(pages: list[list[int]], extra: dict[str, int]) -> int:
    return sum(sum(page) for page in pages) + sum(extra.values())


@task(retries=3, retry_delay_seconds=[2, 5, 15])
def flaky_fetch(page: int) -> int:
    return page


@task
def announce(text: str) -> str:
    return text


@workflow
def fan_in() -> None:
    pages = [fetch(p) for p in range(1, 4)]
    combine(pages, {"bonus": fetch(9)[0]})


@workflow
def ordered() -> None:
    a = announce("a")
    b = announce.with_options(name="b", depends=[a])("b")
    c = announce.with_options(name="c")("c")
    d = announce.with_options(name="d")("d")
    [b, c] >> d
    a >> c


@workflow
def paged(pages: int = 3) -> None:
    fetched = fetch.map(span(1, pages + 1))
    combine(fetched, {"pages": pages * 100})


@task(branch=True)
def choose(pick: str) -> str:
    return f"path_{pick}"


@workflow
def branching(pick: str = "b", explode: bool = False) -> None:
    """Airflow's branch operator: one of several paths, then a join."""
    chosen = choose(pick)
    paths = [
        announce.with_options(name=f"path_{letter}", depends=[chosen])(letter) for letter in "abc"
    ]
    join = announce.with_options(name="join", trigger_rule="none_failed_min_one_success")
    paths >> join("joined")


class Mode(enum.Enum):
    FAST = "fast"
    CAREFUL = "careful"


class Settings(BaseModel):
    name: str
    limit: int = 10


@dataclasses.dataclass
class Summary:
    name: str
    where: str
    mode: str
    day: str


@task
def configure(settings: Settings, where: Path, mode: Mode, at: datetime) -> Summary:
    assert isinstance(settings, Settings) and isinstance(where, Path)
    assert isinstance(mode, Mode) and isinstance(at, datetime)
    return Summary(settings.name, str(where), mode.value, at.date().isoformat())


@task
def describe(summary: Summary) -> str:
    assert isinstance(summary, Summary)  # a dataclass result comes back as the dataclass
    return f"{summary.name} at {summary.where} ({summary.mode}, {summary.day})"


@workflow
def typed_config(
    settings: Settings = Settings(name="nightly"),  # noqa: B008 (a default, as users write it)
    where: Path = Path("/data/in"),
    mode: Mode = Mode.CAREFUL,
    at: datetime = datetime(2026, 12, 1, 2, 0, tzinfo=UTC),
) -> None:
    describe(configure(settings, where, mode, at))
