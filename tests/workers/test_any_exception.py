"""Whatever a Python step raises (StopIteration, SystemExit, ...) fails that attempt with
its traceback; nothing hangs and the worker lives on."""

from __future__ import annotations

import asyncio
import textwrap

import pytest

from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine


@pytest.mark.parametrize("timeout", [None, "30s"], ids=["in-a-thread", "in-a-child-process"])
async def test_every_exception_fails_its_attempt(timeout: str | None) -> None:
    limit = f"timeout: {timeout}" if timeout else ""
    text = f"""
    name: raising
    tasks:
      - name: stops
        python: teststeps:stop_iteration
        {limit}
        continue_on_failure: true
      - name: exits
        python: teststeps:exits
        {limit}
        continue_on_failure: true
      - name: async_stops
        python: teststeps:async_stop_iteration
        continue_on_failure: true
      - name: after
        depends: [stops, exits, async_stops]
        trigger_rule: all_done
        python: teststeps:add
        args: {{a: 1, b: 2}}
    """
    workflow = parse_workflow(textwrap.dedent(text))
    async with EmbeddedEngine(workers=4) as engine:
        state = await asyncio.wait_for(engine.run(workflow, {}), 30)
        lines = await engine.client.lines(state.run_id)
    errors = {name: state.nodes[name].instances[0].error for name in ("stops", "exits")}
    assert errors["stops"] == "StopIteration: "
    assert errors["exits"] == "SystemExit: 3"
    assert "StopIteration" in (state.nodes["async_stops"].instances[0].error or "")
    assert state.nodes["after"].outputs()["result"] == 3  # the worker lived on
    traces = [ln.text for ln in lines if ln.task == "stops" and ln.stream == "stderr"]
    assert any("Traceback" in t for t in traces) and any("next(iter([]))" in t for t in traces)
    # From the step's own code on: the engine's frames that called it say nothing.
    called_from = [t for t in traces if t.lstrip().startswith("File ")]
    assert called_from and all("teststeps.py" in t for t in called_from), called_from


def test_run_workflow_is_quiet_unless_something_is_wrong() -> None:
    import subprocess
    import sys
    from pathlib import Path

    script = textwrap.dedent(
        """
        from contracts.validation import parse_workflow
        from conveyor.testing import run_workflow
        wf = parse_workflow("name: q\\ntasks: [{name: a, script: echo hi}]")
        result = run_workflow(wf)
        print("status", result.state.status)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "status succeeded"
    assert "run completed" not in done.stdout + done.stderr
