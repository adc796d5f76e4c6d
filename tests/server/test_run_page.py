"""The run page says what a run was given: its parameters, as text, secrets by name."""

from __future__ import annotations

import html

import pytest

from tests.server.conftest import Server

GIVEN = """
name: given
params:
  label: {type: str}
  token: {from_env: DEPLOY_TOKEN}
tasks:
  - name: t
    script: "true"
"""


async def test_the_run_page_shows_the_parameters_as_text(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEPLOY_TOKEN", "hunter2-is-the-value")
    await server.register(GIVEN)
    label = "<img src=x onerror=alert(1)>" + "y" * 200
    answer = await server.http.post(
        "/api/v1/runs", json={"workflow": "given", "params": {"label": label}}
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]
    await server.engine.client.watch(run_id, timeout=10)
    page = (await server.http.get(f"/runs/{run_id}")).text
    shown = html.escape(label[:119] + "…", quote=False)
    assert f'<span class="mono value">{shown}</span>' in page
    assert "<img" not in page
    assert "&lt;secret from $DEPLOY_TOKEN&gt;" in page
    assert "hunter2" not in page
