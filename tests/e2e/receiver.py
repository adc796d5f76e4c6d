"""A ``notify:`` receiver for the end-to-end tests: a local HTTP server that records what
it was sent and answers as the test says."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class Sent:
    headers: dict[str, str]
    body: bytes
    status: int
    """What the receiver answered."""

    @property
    def change(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)
        return found


@dataclass
class Receiver:
    """What it was sent; it answers 503 to the first ``refused_tries`` of each change,
    ``answers`` in turn, then 503 while ``refusing``, else 204."""

    url: str = ""
    sent: list[Sent] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    refusing: bool = False
    refused_tries: int = 0
    cut: list[Sent] = field(default_factory=list)
    """Requests whose sender died before the whole body came: never answered."""

    def delivered(self) -> list[dict[str, Any]]:
        return [each.change for each in self.sent if each.status == 204]

    def status(self, change_id: str) -> int:
        if sum(each.headers.get("webhook-id") == change_id for each in self.sent) < (
            self.refused_tries
        ):
            return 503
        if self.answers:
            return self.answers.pop(0)
        return 503 if self.refusing else 204


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            length = int(headers["content-length"])
            body = self.rfile.read(length)
            if len(body) < length:  # the sender was killed mid-request: nothing to answer
                found.cut.append(Sent(headers, body, status=0))
                return
            status = found.status(headers.get("webhook-id", ""))
            found.sent.append(Sent(headers, body, status))
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    found.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield found
    httpd.shutdown()
    httpd.server_close()


def until(condition: Callable[[], bool], what: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)
