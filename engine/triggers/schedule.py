"""Schedule math: when a schedule fires, what to catch up after downtime, and the run id
of each fire.

Pure: times come in as arguments. Cron expressions are read by cronsim, which gets
daylight-saving changes right (a 02:30 that does not exist fires once at 03:00; a
02:30 that happens twice fires once). A fire's run id derives from (workflow, trigger,
nominal time), so two schedulers, a restart or a failover that fire the same nominal
time produce the same run, which the coordinator records once.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from cronsim import CronSim

from contracts.errors import InvalidInput, Problem
from contracts.triggers import ScheduleTrigger, cron_problem, split_cron


class CatchUp(StrEnum):
    SKIP = "skip"
    """After downtime, fire nothing missed; go on from now."""
    LATEST = "latest"
    """Fire the latest missed time only."""
    ALL = "all"
    """Fire every missed time (within the window, up to the cap)."""


@dataclass(frozen=True)
class Schedule:
    cron: str | None = None
    every: float | None = None
    """Seconds between fires, counted from the epoch (so every replica agrees)."""
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        problems = []
        if (self.cron is None) == (self.every is None):
            problems.append(Problem("a schedule needs exactly one of cron and every"))
        if self.every is not None and self.every <= 0:
            problems.append(Problem("every must be positive"))
        try:
            ZoneInfo(self.timezone)
        except (ValueError, KeyError, OSError):
            problems.append(Problem(f"unknown time zone {self.timezone!r}"))
        if self.cron is not None:
            problem = cron_problem(self.cron)
            if problem:
                problems.append(Problem(problem))
        if problems:
            raise InvalidInput(problems, source="schedule")

    def fires(self, after: datetime) -> Iterator[datetime]:
        """Nominal fire times strictly after ``after``, in order (aware, UTC)."""
        if self.every is not None:
            step = self.every
            n = int(after.timestamp() // step) + 1
            while True:
                yield datetime.fromtimestamp(n * step, UTC)
                n += 1
        assert self.cron is not None
        seconds, minutes = split_cron(self.cron)
        start = after.astimezone(ZoneInfo(self.timezone))
        if seconds is None:
            for fire in CronSim(minutes, start):
                yield fire.astimezone(UTC)
            return
        # Six fields: the minutes that match, each at the listed seconds. Start a second
        # before the current minute so its own later seconds are found.
        begin = start.replace(second=0, microsecond=0) - timedelta(seconds=1)
        for minute in CronSim(minutes, begin):
            for second in sorted(seconds):
                fire = (minute + timedelta(seconds=second)).astimezone(UTC)
                if fire > after:
                    yield fire

    @classmethod
    def of(cls, trigger: ScheduleTrigger) -> Schedule:
        return cls(cron=trigger.cron, every=trigger.every, timezone=trigger.timezone)


def due(
    schedule: Schedule,
    last: datetime,
    now: datetime,
    *,
    catch_up: CatchUp = CatchUp.LATEST,
    window: timedelta = timedelta(days=1),
    cap: int = 100,
) -> list[datetime]:
    """The nominal times to fire now: those after ``last`` up to ``now``, as the policy
    says. Only times within ``window`` of now count; ``all`` fires at most ``cap``."""
    # Nothing before the window counts, so a long downtime costs no long walk.
    missed: deque[datetime] = deque(maxlen=cap)  # the latest ``cap``
    for fire in schedule.fires(max(last, now - window)):
        if fire > now:
            break
        missed.append(fire)
    if not missed:
        return []
    if catch_up == CatchUp.ALL:
        return list(missed)
    if catch_up == CatchUp.LATEST:
        return [missed[-1]]
    # SKIP: only a fire that is due right now (not one missed during downtime).
    return [missed[-1]] if now - missed[-1] < timedelta(seconds=1) else []


def fire_run_id(workflow: str, trigger: str, nominal: datetime) -> str:
    """The run a fire starts: the same for every replica that fires this nominal time."""
    stamp = nominal.astimezone(UTC).isoformat()
    return uuid.uuid5(uuid.NAMESPACE_URL, f"conveyor:schedule:{workflow}:{trigger}:{stamp}").hex
