"""Schedule math: fire times across daylight-saving changes, catching up, run ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from contracts.errors import InvalidInput
from engine.triggers.schedule import CatchUp, Schedule, due, fire_run_id

BERLIN = ZoneInfo("Europe/Berlin")


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def take(schedule: Schedule, after: datetime, n: int) -> list[datetime]:
    fires = schedule.fires(after)
    return [next(fires).astimezone(BERLIN) for _ in range(n)]


def test_a_nightly_cron_fires_once_a_day_across_both_daylight_saving_changes() -> None:
    nightly = Schedule(cron="30 2 * * *", timezone="Europe/Berlin")
    spring = take(nightly, local(2026, 3, 27, 12, 0), 3)
    # 02:30 does not exist on 29 March: it fires once, at 03:00.
    assert [f.strftime("%d %H:%M") for f in spring] == ["28 02:30", "29 03:00", "30 02:30"]
    autumn = take(nightly, local(2026, 10, 23, 12, 0), 3)
    # 02:30 happens twice on 25 October: it fires once.
    assert [f.strftime("%d %H:%M") for f in autumn] == ["24 02:30", "25 02:30", "26 02:30"]


def test_intervals_are_counted_from_the_epoch_so_every_replica_agrees() -> None:
    every = Schedule(every=10)
    after = datetime(2026, 1, 1, 0, 0, 3, tzinfo=UTC)
    fires = every.fires(after)
    assert [next(fires).second for _ in range(3)] == [10, 20, 30]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(CatchUp.SKIP, []), (CatchUp.LATEST, [9]), (CatchUp.ALL, [1, 2, 3, 4, 5, 6, 7, 8, 9])],
)
def test_catching_up_after_downtime(policy: CatchUp, expected: list[int]) -> None:
    every_minute = Schedule(cron="* * * * *")
    last = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    now = last + timedelta(minutes=9, seconds=30)  # down for nine nominal times
    fired = due(every_minute, last, now, catch_up=policy)
    assert [f.minute for f in fired] == expected


def test_catching_up_keeps_to_its_window_and_cap() -> None:
    every_second = Schedule(every=1)
    last = datetime(2025, 1, 1, tzinfo=UTC)  # a year of downtime: no year-long walk
    now = datetime(2026, 1, 1, tzinfo=UTC)
    fired = due(every_second, last, now, catch_up=CatchUp.ALL, window=timedelta(minutes=1), cap=5)
    assert [f.second for f in fired] == [56, 57, 58, 59, 0]
    assert fired[-1] == now


def test_a_fire_due_now_fires_under_every_policy() -> None:
    every_minute = Schedule(cron="* * * * *")
    now = datetime(2026, 1, 1, 12, 1, tzinfo=UTC)
    for policy in CatchUp:
        assert due(every_minute, now - timedelta(minutes=1), now, catch_up=policy) == [now]


def test_a_nominal_time_gives_one_run_id_whoever_fires_it() -> None:
    nominal = datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN)
    same = fire_run_id("etl", "nightly", nominal.astimezone(UTC))
    assert fire_run_id("etl", "nightly", nominal) == same
    assert fire_run_id("etl", "nightly", nominal + timedelta(days=1)) != same
    assert fire_run_id("etl", "hourly", nominal) != same


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cron": "61 * * * *"}, "bad cron expression"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({}, "exactly one of cron and every"),
        ({"every": -1}, "every must be positive"),
    ],
)
def test_bad_schedules_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        Schedule(**kwargs)  # type: ignore[arg-type]
