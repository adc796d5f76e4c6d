"""The metrics port of a coordinator or worker: Prometheus text, behind a token.

Metrics name workflows, pools and triggers, so the port listens on loopback unless
told another address, and another address needs a token: ``CONVEYOR_METRICS_TOKEN``,
which Prometheus sends as ``authorization: {credentials_file: FILE}`` in its scrape
config. The token comes from the environment, never the command line, where any user
of the machine could read it.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import make_wsgi_app

from contracts.errors import InvalidInput, Problem
from conveyor.addresses import is_loopback

TOKEN_VARIABLE = "CONVEYOR_METRICS_TOKEN"

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def check_metrics_address(address: str, token: str) -> None:
    """Refuse, before anything starts, to serve metrics beyond loopback without a token."""
    if not token and not is_loopback(address):
        raise InvalidInput(
            [
                Problem(
                    f"metrics on {address} would be open to anyone who can reach it:"
                    f" set {TOKEN_VARIABLE}, or serve them on 127.0.0.1"
                )
            ],
            source="--metrics-address",
        )


class MetricsPort:
    """A thread serving ``/metrics``; ``close`` stops it."""

    def __init__(self, port: int, address: str = "127.0.0.1", token: str = "") -> None:
        check_metrics_address(address, token)
        app: WsgiApp = make_wsgi_app()
        self._server = make_server(
            address,
            port,
            _guarded(app, token) if token else app,
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics-port", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _guarded(app: WsgiApp, token: str) -> WsgiApp:
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        presented = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(presented, expected):
            start_response(
                "401 Unauthorized",
                [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")],
            )
            return [b"send Authorization: Bearer with the metrics token\n"]
        return app(environ, start_response)

    return guarded


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the process's log."""
