"""The README's distributed quick start, run as written from the repository root."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.cluster import Cluster

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def readme_block(after: str) -> list[str]:
    """The lines of the first ```sh block after the text ``after`` in the README."""
    text = (ROOT / "README.md").read_text()
    start = text.index(after)
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.strip()]


async def test_the_readme_distributed_quick_start_works_as_written(
    amqp_url: str, redis_url: str, tmp_path: Path
) -> None:
    await Cluster(amqp_url, redis_url, tmp_path).reset()
    lines = readme_block("Or run the processes yourself")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["CONVEYOR_HOME"] = str(tmp_path / "home")
    background: list[subprocess.Popen[bytes]] = []
    try:
        for line in lines:
            if line.startswith("export "):
                name = line.split()[1].split("=")[0]
                # The README names localhost's default ports; the test's servers differ.
                env[name] = {"CONVEYOR_AMQP_URL": amqp_url, "CONVEYOR_REDIS_URL": redis_url}[name]
                continue
            words = shlex.split(line.rstrip("&").strip())
            extra = {}
            while "=" in words[0]:
                key, _, value = words.pop(0).partition("=")
                extra[key] = value
            assert words[0] == "conveyor", line
            argv = [sys.executable, "-m", "conveyor", *words[1:]]
            if line.endswith("&"):
                background.append(
                    subprocess.Popen(
                        argv,
                        cwd=ROOT,
                        env={**env, **extra},
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
                continue
            done = subprocess.run(
                argv, cwd=ROOT, env={**env, **extra}, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, done.stdout + done.stderr
            assert "run succeeded" in done.stdout
    finally:
        for proc in background:
            proc.send_signal(signal.SIGTERM)
        for proc in background:
            proc.wait(timeout=30)
