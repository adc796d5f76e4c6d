"""Every example workflow gives the same result embedded and distributed."""

from __future__ import annotations

import asyncio
import importlib
import time
from pathlib import Path
from typing import Any

import pytest

from contracts.validation import load_workflow, resolve_params
from conveyor.embedded import EmbeddedEngine
from engine.redis_timers import RedisTimers
from engine.runlog.redis import RedisRunLog
from engine.state.model import RunState
from engine.transport.rabbitmq import RabbitTransport
from workers.artifacts import FsspecArtifactStore

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CASES = {
    "hello.yaml": {"who": "both"},
    "diamond.yaml": {"base": 5},
    "batch.yaml": {"size": 6},
    "scoring:scoring": {"size": 6},  # the typed Python example
}


def load(name: str) -> Any:
    if ":" in name:
        module, _, attribute = name.partition(":")
        return getattr(importlib.import_module(module), attribute).spec
    return load_workflow(EXAMPLES / name)


def outcome(state: RunState) -> dict[str, Any]:
    return {
        name: (node.status, node.outputs() if node.status == "succeeded" else None)
        for name, node in state.nodes.items()
    } | {"run": state.status, "outputs": state.outputs}


async def run_distributed(
    amqp_url: str, redis_url: str, workflow: Any, params: dict[str, Any], artifacts: Any = None
) -> RunState:
    """The engine in this process, on real RabbitMQ and Redis."""
    store = RedisRunLog(redis_url)
    transport = RabbitTransport(amqp_url)
    await transport.start()
    try:
        async with EmbeddedEngine(
            store,
            workers=2,
            transport=transport,
            timers=lambda fire: RedisTimers(redis_url, fire, time.time),
            shards=2,
            artifacts=artifacts,
        ) as engine:
            return await asyncio.wait_for(
                engine.run(workflow, resolve_params(workflow, params)), 120
            )
    finally:
        await store.close()


async def run_embedded(file: str, params: dict[str, Any]) -> RunState:
    workflow = load(file)
    async with EmbeddedEngine(workers=2) as engine:
        return await asyncio.wait_for(engine.run(workflow, resolve_params(workflow, params)), 60)


@pytest.mark.parametrize(("file", "params"), CASES.items(), ids=CASES.keys())
async def test_example_same_result_in_both_modes(
    file: str, params: dict[str, Any], amqp_url: str, redis_url: str
) -> None:
    embedded = await run_embedded(file, params)
    distributed = await run_distributed(amqp_url, redis_url, load(file), params)
    assert embedded.status == "succeeded"
    assert (embedded.outputs is not None) == bool(load(file).outputs)  # batch.yaml gives some
    assert outcome(distributed) == outcome(embedded)


async def test_container_and_script_steps_mix_in_both_modes(
    amqp_url: str,
    redis_url: str,
    busybox_image: str,
    container_runtime: Any,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("CONVEYOR_CONTAINER_RUNTIME", container_runtime.resolve())
    monkeypatch.setenv("CONVEYOR_CONTAINER_GLOBAL_ARGS", " ".join(container_runtime.global_args))
    monkeypatch.setenv("CONVEYOR_CONTAINER_RUN_ARGS", " ".join(container_runtime.run_args))
    workflow = load_workflow(EXAMPLES / "containers.yaml")
    params = resolve_params(workflow, {"image": busybox_image, "lines": 30, "chunk": 7})

    async with EmbeddedEngine(workers=2, artifacts=FsspecArtifactStore(tmp_path / "a")) as engine:
        embedded = await asyncio.wait_for(engine.run(workflow, params), 120)

    distributed = await run_distributed(
        amqp_url, redis_url, workflow, params, FsspecArtifactStore(tmp_path / "b")
    )
    assert embedded.status == "succeeded", embedded.reason
    assert outcome(distributed) == outcome(embedded)
    assert embedded.nodes["merge"].outputs()["result"] == {"chunks": 5, "words": 150}
