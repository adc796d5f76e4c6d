"""``conveyor server`` holds its API to ``CONVEYOR_MAX_REQUEST_BYTES`` over a real
socket, whether the client declares the length or streams the body in chunks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.timeout(120)


def test_a_request_over_the_servers_limit_is_refused_and_starts_nothing(
    server: Any, tmp_path: Path
) -> None:
    served = server(grace=1)
    served.env["CONVEYOR_MAX_REQUEST_BYTES"] = "200"
    served.start()
    runs = f"{served.url}/api/v1/runs"
    padded = b'{"workflow": "long"}' + b" " * 300

    def chunks() -> Iterator[bytes]:
        yield padded[:150]
        yield padded[150:]

    declared = httpx.post(runs, content=padded, timeout=10)
    streamed = httpx.post(runs, content=chunks(), timeout=10)
    assert "content-length" not in streamed.request.headers
    for answer in (declared, streamed):
        assert answer.status_code == 413, answer.text
        assert answer.json()["title"] == "payload too large"
    assert declared.json()["detail"] == "body over the limit: 320 bytes (at most 200)"
    assert httpx.get(runs, timeout=10).json()["items"] == []
    run_id, _ = served.start_run()  # a submission within the limit
    assert [r["run_id"] for r in httpx.get(runs, timeout=10).json()["items"]] == [run_id]
    served.flag.write_text("")
    assert served.settled(run_id)["state"] == "succeeded"
