"""The pipelines ported from Prefect, Dagster and Airflow, on real RabbitMQ and Redis:
the same results as in-process, DataFrames and objects crossing through the store."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.validation import resolve_params
from tests.e2e.test_examples_both_modes import EXAMPLES, outcome, run_distributed
from workers.artifacts import FsspecArtifactStore

sys.path.insert(0, str(EXAMPLES))
from branching import OPTIONS, branch_python_operator_decorator
from devto_etl import etl
from dynamic_pieces import fan_in, process_pieces
from fake_devto import FakeDevto
from regional_models import train

from conveyor.embedded import EmbeddedEngine


@pytest.fixture
def devto() -> Iterator[FakeDevto]:
    server = FakeDevto().start()
    yield server
    server.shutdown()
    server.server_close()


async def embedded(workflow: Any, params: dict[str, Any], store: FsspecArtifactStore) -> Any:
    async with EmbeddedEngine(workers=2, artifacts=store) as engine:
        return await engine.run(workflow.spec, resolve_params(workflow.spec, params))


@pytest.mark.parametrize(
    ("workflow", "params"),
    [(process_pieces, {"first": "a", "last": "j"}), (fan_in, {}), (train, {})],
    ids=["dagster-dynamic", "dagster-fan-in", "regional-models"],
)
async def test_ported_pipelines_give_the_same_results_distributed(
    workflow: Any, params: dict[str, Any], amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    store = FsspecArtifactStore(tmp_path / "artifacts")
    local = await embedded(workflow, params, store)
    remote = await run_distributed(
        amqp_url, redis_url, workflow.spec, resolve_params(workflow.spec, params), store
    )
    assert local.status == "succeeded", local.reason

    def comparable(state: Any) -> dict[str, Any]:
        # Stored values (the pickled models) are references to different objects.
        return {k: v for k, v in outcome(state).items() if k != "fit"}

    assert comparable(remote) == comparable(local)


async def test_the_etl_runs_distributed(
    devto: FakeDevto, amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "articles.csv"
    params = {"api_base": devto.api_base, "pages": 3, "output_file": str(out)}
    state = await run_distributed(
        amqp_url,
        redis_url,
        etl.spec,
        resolve_params(etl.spec, params),
        FsspecArtifactStore(tmp_path / "artifacts"),
    )
    assert state.status == "succeeded", state.reason
    assert state.nodes["save_csv"].outputs()["result"] == 75
    with out.open() as written:
        assert len(list(csv.DictReader(written))) == 75


async def test_the_branches_run_distributed(amqp_url: str, redis_url: str, tmp_path: Path) -> None:
    spec = branch_python_operator_decorator.spec
    state = await run_distributed(amqp_url, redis_url, spec, {}, None)
    assert state.status == "succeeded", state.reason
    for prefix in ("branch_", "ext_py_"):
        ran = [o for o in OPTIONS if state.nodes[f"{prefix}{o}"].status == "succeeded"]
        assert len(ran) == 1
    assert state.nodes["join_ext_py"].status == "succeeded"


def test_the_etl_runs_from_the_command_line(devto: FakeDevto, tmp_path: Path) -> None:
    """As its docstring says to run it, from the examples folder."""
    out = tmp_path / "articles.csv"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "run",
            "devto_etl:etl",
            "-p",
            f"api_base={devto.api_base}",
            "-p",
            f"output_file={out}",
            "-p",
            "pages=2",
        ],
        cwd=EXAMPLES,
        env={**os.environ, "CONVEYOR_HOME": str(tmp_path / "home"), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "<stored parquet" in done.stdout
    with out.open() as written:
        assert len(list(csv.DictReader(written))) == 60
