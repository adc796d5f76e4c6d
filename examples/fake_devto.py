"""A stand-in for the Dev.to articles API, for running the ETL example without the
internet (its tests, and anyone offline):

    python fake_devto.py 8765 &
    conveyor run devto_etl:etl -p api_base=http://127.0.0.1:8765/api
"""

from __future__ import annotations

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

TOTAL_ARTICLES = 75


def article(number: int) -> dict[str, object]:
    return {
        "id": 1000 + number,
        "title": f"Article {number}",
        "published_at": f"2026-11-{1 + number % 28:02d}T08:00:00Z",
        "url": f"https://dev.to/someone/article-{number}",
        "comments_count": number % 5,
        "positive_reactions_count": number * 3,
        "tag_list": ["python", "data"][: 1 + number % 2],
        "user": {"username": f"writer{number % 4}", "name": "A Writer"},
        "reading_time_minutes": 4,
    }


class FakeDevto(ThreadingHTTPServer):
    """Serves ``/api/articles?page=&per_page=``; ``fail_first`` pages answer 503 once."""

    def __init__(self, port: int = 0, fail_first: frozenset[int] = frozenset()) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.fail_first = set(fail_first)
        self.requests: list[int] = []

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/api"

    def start(self) -> FakeDevto:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self


class _Handler(BaseHTTPRequestHandler):
    server: FakeDevto

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path != "/api/articles":
            self.send_error(404)
            return
        page, per_page = int(query["page"][0]), int(query["per_page"][0])
        self.server.requests.append(page)
        if page in self.server.fail_first:
            self.server.fail_first.discard(page)
            self.send_error(503, "try again")
            return
        first = (page - 1) * per_page
        body = json.dumps(
            [article(n) for n in range(first, min(first + per_page, TOTAL_ARTICLES))]
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


if __name__ == "__main__":
    FakeDevto(int(sys.argv[1]) if len(sys.argv) > 1 else 8765).serve_forever()
