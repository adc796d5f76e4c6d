"""The pipelines ported from Prefect, Dagster and Airflow, run in-process.

(The same workflows run on RabbitMQ and Redis in tests/e2e/test_ported_examples.py.)
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from branching import OPTIONS, branch_python_operator_decorator
from devto_etl import etl
from dynamic_pieces import fan_in, process_pieces
from fake_devto import FakeDevto
from regional_models import LineModel, train

from conveyor.testing import FakeClock, run_workflow
from workers.artifacts import FsspecArtifactStore


@pytest.fixture
def devto() -> Iterator[FakeDevto]:
    server = FakeDevto(fail_first=frozenset({2})).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_etl_fetches_every_page_retrying_a_failure_and_writes_the_csv(
    devto: FakeDevto, tmp_path: Path
) -> None:
    out = tmp_path / "articles.csv"
    clock = FakeClock()
    params = {"api_base": devto.api_base, "pages": 3, "per_page": 30, "output_file": str(out)}
    result = run_workflow(etl, params, clock=clock)
    assert result.succeeded, result.reason
    assert result.attempts_of("fetch_page", index=1) == ["failed", "succeeded"]
    assert sorted(devto.requests) == [1, 2, 2, 3]
    assert result.task("save_csv").result == 75
    with out.open() as written:
        rows = list(csv.DictReader(written))
    assert len(rows) == 75 and rows[0]["user.username"] == "writer0"
    assert rows[74]["title"] == "Article 74"
    frame = result.task("to_dataframe").value  # the DataFrame, read back from Parquet
    assert list(frame.columns)[-1] == "user.username" and len(frame) == 75
    assert any("Fetching page 2" in line for line in result.task("fetch_page").log_text())


def test_the_etl_with_more_pages_than_articles_writes_what_there_is(
    devto: FakeDevto, tmp_path: Path
) -> None:
    out = tmp_path / "a.csv"
    params = {"api_base": devto.api_base, "pages": 5, "per_page": 30, "output_file": str(out)}
    result = run_workflow(etl, params)
    assert result.succeeded and result.task("save_csv").result == 75


def test_dynamic_pieces_fan_out_at_run_time_and_merge_in_order() -> None:
    result = run_workflow(process_pieces, {"first": "c", "last": "h"})
    assert result.succeeded
    assert result.task("compute_piece").result == list("CDEFGH")
    assert result.task("merge_and_analyze").result == "CDEFGH"


def test_a_list_of_outputs_is_one_fan_in() -> None:
    result = run_workflow(fan_in)
    assert result.task("sum_fan_in").result == 10
    assert fan_in.spec.task("sum_fan_in").depends == [f"return_one_{i}" for i in range(10)]


def test_one_random_branch_runs_in_each_stage_and_both_joins_run() -> None:
    for _ in range(3):
        result = run_workflow(branch_python_operator_decorator)
        assert result.succeeded, result.reason
        for prefix in ("branch_", "ext_py_"):
            ran = [o for o in OPTIONS if result.task(f"{prefix}{o}").state == "succeeded"]
            assert len(ran) == 1
            skipped = [o for o in OPTIONS if result.task(f"{prefix}{o}").state == "skipped"]
            assert sorted(ran + skipped) == OPTIONS
        chosen = next(o for o in OPTIONS if result.task(f"branch_{o}").state == "succeeded")
        assert result.task(f"follow_{chosen}").state == "succeeded"
        assert result.task("join").state == "succeeded"
        assert result.task("join_ext_py").state == "succeeded"


def test_a_failed_branch_choice_runs_no_path_and_no_join() -> None:
    result = run_workflow(branch_python_operator_decorator, failures={"branching": 1})
    assert result.status == "failed"
    assert all(result.task(f"branch_{o}").state == "skipped" for o in OPTIONS)
    assert result.task("join").state == "skipped"


def test_models_are_fitted_per_region_and_compared() -> None:
    result = run_workflow(train, {"regions": ["north", "south"]})
    assert result.succeeded, result.reason
    report = result.task("compare").result
    assert set(report["slopes"]) == {"north", "south"}
    # The data are made with slopes 1 + (sum of the name's letters) % 7, and little noise.
    assert report["slopes"] == {
        "north": pytest.approx(3, abs=0.1),
        "south": pytest.approx(4, abs=0.1),
    }
    models = result.task("fit").value
    assert all(isinstance(m, LineModel) for m in models)


def test_a_rerun_within_the_day_loads_nothing_again() -> None:
    store = FsspecArtifactStore(f"memory://models-{uuid.uuid4().hex}")
    first = run_workflow(train, artifacts=store)
    second = run_workflow(train, artifacts=store)
    assert second.task("compare").result == first.task("compare").result
    loads = second.task("load").log_text("system")
    assert sum("taken from the cache" in line for line in loads) == 4
    assert not any("loaded" in line for line in second.task("load").log_text("stdout"))
