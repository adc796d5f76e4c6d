"""Artifacts and claim checks through the whole engine; containers and scripts side by side."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

from contracts.codec import encode
from contracts.errors import InvalidInput
from contracts.events import TaskSucceeded
from contracts.validation import load_workflow, parse_workflow, resolve_params, workflow_from_data
from contracts.vocabulary import RunStatus
from conveyor.embedded import EmbeddedEngine
from engine.state.model import RunState
from workers.artifacts import FsspecArtifactStore
from workers.executors import ContainerRuntime

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "containers.yaml"


async def run_with(
    engine_kwargs: dict[str, Any], workflow: Any, params: dict[str, Any]
) -> RunState:
    async with EmbeddedEngine(workers=2, **engine_kwargs) as engine:
        return await asyncio.wait_for(engine.run(workflow, resolve_params(workflow, params)), 120)


async def test_artifacts_flow_between_script_tasks(tmp_path: Path) -> None:
    store = FsspecArtifactStore(tmp_path / "store")
    workflow = parse_workflow(
        """
        name: files
        tasks:
          - name: write
            script: |
              mkdir -p out/sub && echo hello > out/a.txt && echo deep > out/sub/b.txt
              echo single > one.txt
            artifacts: {out: {tree: out, one: one.txt}}
          - name: read
            depends: [write]
            script: cat in/a.txt in/sub/b.txt single.txt
            artifacts:
              in:
                in: "{{ tasks.write.artifacts.tree }}"
                single.txt: "{{ tasks.write.artifacts.one }}"
        """.replace("\n        ", "\n")
    )
    state = await run_with({"artifacts": store}, workflow, {})
    assert state.status == "succeeded"
    assert state.nodes["read"].outputs()["result"] == "hello\ndeep\nsingle"
    refs = state.nodes["write"].artifacts()
    assert refs["tree"]["kind"] == "dir" and refs["one"]["kind"] == "file"
    assert refs["one"]["size"] == len("single\n") and len(refs["one"]["sha256"]) == 64


async def test_missing_output_artifact_and_size_limit_fail_clearly(tmp_path: Path) -> None:
    store = FsspecArtifactStore(tmp_path / "store", max_bytes=100)
    workflow = parse_workflow(
        "name: limits\ntasks:\n"
        "  - name: missing\n    script: 'true'\n    artifacts: {out: {x: nothere.txt}}\n"
        "  - name: big\n    script: head -c 1000 /dev/zero > big.bin\n"
        "    artifacts: {out: {big: big.bin}}\n"
    )
    state = await run_with({"artifacts": store}, workflow, {})
    assert state.status == "failed"
    assert "did not write 'nothere.txt'" in (state.nodes["missing"].instances[0].error or "")
    assert "1000 bytes, over the limit of 100" in (state.nodes["big"].instances[0].error or "")


async def test_big_results_travel_by_claim_check(tmp_path: Path) -> None:
    store = FsspecArtifactStore(tmp_path / "store")
    workflow = parse_workflow(
        "name: big\ntasks:\n"
        "  - name: produce\n    script:\n      interpreter: python\n"
        "      source: 'import json; print(json.dumps(list(range(50000))))'\n"
        "  - name: consume\n    depends: [produce]\n    python: teststeps:total\n"
        "    args: {values: '{{ tasks.produce.outputs.result }}'}\n"
    )
    async with EmbeddedEngine(workers=2, artifacts=store) as engine:
        state = await asyncio.wait_for(engine.run(workflow, {}), 60)
        events = await engine.store.read(state.run_id)
    assert state.status == "succeeded"
    assert state.nodes["consume"].outputs()["result"] == sum(range(50000))
    produced = next(e for e in events if isinstance(e, TaskSucceeded) and e.task == "produce")
    assert set(produced.result) == {"$claim"}  # the log holds a reference ...
    assert len(encode(produced)) < 2_000  # ... not the 300 kB payload


def as_script_steps(data: dict[str, Any]) -> dict[str, Any]:
    """The same workflow with each container step replaced by a script step."""
    out = copy.deepcopy(data)
    for task in out["tasks"]:
        container = task.pop("container", None)
        if container is not None:
            task["script"] = container["script"]
    return out


@pytest.fixture
def runtime_env(container_runtime: ContainerRuntime, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVEYOR_CONTAINER_RUNTIME", container_runtime.resolve() or "")
    monkeypatch.setenv("CONVEYOR_CONTAINER_GLOBAL_ARGS", " ".join(container_runtime.global_args))
    monkeypatch.setenv("CONVEYOR_CONTAINER_RUN_ARGS", " ".join(container_runtime.run_args))


async def test_container_example_matches_its_script_twin(
    busybox_image: str, runtime_env: None, tmp_path: Path
) -> None:
    import yaml

    data = yaml.safe_load(EXAMPLE.read_text())
    params = {"image": busybox_image, "lines": 23, "chunk": 5}
    in_containers = await run_with(
        {"artifacts": FsspecArtifactStore(tmp_path / "a")}, load_workflow(EXAMPLE), params
    )
    as_scripts = await run_with(
        {"artifacts": FsspecArtifactStore(tmp_path / "b")},
        workflow_from_data(as_script_steps(data)),
        params,
    )
    assert in_containers.status == "succeeded", in_containers.reason
    merged = in_containers.nodes["merge"].outputs()["result"]
    assert merged == {"chunks": 5, "words": 23 * 5}
    for name in ("split", "count", "merge"):
        assert in_containers.nodes[name].outputs() == as_scripts.nodes[name].outputs(), name
    assert json.dumps(in_containers.nodes["count"].outputs()["result"]) == "[25, 25, 25, 25, 15]"


async def test_input_artifacts_from_urls(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    source = shared / "words.txt"
    source.write_text("alpha beta gamma\n")
    (shared / "escape").symlink_to("/etc/hostname")
    store = FsspecArtifactStore(tmp_path / "store", readable_roots=[shared])
    workflow = parse_workflow(
        "name: url\ntasks:\n  - name: count\n    script: wc -w < words.txt\n"
        f"    artifacts: {{in: {{words.txt: '{source.as_uri()}'}}}}\n"
        "  - name: missing\n    script: cat x\n"
        f"    artifacts: {{in: {{x: '{(shared / 'nope').as_uri()}'}}}}\n"
        "  - name: host-file\n    script: cat x\n"
        "    artifacts: {in: {x: 'file:///etc/hostname'}}\n"
        "  - name: linked-out\n    script: cat x\n"
        f"    artifacts: {{in: {{x: '{(shared / 'escape').as_uri()}'}}}}\n"
    )
    state = await run_with({"artifacts": store}, workflow, {})
    assert state.nodes["count"].outputs()["result"] == 3
    assert "cannot fetch" in (state.nodes["missing"].instances[0].error or "")
    for refused in ("host-file", "linked-out"):
        error = state.nodes[refused].instances[0].error or ""
        assert "is outside the folders steps may read from this machine" in error, refused


async def test_a_directory_artifact_holding_a_link_out_fails_its_reader_not_the_run(
    tmp_path: Path,
) -> None:
    store = FsspecArtifactStore(tmp_path / "store")
    workflow = parse_workflow(
        "name: links\ntasks:\n"
        "  - name: make\n    script: mkdir d && ln -s /etc/hostname d/host\n"
        "    artifacts: {out: {d: d}}\n"
        "  - name: read\n    depends: [make]\n    script: cat d/host\n"
        "    artifacts: {in: {d: '{{ tasks.make.artifacts.d }}'}}\n"
    )
    state = await asyncio.wait_for(run_with({"artifacts": store}, workflow, {}), 30)
    assert state.status == RunStatus.FAILED
    error = state.nodes["read"].instances[0].error or ""
    assert "link" in error.lower(), error


@pytest.mark.parametrize("where", ["file", "memory"])
async def test_a_runs_artifacts_are_removed_and_no_others(tmp_path: Path, where: str) -> None:
    url = tmp_path / "store" if where == "file" else f"memory://remove-{tmp_path.name}"
    store = FsspecArtifactStore(url)
    folder = tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "b.txt").write_text("deep")
    await store.put_path("runs/r1/t/0/1/out", folder)
    await store.put_bytes("runs/r1/t/1/1/values/result.json", b"1")
    kept = await store.put_bytes("runs/r10/t/0/1/values/result.json", b"10")
    await store.put_named("cache/k.json", b"{}")
    assert await store.remove("runs/r1") == 2
    assert await store.remove("runs/r1/") == 0
    assert await store.get_bytes(kept) == b"10"
    assert await store.get_named("cache/k.json") == b"{}"
    for wrong in ("", "/", "runs/..", "../store", "runs//r1", "runs/./r10"):
        with pytest.raises(InvalidInput, match="not a folder of the artifact store"):
            await store.remove(wrong)
    assert await store.get_bytes(kept) == b"10"
