"""A coordinator's or worker's metrics port: loopback unless told, a token beyond it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from contracts.errors import InvalidInput
from conveyor.metricsport import TOKEN_VARIABLE, MetricsPort


@pytest.fixture
def ports() -> Iterator[list[MetricsPort]]:
    opened: list[MetricsPort] = []
    yield opened
    for port in opened:
        port.close()


def test_loopback_serves_metrics_without_a_token(ports: list[MetricsPort]) -> None:
    port = MetricsPort(0)
    ports.append(port)
    answer = httpx.get(f"http://127.0.0.1:{port.port}/metrics")
    assert answer.status_code == 200 and "python_gc_objects_collected_total" in answer.text


def test_a_token_is_asked_for_and_checked(ports: list[MetricsPort]) -> None:
    port = MetricsPort(0, "127.0.0.1", "s3cret-metrics")
    ports.append(port)
    url = f"http://127.0.0.1:{port.port}/metrics"
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "s3cret-metrics"}):
        refused = httpx.get(url, headers=headers)
        assert refused.status_code == 401 and "python_gc" not in refused.text
    allowed = httpx.get(url, headers={"authorization": "Bearer s3cret-metrics"})
    assert allowed.status_code == 200 and "python_gc_objects_collected_total" in allowed.text


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.1.2.3", "metrics.example"])
def test_beyond_loopback_without_a_token_is_refused(address: str) -> None:
    with pytest.raises(InvalidInput, match=TOKEN_VARIABLE):
        MetricsPort(0, address)


def test_every_address_with_a_token(ports: list[MetricsPort]) -> None:
    port = MetricsPort(0, "0.0.0.0", "s3cret-metrics")
    ports.append(port)
    answer = httpx.get(f"http://127.0.0.1:{port.port}/metrics")
    assert answer.status_code == 401


@pytest.mark.parametrize("role", ["coordinator", "worker"])
def test_the_command_refuses_before_it_connects(role: str, tmp_path: Path) -> None:
    """Nothing starts: the refusal comes before the broker is asked for (none runs here)."""
    env = {k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            role,
            "--metrics-port",
            "9",
            "--metrics-address",
            "0.0.0.0",
            "--amqp-url",
            "amqp://guest:guest@127.0.0.1:1/",
            "--redis-url",
            "redis://127.0.0.1:1/0",
        ],
        cwd=tmp_path,
        env={**env, "CONVEYOR_HOME": str(tmp_path / ".conveyor")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert TOKEN_VARIABLE in done.stderr
