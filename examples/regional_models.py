"""Train one model per region, in the shape of Prefect's and Dagster's ML examples.

Load each region's observations (cached for a day: a re-run within the day reads
nothing again), fit a model per region (an ordinary Python object, pickled through
the artifact store), then compare the models in one report.

    conveyor run regional_models:train -p regions='["north", "south"]'
    conveyor run regional_models:train      # again: the loads come from the cache

Shows: a fan-out over a parameter list, ``cache_key_fn``/``cache_expiration``, a
result JSON cannot carry (``result_serializer="pickle"``), pydantic configuration,
and a fan-in of objects.
"""

from __future__ import annotations

import math
import random
import statistics
from datetime import timedelta

from pydantic import BaseModel

from conveyor import task, task_input_hash, workflow


class Training(BaseModel):
    samples: int = 200
    noise: float = 0.5
    seed: int = 7


class Observations(BaseModel):
    region: str
    x: list[float]
    y: list[float]


class LineModel:
    """y = slope * x + intercept, fitted by least squares (no library needed)."""

    def __init__(self, region: str, slope: float, intercept: float, error: float) -> None:
        self.region = region
        self.slope = slope
        self.intercept = intercept
        self.error = error

    def predict(self, x: float) -> float:
        return self.slope * x + self.intercept


@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(days=1), retries=2)
def load(region: str, training: Training) -> Observations:
    """Stands in for a slow query: the same region and settings give the same rows."""
    rng = random.Random(f"{region}/{training.seed}")
    slope = 1 + sum(map(ord, region)) % 7
    x = [rng.uniform(0, 10) for _ in range(training.samples)]
    y = [slope * v + 3 + rng.gauss(0, training.noise) for v in x]
    print(f"loaded {len(x)} observations for {region}")
    return Observations(region=region, x=x, y=y)


@task(result_serializer="pickle")
def fit(observations: Observations) -> LineModel:
    mean_x, mean_y = statistics.fmean(observations.x), statistics.fmean(observations.y)
    sxx = sum((v - mean_x) ** 2 for v in observations.x)
    sxy = sum(
        (a - mean_x) * (b - mean_y) for a, b in zip(observations.x, observations.y, strict=True)
    )
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    residuals = [
        b - (slope * a + intercept) for a, b in zip(observations.x, observations.y, strict=True)
    ]
    error = math.sqrt(statistics.fmean(r * r for r in residuals))
    return LineModel(observations.region, slope, intercept, error)


class Report(BaseModel):
    best: str
    slopes: dict[str, float]
    errors: dict[str, float]
    forecast_at_10: dict[str, float]


@task
def compare(models: list[LineModel]) -> Report:
    return Report(
        best=min(models, key=lambda m: m.error).region,
        slopes={m.region: round(m.slope, 2) for m in models},
        errors={m.region: round(m.error, 3) for m in models},
        forecast_at_10={m.region: round(m.predict(10), 1) for m in models},
    )


@workflow
def train(
    regions: list[str] = ["north", "south", "east", "west"],  # noqa: B006 (a default)
    training: Training = Training(),  # noqa: B008 (a default, as users write it)
) -> None:
    """Fit a model per region and compare them."""
    observations = load.map(regions, training=training)
    compare(fit.map(observations))
