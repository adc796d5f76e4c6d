"""An artifact a step wrote is downloaded through the API, streamed from a scratch file."""

from __future__ import annotations

import tempfile
import textwrap
from pathlib import Path

import httpx

from contracts.validation import parse_workflow
from conveyor.embedded import EmbeddedEngine
from conveyor.server.app import create_app
from conveyor.server.runtime import TriggerRuntime
from engine.triggers.stores.memory import MemoryTriggerStore
from workers.artifacts import FsspecArtifactStore


async def test_a_file_artifact_downloads_and_a_missing_one_is_404(tmp_path: Path) -> None:
    artifacts = FsspecArtifactStore(str(tmp_path / "store"))
    workflow = parse_workflow(
        textwrap.dedent(
            """
            name: report
            tasks:
              - name: write
                script: 'printf "line one\\nline two\\n" > report.txt'
                artifacts: {out: {report: report.txt}}
            """
        )
    )
    async with EmbeddedEngine(workers=2, artifacts=artifacts) as engine:
        state = await engine.run(workflow, {})
        runtime = TriggerRuntime(MemoryTriggerStore(), engine.client, sweep_interval=3600)
        app = create_app(runtime, artifacts=artifacts)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            url = f"/api/v1/runs/{state.run_id}/artifacts/write/report"
            answer = await http.get(url)
            assert answer.status_code == 200
            assert answer.content == b"line one\nline two\n"
            assert 'filename="report"' in answer.headers["content-disposition"]
            assert (await http.get(url.replace("report", "nothing"))).status_code == 404
            assert (await http.get(url + "?index=3")).status_code == 404
    # The scratch copy is removed once sent.
    assert not list(Path(tempfile.gettempdir()).glob("conveyor-download-*/artifact"))
