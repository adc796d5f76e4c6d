"""The run page says what a run was given, and the workflows page what a run may be
given: parameters as text, secrets by name, the start form filled with the defaults."""

from __future__ import annotations

import html
import json

from engine.state.subflows import child_run_id
from tests.server.conftest import Server

GIVEN = """
name: given
params:
  label: {type: str, description: "shown <b>as text</b>"}
  token: {from_env: DEPLOY_TOKEN}
  size: {type: int, default: 3}
  tag: {type: str, default: "</textarea><script>alert(1)</script>"}
tasks:
  - name: t
    script: "true"
"""


async def test_the_run_page_shows_the_parameters_as_text(server: Server) -> None:
    await server.register(GIVEN)
    label = "<img src=x onerror=alert(1)>" + "y" * 200
    answer = await server.http.post(
        "/api/v1/runs", json={"workflow": "given", "params": {"label": label}}
    )
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["run_id"]
    await server.engine.client.watch(run_id, timeout=10)
    page = (await server.http.get(f"/runs/{run_id}")).text
    assert " by api · " in page
    shown = html.escape(label[:119] + "…", quote=False)
    assert f'<span class="mono value">{shown}</span>' in page
    assert "<img" not in page
    assert "&lt;secret from $DEPLOY_TOKEN&gt;" in page
    shown = (await server.http.get(f"/api/v1/runs/{run_id}")).json()
    assert shown["params"]["token"] == {"from_env": "DEPLOY_TOKEN"}
    assert shown["params"]["label"] == label


async def test_the_start_form_describes_each_parameter_and_holds_the_defaults(
    server: Server,
) -> None:
    await server.register(GIVEN)
    page = (await server.http.get("/workflows")).text
    form = page[page.index('aria-label="the parameters of given"') :]
    form = form[: form.index("</form>")]
    for said in (
        '<span class="mono">label</span> <span class="small">str, required</span>'
        " · shown &lt;b&gt;as text&lt;/b&gt;",
        '<span class="mono">token</span> <span class="small">secret from $DEPLOY_TOKEN</span>',
        '<span class="mono">size</span> <span class="small">int, default 3</span>',
    ):
        assert said in form
    area = form[form.index("<textarea") :]
    defaults = html.unescape(area[area.index(">") + 1 : area.index("</textarea>")])
    assert json.loads(defaults) == {"size": 3, "tag": "</textarea><script>alert(1)</script>"}
    assert "<script>" not in page


async def test_a_tasks_result_reads_as_json_in_one_line(server: Server) -> None:
    said = '{"ok": true, "none": null, "text": "<b>"}'
    await server.register(f"name: says\ntasks:\n  - name: t\n    script: |\n      echo '{said}'\n")
    answer = await server.http.post("/api/v1/runs", json={"workflow": "says"})
    run_id = answer.json()["run_id"]
    await server.engine.client.watch(run_id, timeout=10)
    for path in (f"/runs/{run_id}", f"/runs/{run_id}/tasks/t"):  # the page, the task's panel
        page = (await server.http.get(path)).text
        cell = page[page.index('<td class="reason">') + len('<td class="reason">') :]
        cell = cell[: cell.index("</td>")]
        assert html.unescape(cell) == '{"ok":true,"none":null,"text":"<b>"}', path
        assert "<b>" not in page


async def test_a_runs_outputs_are_on_its_page_and_in_the_api(server: Server) -> None:
    await server.register(
        "name: gives\ntasks:\n  - name: t\n    command: [echo, '{\"n\": 7}']\n"
        "outputs:\n  n: '{{ tasks.t.outputs.result.n }}'\n  tag: '<b>{{ run.workflow }}</b>'\n"
    )
    answer = await server.http.post("/api/v1/runs", json={"workflow": "gives"})
    run_id = answer.json()["run_id"]
    await server.engine.client.watch(run_id, timeout=10)
    shown = (await server.http.get(f"/api/v1/runs/{run_id}")).json()
    assert shown["outputs"] == {"n": 7, "tag": "<b>gives</b>"}
    page = (await server.http.get(f"/runs/{run_id}")).text
    said = page[page.index('aria-label="outputs"') :]
    said = said[: said.index("</p>")]
    assert '<span class="mono">n</span> = <span class="mono value">7</span>' in said
    assert "&lt;b&gt;gives&lt;/b&gt;" in said and "<b>" not in said


NESTED = """
name: nested
tasks:
  - name: inner
    items: [1, 2]
    workflow:
      params: {n: "{{ item }}"}
      spec:
        name: inner-flow
        params: {n: {type: int}}
        tasks:
          - name: t
            command: [echo, "{{ params.n }}"]
        outputs: {n: "{{ tasks.t.outputs.result }}"}
"""


async def test_a_workflow_steps_items_link_their_child_runs_and_back(server: Server) -> None:
    await server.register(NESTED)
    answer = await server.http.post("/api/v1/runs", json={"workflow": "nested"})
    run_id = answer.json()["run_id"]
    state = await server.engine.client.watch(run_id, timeout=10)
    assert state.status == "succeeded"
    panel = (await server.http.get(f"/runs/{run_id}/tasks/inner")).text
    children = [child_run_id(run_id, "inner", index, 1) for index in (0, 1)]
    for child in children:
        assert f'<a href="/runs/{child}">child run</a>' in panel
    page = (await server.http.get(f"/runs/{children[1]}")).text
    assert f'by <a href="/runs/{run_id}">inner of run {run_id[:12]}</a>' in page
    shown = (await server.http.get(f"/api/v1/runs/{children[1]}")).json()
    assert shown["outputs"] == {"n": 2} and shown["trigger"] == f"parent:{run_id}"


async def test_the_run_list_hides_child_runs_when_asked_and_links_them_to_their_parent(
    server: Server,
) -> None:
    await server.register(NESTED)
    answer = await server.http.post("/api/v1/runs", json={"workflow": "nested"})
    run_id = answer.json()["run_id"]
    await server.engine.client.watch(run_id, timeout=10)
    children = {child_run_id(run_id, "inner", index, 1) for index in (0, 1)}

    every = (await server.http.get("/api/v1/runs")).json()["items"]
    assert {r["run_id"] for r in every} == {run_id, *children}
    assert {r["run_id"]: r["parent_run"] for r in every} == {
        run_id: None,
        **{child: run_id for child in children},
    }
    top = (await server.http.get("/api/v1/runs?top_level=true")).json()["items"]
    assert [r["run_id"] for r in top] == [run_id]

    page = (await server.http.get("/runs")).text
    for child in children:
        assert f'<a href="/runs/{child}"' in page
    assert page.count(f'<a href="/runs/{run_id}" class="mono" title="the run whose') == 2
    hidden = (await server.http.get("/runs?top_level=true")).text
    assert not any(f'href="/runs/{child}"' in hidden for child in children)
    assert f'<a href="/runs/{run_id}"' in hidden
    # The page keeps the choice when it refreshes itself.
    assert "top_level=true" in hidden[hidden.index('id="runs"') :].split(">")[0]
