from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

# Python steps in the examples and tests import their modules by name.
for path in (str(EXAMPLES), str(ROOT / "tests" / "steps")):
    if path not in sys.path:
        sys.path.insert(0, path)

from collections.abc import Iterator  # noqa: E402

import pytest  # noqa: E402

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


@pytest.fixture(scope="session")
def container_runtime() -> object:
    from tests.containers import runtime_for_tests

    return runtime_for_tests()


@pytest.fixture(scope="session")
def busybox_image(container_runtime: object) -> str:
    from tests.containers import build_image

    return build_image(container_runtime)  # type: ignore[arg-type]
