"""systemd's sd_notify protocol over $NOTIFY_SOCKET, without extra dependencies."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"


def _address(value: str) -> str | None:
    """The socket address systemd gave: a path, or '@name' for the abstract namespace."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # vsock and other transports are not used by systemd for services


class Notifier:
    """Tells systemd how the service is doing. Does nothing when not run by systemd.

    Messages are datagrams of NEWLINE-separated KEY=VALUE assignments, as sd_notify(3)
    describes. Sending never blocks and never raises: a lost notification is logged.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._address = _address(env.get(NOTIFY_SOCKET, ""))
        self._sock: socket.socket | None = None
        self._failing = False  # log a failure once, not at every watchdog ping
        self.watchdog_usec = 0
        usec = env.get(WATCHDOG_USEC, "")
        pid = env.get(WATCHDOG_PID, "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_usec = int(usec)

    @property
    def enabled(self) -> bool:
        """Whether systemd listens (NOTIFY_SOCKET is set)."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """How often to send WATCHDOG=1 (half the watchdog timeout), or None without a watchdog."""
        if not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2_000_000

    def notify(self, *assignments: str) -> bool:
        """Send KEY=VALUE assignments in one datagram; True when sent."""
        if self._address is None:
            return False
        message = "\n".join(a.replace("\n", " ") for a in assignments)
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.settimeout(0.0)  # never block the event loop
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify to %s failed: %s", self._address.replace("\0", "@"), exc)
            self._failing = True
            return False
        self._failing = False
        return True

    def ready(self, status: str = "") -> bool:
        """READY=1: the configuration is loaded and the service is up."""
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        """RELOADING=1 with the monotonic time, as Type=notify-reload expects."""
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def watchdog(self) -> bool:
        """WATCHDOG=1: the service makes progress."""
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        """STATUS=...: a one-line health summary shown by systemctl status."""
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str = "") -> bool:
        """STOPPING=1: shutdown has begun."""
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def close(self) -> None:
        """Close the socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
