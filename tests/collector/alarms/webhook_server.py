"""A local HTTP server that receives webhooks for the tests (real sockets, loopback)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Receiver:
    """Records every POST; answers with the queued status codes, then 204."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.statuses: list[int] = []  # answers to give, in order; then 204
        self.attempts = 0
        self.cond = threading.Condition()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(self, count: int, timeout_s: float = 20.0) -> list[dict[str, Any]]:
        """Block until at least `count` bodies were accepted."""
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.bodies) >= count, timeout=timeout_s):
                raise AssertionError(f"expected {count} webhook posts, got {len(self.bodies)}: {self.bodies}")
            return list(self.bodies)

    def wait_attempts(self, count: int, timeout_s: float = 20.0) -> None:
        with self.cond:
            if not self.cond.wait_for(lambda: self.attempts >= count, timeout=timeout_s):
                raise AssertionError(f"expected {count} attempts, got {self.attempts}")


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with receiver.cond:
                receiver.attempts += 1
                status = receiver.statuses.pop(0) if receiver.statuses else 204
                if status < 300:
                    receiver.bodies.append(json.loads(body))
                    receiver.headers.append(dict(self.headers))
                receiver.cond.notify_all()
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

    return Handler


@contextmanager
def webhook_receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
