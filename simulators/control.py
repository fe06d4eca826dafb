"""The simulated site's control API: JSON over HTTP on loopback, to read its state and trigger events.

Endpoints (every answer is a JSON object; errors are ``{"error": "..."}``):

==========  =================  ===================================================================
method      path               what
==========  =================  ===================================================================
GET         /                  the list of endpoints
GET         /state             simulated time, weather, IT / plant / facility kW, PUE, energy,
                               plant state, setpoints, feeds, UPSes, PDUs, chillers, racks
GET         /devices           every served device: id, role, model, protocol, port, fault
GET         /events            every event: scheduled, active or ended
POST        /events            start an event now, or at ``at_s``: ``{"kind": "mains_failure",
                               "target": "utility", "duration_s": 600}`` -> 201 with the event
DELETE      /events/{id}       end an event now (mains return, breaker reset, device back...)
POST        /clock             change the time acceleration: ``{"speed": 120}``
==========  =================  ===================================================================

The server is asyncio on the simulator's own loop, so a request sees the site
between two ticks, never in the middle of one. It binds to loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from typing import Any, Final, Protocol

log = logging.getLogger(__name__)

MAX_HEADER_BYTES: Final = 16 * 1024
MAX_BODY_BYTES: Final = 64 * 1024
READ_TIMEOUT_S: Final = 10.0
WRITE_TIMEOUT_S: Final = 10.0
LOOPBACK: Final = frozenset({"127.0.0.1", "localhost", "::1"})

REASONS: Final[dict[int, str]] = {
    200: "OK",
    201: "Created",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    411: "Length Required",
    413: "Content Too Large",
    500: "Internal Server Error",
}

ENDPOINTS: Final = (
    {"method": "GET", "path": "/state", "what": "time, weather, IT/plant/facility kW, PUE, energy, plant, setpoints"},
    {"method": "GET", "path": "/devices", "what": "served devices with their protocol, port and fault"},
    {"method": "GET", "path": "/events", "what": "scheduled, active and ended events"},
    {
        "method": "POST",
        "path": "/events",
        "what": 'start an event: {"kind", "target", "duration_s"?, "delay_s"?, "at_s"?}',
    },
    {"method": "DELETE", "path": "/events/{id}", "what": "end an event now"},
    {"method": "POST", "path": "/clock", "what": 'change the time acceleration: {"speed": 1..3600}'},
)


class SiteControl(Protocol):
    """What the control API needs from a site."""

    def state(self) -> dict[str, Any]:
        """The site's state."""
        ...

    def devices(self) -> list[dict[str, Any]]:
        """Every served device."""
        ...

    def events(self) -> list[dict[str, Any]]:
        """Every event."""
        ...

    def trigger(
        self,
        kind: str,
        target: str | None,
        duration_s: float | None = None,
        delay_s: float | None = None,
        at_s: float | None = None,
    ) -> dict[str, Any]:
        """Start or schedule an event (ValueError when it makes no sense)."""
        ...

    def end_event(self, event_id: int) -> dict[str, Any]:
        """End an event now (KeyError when there is none)."""
        ...

    def set_speed(self, speed: float) -> float:
        """Change the time acceleration (ValueError outside 1-3600)."""
        ...


class HttpError(Exception):
    """An answer other than success."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers or {}


def _number(body: dict[str, Any], key: str, *, required: bool = False) -> float | None:
    value = body.get(key)
    if value is None:
        if required:
            raise HttpError(400, f"{key!r} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise HttpError(400, f"{key!r} must be a finite number, not {value!r}")
    return float(value)


class ControlServer:
    """The control API on host:port (loopback only)."""

    def __init__(self, site: SiteControl, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in LOOPBACK:
            raise ValueError(f"the control API serves loopback only, not {host!r}")
        self.site = site
        self.host = host
        self.port = port
        self.requests = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        """Listen; the port."""
        self._server = await asyncio.start_server(self._on_connection, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("control API on http://%s:%d", self.host, self.port)
        return self.port

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=WRITE_TIMEOUT_S)
            self._server = None

    # -- HTTP ----------------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, payload, headers = 500, {"error": "internal error"}, {}
        try:
            method, path, body = await asyncio.wait_for(self._read(reader), timeout=READ_TIMEOUT_S)
            self.requests += 1
            status, payload = self.dispatch(method, path, body)
        except HttpError as exc:
            status, payload, headers = exc.status, {"error": str(exc)}, exc.headers
        except TimeoutError:
            status, payload = 408, {"error": f"no complete request within {READ_TIMEOUT_S:g} s"}
        except (ConnectionError, asyncio.IncompleteReadError):
            writer.close()
            return
        except Exception:
            log.exception("control API: request failed")
        data = json.dumps(payload, indent=None, separators=(",", ":")).encode()
        head = [f"HTTP/1.1 {status} {REASONS.get(status, '')}", "Content-Type: application/json"]
        head += [f"Content-Length: {len(data)}", "Connection: close"]
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        with contextlib.suppress(ConnectionError, TimeoutError):
            await asyncio.wait_for(writer.drain(), timeout=WRITE_TIMEOUT_S)
        writer.close()

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpError(413, "request head too large") from None
        if len(head) > MAX_HEADER_BYTES:
            raise HttpError(413, "request head too large")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            raise HttpError(400, f"not an HTTP request line: {lines[0][:80]!r}")
        method, target = parts[0].upper(), parts[1]
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise HttpError(400, "Content-Length is not a number") from None
            if name.strip().lower() == "transfer-encoding":
                raise HttpError(411, "send the body with a Content-Length")
        if length < 0 or length > MAX_BODY_BYTES:
            raise HttpError(413, f"body larger than {MAX_BODY_BYTES} bytes")
        body = await reader.readexactly(length) if length else b""
        return method, target.split("?", 1)[0], body

    # -- routes --------------------------------------------------------------------------

    def dispatch(self, method: str, path: str, body: bytes = b"") -> tuple[int, Any]:
        """The status and JSON answer for a request (HttpError for the failures)."""
        path = path.rstrip("/") or "/"
        if path == "/":
            self._allow(method, "GET")
            return 200, {"endpoints": list(ENDPOINTS)}
        if path == "/state":
            self._allow(method, "GET")
            return 200, self.site.state()
        if path == "/devices":
            self._allow(method, "GET")
            return 200, {"devices": self.site.devices()}
        if path == "/events":
            self._allow(method, "GET", "POST")
            if method == "GET":
                return 200, {"events": self.site.events()}
            return 201, {"event": self._trigger(self._json(body))}
        if path.startswith("/events/"):
            self._allow(method, "DELETE")
            text = path.removeprefix("/events/")
            if not text.isdigit():
                raise HttpError(404, f"no event {text!r}")
            try:
                return 200, {"event": self.site.end_event(int(text))}
            except KeyError:
                raise HttpError(404, f"no event {text}") from None
        if path == "/clock":
            self._allow(method, "POST")
            speed = _number(self._json(body), "speed", required=True)
            assert speed is not None  # noqa: S101  (required above)
            try:
                return 200, {"speed": self.site.set_speed(speed)}
            except ValueError as exc:
                raise HttpError(400, str(exc)) from None
        raise HttpError(404, f"no endpoint {path!r} (GET / lists them)")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise HttpError(405, f"{method} is not allowed here", {"Allow": ", ".join(allowed)})

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HttpError(400, f"body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HttpError(400, "body must be a JSON object")
        return data

    def _trigger(self, body: dict[str, Any]) -> dict[str, Any]:
        unknown = set(body) - {"kind", "target", "duration_s", "delay_s", "at_s"}
        if unknown:
            raise HttpError(400, f"unknown keys: {', '.join(sorted(unknown))}")
        kind = body.get("kind")
        if not isinstance(kind, str):
            raise HttpError(400, "'kind' is required (e.g. \"mains_failure\")")
        target = body.get("target")
        if target is not None and not isinstance(target, str):
            raise HttpError(400, "'target' must be a string")
        try:
            return self.site.trigger(
                kind,
                target,
                duration_s=_number(body, "duration_s"),
                delay_s=_number(body, "delay_s"),
                at_s=_number(body, "at_s"),
            )
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
