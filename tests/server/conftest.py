"""A trigger runtime on the in-memory embedded engine, and its HTTP app."""

from __future__ import annotations

import hashlib
import hmac
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from conveyor.server.app import create_app
from conveyor.server.runtime import TriggerRuntime
from engine.triggers.stores.memory import MemoryTriggerStore

SECRET = "it's a secret"

HOOKED = """
name: hooked
params:
  repo: {type: str}
  sha: {type: str, default: none}
tasks:
  - name: build
    env: {REPO: "{{ params.repo }}"}
    script: echo "building $REPO"
triggers:
  - name: push
    webhook:
      preset: github
      secret_env: TEST_HOOK_SECRET
      when: "headers['x-github-event'] == 'push'"
      params: {repo: "body['repository']['full_name']", sha: "body['after']"}
  - name: plain
    webhook:
      preset: hmac
      secret_env: TEST_HOOK_SECRET
      header: X-Signature
      max_bytes: 1000
      dedup: "body['id']"
      params: {repo: "body['repo']"}
  - name: open
    webhook: {preset: none, params: {repo: "query['repo']"}}
"""


def github_signature(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Server:
    def __init__(self, runtime: TriggerRuntime, engine: EmbeddedEngine, http: httpx.AsyncClient):
        self.runtime = runtime
        self.engine = engine
        self.http = http

    async def register(self, yaml_text: str) -> int:
        version = await self.runtime.registry.register(parse_workflow(textwrap.dedent(yaml_text)))
        await self.runtime.registry.refresh()
        await self.runtime.sensors.apply()
        return version

    async def settled(self) -> None:
        """Every admitted arrival handled (the handling runs after the answer)."""
        import asyncio

        while self.runtime._handling:
            await asyncio.gather(*self.runtime._handling, return_exceptions=True)


@pytest.fixture
async def server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AsyncIterator[Server]:
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    async with EmbeddedEngine(workers=4) as engine:
        runtime = TriggerRuntime(
            MemoryTriggerStore(),
            engine.client,
            transport=engine.transport,
            sweep_interval=3600,
            notify_retry_delay=0.05,
        )
        await runtime.start()
        transport = httpx.ASGITransport(app=create_app(runtime))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            served = Server(runtime, engine, http)
            await served.register(HOOKED)
            yield served
        await runtime.stop()
