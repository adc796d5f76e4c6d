"""Bad workflows get errors naming the file, the path in the document, the line and the problem."""

from __future__ import annotations

import gc
import json
import textwrap
from typing import Any

import pytest

from contracts.errors import InvalidInput
from contracts.params import params_from_yaml
from contracts.spec import Workflow, json_schema
from contracts.validation import (
    coerce_param,
    load_workflow,
    parse_workflow,
    resolve_params,
    upstream_names,
    workflow_from_data,
)


def parse(text: str) -> Workflow:
    return parse_workflow(textwrap.dedent(text), source="wf.yaml")


def problems_of(text: str) -> list[str]:
    with pytest.raises(InvalidInput) as info:
        parse(text)
    return [p.render("wf.yaml") for p in info.value.problems]


BAD = [
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
            colour: blue
        """,
        "wf.yaml:6, tasks[0].colour: unknown field",
        id="unknown-field",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            scrpt: echo
        """,
        "wf.yaml:5, tasks[0].scrpt: unknown field (did you mean 'script'?)",
        id="misspelt-field-named",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
            retry: {limit: 2, backoff: {dealy: 1s}}
        """,
        "wf.yaml:6, tasks[0].retry.backoff.dealy: unknown field (did you mean 'delay'?)",
        id="misspelt-nested-field-named-from-its-own-model",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: {source: echo, name: b}
        """,
        # 'name' is a field of a task, not of a script: nothing close is offered.
        "wf.yaml:5, tasks[0].script.name: unknown field",
        id="a-field-of-another-model-is-not-offered",
    ),
    pytest.param(
        """
        name: x
        params:
          size: {type: int, defualt: 3}
        tasks:
          - name: a
            script: echo
        """,
        "wf.yaml:4, params.size: unknown parameter key 'defualt' (did you mean 'default'?):"
        " a parameter has default, description, from_env, secret, type; a dict default with"
        " a 'type' key is written {type: dict, default: {...}}",
        id="misspelt-parameter-key-not-taken-for-a-dict-default",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
          - name: a
            script: echo
        """,
        "wf.yaml:6, tasks[1].name: duplicate task name 'a' (also tasks[0])",
        id="duplicate-name",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            depends: [ghost]
            script: echo
        """,
        "wf.yaml:5, tasks[0].depends[0]: unknown dependency 'ghost'",
        id="unknown-dependency",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            depends: [c]
            script: echo
          - name: b
            depends: [a]
            script: echo
          - name: c
            depends: [b]
            script: echo
        """,
        "dependency cycle: a -> b -> c -> a",
        id="cycle",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
            retry: {limit: many}
        """,
        "wf.yaml:6, tasks[0].retry.limit: Input should be a valid integer",
        id="wrong-type",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            command: [echo, "{{ params.missing }}"]
        """,
        "tasks[0].command[1]: unknown parameter 'missing' in 'params.missing'",
        id="unknown-param-reference",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
          - name: b
            command: [echo, "{{ tasks.a.outputs.result }}"]
        """,
        "wf.yaml:7, tasks[1].command[1]: task 'a' is not upstream of 'b' (add it to depends)",
        id="reference-not-upstream",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
          - name: b
            depends: [a]
            command: [echo, "{{ tasks.a.outputs.nope }}"]
        """,
        "task 'a' has no output 'nope'",
        id="unknown-output",
    ),
    pytest.param(
        """
        name: x
        params: {size: 3}
        tasks:
          - name: make
            script: echo
          - name: use
            depends: [mkae]
            command: [echo, "{{ params.sise }}"]
        """,
        "wf.yaml:8, tasks[1].depends[0]: unknown dependency 'mkae' (did you mean 'make'?)",
        id="misspelt-dependency-named",
    ),
    pytest.param(
        """
        name: x
        params: {size: 3}
        tasks:
          - name: make
            script: echo
            outputs: {count: count.txt}
          - name: use
            depends: [make]
            command:
              - "{{ params.sise }}"
              - "{{ tasks.mkae.outputs.result }}"
              - "{{ tasks.make.output.result }}"
              - "{{ tasks.make.outputs.cuont }}"
              - "{{ tasks.make.zzz }}"
        """,
        [
            "wf.yaml:11, tasks[1].command[0]: unknown parameter 'sise' (did you mean 'size'?)"
            " in 'params.sise'",
            "wf.yaml:12, tasks[1].command[1]: unknown task 'mkae' (did you mean 'make'?)"
            " in 'tasks.mkae.outputs.result'",
            "wf.yaml:13, tasks[1].command[2]: unknown task field 'output' (did you mean"
            " 'outputs'?) in 'tasks.make.output.result'",
            "wf.yaml:14, tasks[1].command[3]: task 'make' has no output 'cuont' (did you mean"
            " 'count'?) in 'tasks.make.outputs.cuont'",
            "wf.yaml:15, tasks[1].command[4]: unknown task field 'zzz' (known: artifacts,"
            " attempts, outputs, state) in 'tasks.make.zzz'",
        ],
        id="misspelt-references-named",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
            when: "params.x >"
        """,
        "wf.yaml:6, tasks[0].when: invalid expression 'params.x >': invalid syntax",
        id="bad-expression",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
            when: "__import__('os').system('true')"
        """,
        "only the built-in functions can be called",
        id="unsafe-expression",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            command: [echo, "{{ item }}"]
        """,
        "'item' is only defined in tasks with 'items'",
        id="item-outside-fanout",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
            command: [echo]
        """,
        "a task needs exactly one of script, command, python, container, http, amqp, wait, workflow"
        " (found: script, command)",
        id="two-step-kinds",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
            timeout: soon
        """,
        "invalid duration 'soon'",
        id="bad-duration",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
            script: echo
            script: echo again
        """,
        "wf.yaml:6, tasks[0].script: duplicate key 'script' (first defined on line 5)",
        id="duplicate-key",
    ),
    pytest.param(
        """
        name: x
        tasks:
          - name: a
           script: echo
        """,
        "wf.yaml:5: malformed YAML",
        id="malformed-yaml",
    ),
    pytest.param(
        """
        name: x
        params:
          n: {type: int, default: three}
        tasks:
          - name: a
            script: echo
        """,
        "params.n: expected int, got str 'three'",
        id="default-wrong-type",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD)
def test_bad_workflows_are_rejected_with_location(text: str, expected: str | list[str]) -> None:
    rendered = problems_of(text)
    if isinstance(expected, list):  # every problem, in order
        assert rendered == expected
    else:
        assert any(expected in line for line in rendered), rendered


def test_all_problems_are_reported_not_just_the_first() -> None:
    rendered = problems_of(
        """
        name: x
        tasks:
          - name: a
            depends: [ghost]
            script: echo
          - name: b
            depends: [phantom]
            script: echo
        """
    )
    assert len(rendered) == 2
    assert "ghost" in rendered[0] and "phantom" in rendered[1]


def test_missing_required_field_is_named() -> None:
    rendered = problems_of("name: x\n")
    assert rendered == ["wf.yaml:1, tasks: required field is missing"]


def test_a_valid_workflow_with_every_feature_parses() -> None:
    workflow = parse(
        """
        name: full
        params:
          n: 3
          mode: {type: str, default: fast}
          tags: {type: list}
        timeout: 1m
        tasks:
          - name: a
            command: [echo, "{{ params.n }}"]
            env: {MODE: "{{ params.mode }}"}
            outputs: {count: count.txt}
            retry: 2
          - name: b
            depends: [a]
            items: "{{ tasks.a.outputs.result }}"
            parallelism: 2
            python: mod.sub:fn
            args: {x: "{{ item }}", i: "{{ index }}"}
            timeout: 1m30s
          - name: c
            depends: [b]
            when: tasks.b.state == 'succeeded' and len(tasks.b.outputs.result) > 0
            trigger_rule: all_done
            continue_on_failure: true
            env: {COUNT: "{{ tasks.a.outputs.count }}"}
            script: {interpreter: python, source: "import os; print(os.environ['COUNT'])"}
        """
    )
    assert workflow.timeout == 60
    assert workflow.params["tags"].required
    assert not workflow.params["n"].required and workflow.params["n"].type == "int"
    assert workflow.tasks[0].retry.limit == 2
    assert workflow.tasks[1].timeout == 90
    assert workflow.tasks[2].script is not None and workflow.tasks[2].script.interpreter == "python"


def test_load_workflow_reports_a_missing_file(tmp_path: object) -> None:
    with pytest.raises(InvalidInput) as info:
        load_workflow("/nonexistent/wf.yaml")
    assert "/nonexistent/wf.yaml" in str(info.value) and "cannot read workflow" in str(info.value)


def test_json_schema_describes_tasks_and_durations() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    assert "tasks" in schema["properties"]
    assert "1m30s" in text  # the duration description
    assert schema["additionalProperties"] is False


WF = parse_workflow(
    textwrap.dedent(
        """
        name: p
        params:
          n: {type: int, default: 1}
          ratio: {type: float, default: 0.5}
          on: {type: bool, default: false}
          names: {type: list, default: []}
          who: {type: str}
        tasks:
          - name: a
            script: echo
        """
    )
)


def test_params_are_coerced_from_the_command_line() -> None:
    values = resolve_params(
        WF, {"n": "5", "ratio": "2", "on": "yes", "names": '["a","b"]', "who": "me"}, from_text=True
    )
    assert values == {"n": 5, "ratio": 2.0, "on": True, "names": ["a", "b"], "who": "me"}


def test_param_errors_are_all_reported_before_anything_runs() -> None:
    with pytest.raises(InvalidInput) as info:
        resolve_params(WF, {"n": "five", "bogus": "1"}, from_text=True, source="-p")
    text = str(info.value)
    assert "-p, n: expected int, got 'five'" in text
    assert "unknown parameter 'bogus'" in text
    assert "who: missing required parameter" in text


def test_a_parameters_file_is_data_checked_with_its_lines() -> None:
    text = "n: 5\nnames: [a, b]\nwho: '[1]'\n"
    assert params_from_yaml(WF, text, "p.yaml") == {"n": 5, "names": ["a", "b"], "who": "[1]"}
    assert params_from_yaml(WF, "", "p.yaml") == {}
    with pytest.raises(InvalidInput) as info:
        params_from_yaml(WF, "n: '5'\nbogus: 1\non: true\n", "p.yaml")
    assert info.value.message.splitlines() == [
        "p.yaml:1, n: expected int, got str '5'",  # data, not text: never converted
        "p.yaml:2, bogus: unknown parameter 'bogus' (known: n, names, on, ratio, who)",
    ]
    with pytest.raises(InvalidInput, match=r"p\.yaml:1: a parameters file is a mapping"):
        params_from_yaml(WF, "[n, 5]", "p.yaml")


def test_command_line_text_is_converted_and_file_data_is_not() -> None:
    values = resolve_params(WF, {"n": "7", "names": "[1]", "who": "[1]"}, from_text={"n", "names"})
    assert (values["n"], values["names"], values["who"]) == (7, [1], "[1]")
    with pytest.raises(InvalidInput) as info:
        resolve_params(WF, {"n": "seven", "names": "[1]"}, from_text={"names"}, source="-p")
    assert info.value.message.splitlines() == [
        "-p, n: expected int, got str 'seven'",
        "-p, who: missing required parameter",
    ]


def test_typed_params_reject_wrong_python_types() -> None:
    with pytest.raises(InvalidInput, match="expected int"):
        resolve_params(WF, {"n": "3", "who": "x"})


@pytest.mark.parametrize(
    ("kind", "raw", "value"),
    [
        ("int", "-3", -3),
        ("float", "1e3", 1000.0),
        ("bool", "off", False),
        ("dict", '{"a":1}', {"a": 1}),
        ("any", "plain", "plain"),
    ],
)
def test_coerce_param(kind: str, raw: str, value: object) -> None:
    assert coerce_param(kind, raw) == value  # type: ignore[arg-type]


def test_upstream_names_are_the_tasks_a_task_reads() -> None:
    workflow = parse_workflow(
        """
        name: refs
        tasks:
          - name: a
            command: [echo, a]
          - name: b-c
            command: [echo, b]
          - name: d
            depends: [a, b-c]
            when: tasks.a.state == 'succeeded'
            command: [echo, "{{ tasks['b-c'].outputs.result }}", "{{ params }}"]
          - name: e
            depends: [d]
            command: [echo, "{{ to_json(tasks) }}"]
          - name: f
            depends: [d]
            command: [echo, f]
        """.replace("\n        ", "\n")
    )
    by_name = {t.name: t for t in workflow.tasks}
    assert upstream_names(by_name["d"]) == {"a", "b-c"}
    assert upstream_names(by_name["e"]) is None  # the whole of tasks
    assert upstream_names(by_name["f"]) == frozenset()


def test_a_long_chain_is_checked_without_recursion_and_the_task_count_is_bounded() -> None:
    from contracts.spec import MAX_TASKS

    def chain(n: int) -> dict[str, Any]:
        tasks = [
            {"name": f"t{i}", "script": "true", **({"depends": [f"t{i + 1}"]} if i < n - 1 else {})}
            for i in range(n)
        ]
        return {"name": "chain", "tasks": tasks}

    assert len(workflow_from_data(chain(MAX_TASKS)).tasks) == MAX_TASKS  # declared in reverse
    with pytest.raises(InvalidInput, match=f"at most {MAX_TASKS} items"):
        workflow_from_data(chain(MAX_TASKS + 1))
    looped = chain(1500)
    looped["tasks"][-1]["depends"] = ["t0"]
    with pytest.raises(InvalidInput, match="dependency cycle: t0 -> t1499 -> t1498"):
        workflow_from_data(looped)


def test_a_mistake_written_twice_in_one_field_is_said_once() -> None:
    said = problems_of(
        """
        name: x
        tasks:
          - name: a
            items: [1, 2]
            script: echo {{ item }}; test {{ item }} -ne 2
        """
    )
    assert len(said) == 1 and "'{{ item }}' would splice a value into code" in said[0]


def test_a_broken_graph_does_not_hide_the_mistakes_in_expressions() -> None:
    said = problems_of(
        """
        name: x
        tasks:
          - name: a
            depends: [b]
            script: echo a
          - name: b
            depends: [a]
            script: echo b
          - name: c
            depends: [missing]
            items: "{{ range( }}"
            env: {N: "{{ params.nope }}"}
            script: echo "$N"
        """
    )
    assert said == [
        "wf.yaml:11, tasks[2].depends[0]: unknown dependency 'missing'",
        "wf.yaml:5, tasks[0].depends: dependency cycle: a -> b -> a",
        "wf.yaml:12, tasks[2].items: invalid expression 'range(': '(' was never closed",
        "wf.yaml:13, tasks[2].env.N: unknown parameter 'nope' in 'params.nope'",
    ]


def test_a_second_task_of_a_name_is_said_once_not_checked_against_the_first() -> None:
    said = problems_of(
        """
        name: x
        tasks:
          - name: a
            script: echo a
          - name: a
            script: echo {{ tasks.a.outputs.result }}
        """
    )
    assert said == ["wf.yaml:6, tasks[1].name: duplicate task name 'a' (also tasks[0])"]


def test_checking_a_workflow_leaves_nothing_for_the_cycle_collector() -> None:
    # A server checks the workflow of every run it is sent: garbage in reference cycles
    # waits for the collector, whose passes stall every request in flight.
    data = {
        "name": "hooked",
        "params": {"n": {"type": "int"}},
        "tasks": [
            {"name": "a", "python": "m:f", "args": {"n": "{{ params.n }}", "l": ["{{ 1 }}"]}},
            {
                "name": "b",
                "script": "echo $A",
                "env": {"A": "{{ tasks.a.state }}"},
                "depends": ["a"],
            },
        ],
    }
    workflow_from_data(data, source="warm-up")  # whatever is built once per process
    gc.collect()
    gc.disable()
    try:
        workflow = workflow_from_data(data, source="wf.yaml")
        assert workflow.tasks[1].name == "b"
        del workflow
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_a_dict_default_is_written_short_or_with_type_dict() -> None:
    workflow = parse(
        """
        name: x
        params:
          size: 3
          limits: {cpu: 2}
          shape: {type: dict, default: {type: circle, radius: 1}}
        tasks:
          - name: a
            script: echo
        """
    )
    params = workflow.params
    assert (params["size"].type, params["size"].default) == ("int", 3)
    assert (params["limits"].type, params["limits"].default) == ("dict", {"cpu": 2})
    assert (params["shape"].type, params["shape"].default) == (
        "dict",
        {"type": "circle", "radius": 1},
    )


NIGHTLY = """
name: nightly
params: {{day: {{type: str, default: ""}}, n: {{type: int, default: 0}}}}
triggers:
  - name: midnight
    schedule: {{cron: "0 0 * * *", params: {params}}}
tasks:
  - name: a
    script: echo
"""


@pytest.mark.parametrize(
    "params",
    [
        '{day: "{{ nominal[:10] }}"}',
        '{day: "trigger"}',
        '{day: "2026-01-01"}',
        '{day: "every night"}',
        '{day: "trigger-happy"}',
        "{n: 5}",
    ],
)
def test_schedule_params_that_are_text_or_templates_pass(params: str) -> None:
    assert parse(NIGHTLY.format(params=params)).triggers[0].name == "midnight"


def test_a_schedule_param_written_as_a_bare_expression_is_refused_with_the_fix() -> None:
    with pytest.raises(InvalidInput) as info:
        parse(NIGHTLY.format(params='{day: "nominal[:10]"}'))
    text = str(info.value)
    assert "triggers[0].schedule.params.day" in text
    assert "'nominal[:10]' would be passed as this text" in text
    assert "write '{{ nominal[:10] }}'" in text


def test_a_submission_is_checked_whole_each_time_its_workflow_is_taken_up_again() -> None:
    from contracts.errors import ConveyorError
    from contracts.validation import check_submission

    flow = {
        "name": "again",
        "params": {"n": {"type": "int"}},
        "tasks": [{"name": "t", "command": ["echo", "{{ params.n }}"]}],
    }
    check_submission("r1", flow, {"n": 1})
    # The workflow was checked before; the parameters of this run are checked all the same.
    with pytest.raises(ConveyorError, match="params, n: expected int"):
        check_submission("r2", flow, {"n": "many"})
    broken = {**flow, "tasks": [{"name": "t", "command": ["echo", "{{ tasks.nope.outputs }}"]}]}
    for run_id in ("r3", "r4"):  # refused every time, saying which run
        with pytest.raises(ConveyorError, match=f"run {run_id}.*nope") as refused:
            check_submission(run_id, broken, {"n": 1})
        assert not refused.value.retryable


def test_runs_of_one_workflow_share_its_model_and_no_other_run_does() -> None:
    from contracts.submitted import workflow_of

    data = {"name": "shared", "tasks": [{"name": "a", "command": ["true"]}]}
    first = workflow_of(data)
    assert workflow_of(json.loads(json.dumps(data))) is first
    other = workflow_of({"name": "shared", "tasks": [{"name": "b", "command": ["true"]}]})
    assert other is not first and other.tasks[0].name == "b"
    with pytest.raises(Exception, match="frozen"):  # shared, so nobody may change it
        first.tasks[0].name = "changed"  # type: ignore[misc]
