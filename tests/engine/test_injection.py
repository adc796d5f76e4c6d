"""Values from outside are data: pushed through every step kind, nothing they hold runs,
and each arrives byte for byte."""

from __future__ import annotations

import asyncio
import base64
import textwrap
from pathlib import Path

import pytest

from contracts.errors import InvalidInput
from contracts.validation import parse_workflow, resolve_params
from contracts.vocabulary import RunStatus
from conveyor.embedded import EmbeddedEngine
from engine.runlog.redis import RedisRunLog

PAYLOADS = {
    "semicolon": "x; touch {marker}",
    "subshell": "$(touch {marker})",
    "backticks": "`touch {marker}`",
    "newline": "x\ntouch {marker}\n",
    "quotes": "'\"; touch {marker}; echo \"'",
    "triple-quotes": "''' + __import__('os').system('touch {marker}') + '''",
    "python": "__import__('os').system('touch {marker}')",
    "long": "A" * 50_000 + "; touch {marker}",
}

SAFE = """
name: carry
params: {v: {type: str}}
tasks:
  - name: sh
    env: {V: "{{ params.v }}"}
    script: printf '%s' "$V" | base64 -w0
  - name: py-script
    env: {V: "{{ params.v }}"}
    script:
      interpreter: python
      source: |
        import base64, os
        print(base64.b64encode(os.environ["V"].encode()).decode())
  - name: argv
    command:
      - python3
      - -c
      - "import sys, base64; print(base64.b64encode(sys.argv[1].encode()).decode())"
      - "{{ params.v }}"
  - name: function
    python: teststeps:b64
    args: {value: "{{ params.v }}"}
  - name: downstream
    depends: [sh]
    env: {V: "{{ tasks.sh.outputs.result }}"}
    script: printf '%s' "$V"
"""


@pytest.mark.parametrize("name", list(PAYLOADS))
async def test_payloads_arrive_intact_and_never_run(name: str, tmp_path: Path) -> None:
    marker = tmp_path / "PWNED"
    payload = PAYLOADS[name].format(marker=marker)
    workflow = parse_workflow(textwrap.dedent(SAFE))
    async with EmbeddedEngine(workers=4) as engine:
        state = await asyncio.wait_for(
            engine.run(workflow, resolve_params(workflow, {"v": payload})), 60
        )
    assert state.status == RunStatus.SUCCEEDED, state.reason
    expected = base64.b64encode(payload.encode()).decode()
    for task in ("sh", "py-script", "argv", "function"):
        assert state.nodes[task].outputs()["result"] == expected, task
    assert state.nodes["downstream"].outputs()["result"] == expected
    assert not marker.exists()


async def test_a_value_no_process_can_receive_fails_clearly(tmp_path: Path) -> None:
    workflow = parse_workflow(textwrap.dedent(SAFE))
    async with EmbeddedEngine(workers=4) as engine:
        state = await asyncio.wait_for(
            engine.run(workflow, resolve_params(workflow, {"v": "a\0b"})), 60
        )
    assert state.status == RunStatus.FAILED
    assert "null byte" in (state.nodes["sh"].instances[0].error or "")
    assert state.nodes["function"].outputs()["result"] == base64.b64encode(b"a\0b").decode()


@pytest.mark.parametrize(
    ("step", "where"),
    [
        ('script: "echo {{ params.v }}"', "tasks[0].script.source"),
        (
            'script: {interpreter: python, source: "print({{ params.v }})"}',
            "tasks[0].script.source",
        ),
        ('command: [sh, -c, "echo {{ params.v }}"]', "tasks[0].command[2]"),
        ('command: [/bin/bash, -c, "echo {{ params.v }}", x]', "tasks[0].command[2]"),
        ('command: [env, A=1, python3.11, -c, "print({{ params.v }})"]', "tasks[0].command[4]"),
        ('command: [node, -e, "console.log({{ params.v }})"]', "tasks[0].command[2]"),
        ('container: {image: busybox, script: "echo {{ params.v }}"}', "tasks[0].container.script"),
        (
            'container: {image: busybox, command: [sh, -c], args: ["echo {{ params.v }}"]}',
            "tasks[0].container.args[0]",
        ),
    ],
)
def test_a_template_where_code_is_parsed_is_refused_with_the_safe_form(
    step: str, where: str
) -> None:
    text = f"name: w\nparams: {{v: {{type: str}}}}\ntasks:\n  - name: t\n    {step}\n"
    with pytest.raises(InvalidInput) as caught:
        parse_workflow(text, source="w.yaml")
    message = caught.value.message
    assert f"w.yaml:5, {where}: '{{{{ params.v }}}}' would splice a value into code" in message
    assert "env: {V: '{{ params.v }}'}" in message and "raw(params.v)" in message


@pytest.mark.parametrize(
    "step",
    [
        'command: [echo, "{{ params.v }}"]',
        'command: [sh, -c, "echo \\"$1\\"", sh, "{{ params.v }}"]',
        'command: [python3, -c, "import sys; print(sys.argv[1])", "{{ params.v }}"]',
        'script: "echo {{ raw(params.v) }}"',
    ],
)
def test_values_as_arguments_and_raw_splices_are_accepted(step: str) -> None:
    text = f"name: w\nparams: {{v: {{type: str}}}}\ntasks:\n  - name: t\n    {step}\n"
    assert parse_workflow(text).tasks


async def test_a_hostile_upstream_value_fails_the_task_instead_of_hanging_the_run() -> None:
    workflow = parse_workflow(
        textwrap.dedent(
            """
            name: huge
            tasks:
              - name: count
                command: [echo, "100000000000000000000"]
              - name: each
                depends: [count]
                items: range(tasks.count.outputs.result)
                command: [echo, "{{ item }}"]
            """
        )
    )
    async with EmbeddedEngine(workers=2) as engine:
        state = await asyncio.wait_for(engine.run(workflow, {}), 30)
    assert state.status == RunStatus.FAILED
    assert "range of over 1,000,000 numbers" in (state.nodes["each"].error or "")


async def test_a_secret_is_nowhere_in_redis(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "redis-should-never-hold-this-1234"
    monkeypatch.setenv("DEMO_TOKEN", secret)
    workflow = parse_workflow(
        textwrap.dedent(
            """
            name: secret
            params: {token: {from_env: DEMO_TOKEN}}
            tasks:
              - name: leak
                env: {TOKEN: "{{ params.token }}"}
                script: |
                  echo "out $TOKEN"
                  echo "err $TOKEN" >&2
                  exit 4
            """
        )
    )
    store = RedisRunLog(redis_url)
    await store._redis.flushdb()
    async with EmbeddedEngine(store, workers=2) as engine:
        state = await asyncio.wait_for(engine.run(workflow, resolve_params(workflow, {})), 60)
    assert state.status == RunStatus.FAILED
    assert state.nodes["leak"].instances[0].stderr_tail == ["err ***"]
    redis = store._redis
    held = b""
    async for key in redis.scan_iter(match="cv:*"):
        kind = (await redis.type(key)).decode()
        if kind == "stream":
            held += repr(await redis.xrange(key)).encode()
        elif kind == "list":
            held += b"".join(await redis.lrange(key, 0, -1))
        elif kind == "hash":
            held += repr(await redis.hgetall(key)).encode()
        elif kind == "set":
            held += b"".join(await redis.smembers(key))
        elif kind == "zset":
            held += b"".join(await redis.zrange(key, 0, -1))
        else:
            held += (await redis.get(key)) or b""
    assert b"out ***" in held and b"err ***" in held  # the scan reads what was stored
    assert secret.encode() not in held
    await store.close()
