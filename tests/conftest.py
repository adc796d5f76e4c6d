from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Python steps in the examples and tests import their modules by name.
for path in (str(EXAMPLES), str(ROOT / "tests" / "steps")):
    if path not in sys.path:
        sys.path.insert(0, path)

# The tests read what the CLI prints as text: a CI system that forces colours on every
# program (FORCE_COLOR, TTY_COMPATIBLE) would put escape codes between the words.
for name in ("FORCE_COLOR", "TTY_COMPATIBLE"):
    os.environ.pop(name, None)

from collections.abc import AsyncIterator, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from tests.clusters import LocalRedisCluster  # noqa: E402
from tests.services import Services  # noqa: E402


@pytest.fixture(scope="session")
def services() -> Iterator[Services]:
    s = Services()
    yield s
    s.close()


@pytest.fixture(scope="session")
def amqp_url(services: Services) -> str:
    return services.amqp_url()


@pytest.fixture(scope="session")
def redis_url(services: Services) -> str:
    return services.redis_url()


@pytest.fixture(params=["memory", "rabbitmq"])
async def each_transport(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """The in-memory twin, then RabbitMQ: for behaviour both must have."""
    from engine.transport.memory import MemoryTransport
    from engine.transport.rabbitmq import RabbitTransport

    t: Any
    if request.param == "memory":
        t = MemoryTransport()
    else:
        t = RabbitTransport(request.getfixturevalue("amqp_url"))
    await t.start()
    yield t
    await t.close()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    """Three masters with a replica each, on this machine (started when a test asks)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.skip("redis-server and redis-cli are needed for a Redis Cluster")
    cluster = LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def container_runtime() -> object:
    from tests.containers import runtime_for_tests

    return runtime_for_tests()


@pytest.fixture(scope="session")
def busybox_image(container_runtime: object) -> str:
    from tests.containers import build_image

    return build_image(container_runtime)  # type: ignore[arg-type]


@pytest.fixture(scope="session", autouse=True)
def _scratch_inside_the_test_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Scratch files of steps, scripts and artifacts (and of every process the tests
    start, some of which are killed on purpose) go under pytest's own temporary
    directory, which pytest rotates, never loose in /tmp."""
    import os
    import tempfile

    scratch = tmp_path_factory.mktemp("scratch")
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = None  # re-read TMPDIR
    yield
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before
    tempfile.tempdir = None
