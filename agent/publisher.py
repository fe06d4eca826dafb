"""MQTT publishing with paho-mqtt (the only agent module importing it), bridged into asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import MqttSection

log = logging.getLogger(__name__)

PASSWORD_ENV = "DCIM_MQTT_PASSWORD"  # noqa: S105  (the name of the variable, not a password)
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
# How long the broker keeps our session (subscriptions, queued commands) while we are away.
SESSION_EXPIRY_S = 7 * 24 * 3600

OnDelivered = Callable[[int, bool], None]
OnMessage = Callable[[str, bytes], None]
OnConnection = Callable[[bool], None]


class _NoSocketNoise(logging.Filter):
    """Drops paho 2.2's error line for each loop turn without a socket.

    It repeats every second while reconnecting and once after a clean disconnect; the
    publisher reports a lost connection once, by itself.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


class PublisherError(RuntimeError):
    """The publisher cannot be set up (unreadable password or certificate file)."""


def read_password(password_file: Path | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The MQTT password: the file's first line, else $DCIM_MQTT_PASSWORD, else None."""
    if password_file is not None:
        try:
            text = password_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise PublisherError(f"mqtt.password_file {password_file}: {exc.strerror or exc}") from None
        return text.splitlines()[0] if text else ""
    env = os.environ if environ is None else environ
    return env.get(PASSWORD_ENV) or None


@dataclass(frozen=True, slots=True)
class PublisherOptions:
    """Everything the publisher needs to reach the broker."""

    host: str
    port: int
    client_id: str
    tls: bool = False
    protocol: Literal["3.1.1", "5"] = "5"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30
    inflight_max: int = 64
    reconnect_min_s: int = 1
    reconnect_max_s: int = 60
    connect_timeout_s: float = 10.0
    will_topic: str | None = None
    will_payload: bytes = b""
    online_payload: bytes = b""  # retained on will_topic at every connect
    subscriptions: tuple[str, ...] = ()

    @classmethod
    def from_section(
        cls,
        section: MqttSection,
        client_id: str,
        *,
        will_topic: str | None = None,
        will_payload: bytes = b"",
        online_payload: bytes = b"",
        subscriptions: tuple[str, ...] = (),
        environ: Mapping[str, str] | None = None,
    ) -> PublisherOptions:
        """Options from the [mqtt] section of an agent configuration."""
        url = urlparse(section.url)
        scheme = url.scheme
        return cls(
            host=url.hostname or "127.0.0.1",
            port=url.port or DEFAULT_PORTS[scheme],
            client_id=section.client_id or client_id,
            tls=scheme == "mqtts",
            protocol=section.protocol,
            username=section.username,
            password=read_password(section.password_file, environ),
            ca_file=section.ca_file,
            cert_file=section.cert_file,
            key_file=section.key_file,
            keepalive_s=section.keepalive_s,
            inflight_max=section.inflight_max,
            reconnect_max_s=section.reconnect_max_s,
            will_topic=will_topic,
            will_payload=will_payload,
            online_payload=online_payload,
            subscriptions=subscriptions,
        )


class Publisher:
    """One MQTT connection: QoS 1, persistent session, retained status with a last will.

    paho runs its network loop on its own thread and reconnects with exponential backoff
    (reconnect_min_s doubling up to reconnect_max_s); every callback is handed to the
    asyncio loop with call_soon_threadsafe, so the rest of the agent sees plain method
    calls on its one event loop. At most `inflight_max` messages are unacknowledged at a
    time: `send` refuses beyond that and the spool keeps the batch.
    """

    def __init__(
        self,
        options: PublisherOptions,
        *,
        on_delivered: OnDelivered | None = None,
        on_message: OnMessage | None = None,
        on_connection: OnConnection | None = None,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self.on_error = on_error
        self.on_delivered = on_delivered
        self.on_message = on_message
        self.on_connection = on_connection
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected = False
        self._pending: dict[int, int | None] = {}  # mid -> token (None: not from the spool)
        self._acks: list[tuple[int, bool, ReasonCode]] = []  # PUBACKs from paho's thread, not yet handled
        self._acks_lock = threading.Lock()
        self._acks_scheduled = False
        self._waiters: dict[int, asyncio.Future[bool]] = {}
        self._started = False
        self.connects = 0
        self.thread_restarts = 0  # paho network threads that ended unexpectedly and were restarted
        self.last_error = ""
        self._client = self._make_client()

    # -- setup ------------------------------------------------------------------------

    def _make_client(self) -> mqtt.Client:
        opts = self.options
        v5 = opts.protocol == "5"
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=opts.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            reconnect_on_failure=True,
        )
        self._paho_log = logging.getLogger(f"{__name__}.paho.{opts.client_id}")
        self._paho_log.addFilter(_NoSocketNoise())
        client.enable_logger(self._paho_log)
        client.max_inflight_messages_set(opts.inflight_max)
        client.reconnect_delay_set(opts.reconnect_min_s, opts.reconnect_max_s)
        client.connect_timeout = opts.connect_timeout_s
        if opts.username is not None:
            client.username_pw_set(opts.username, opts.password)
        elif opts.password is not None:
            log.warning("mqtt: a password is set but no username; the password is not sent")
        if opts.tls:
            self._set_tls(client)
        if opts.will_topic is not None:
            client.will_set(opts.will_topic, opts.will_payload, qos=1, retain=True)
        client.on_connect = self._paho_connect
        client.on_connect_fail = self._paho_connect_fail
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_message = self._paho_message
        return client

    def _set_tls(self, client: mqtt.Client) -> None:
        opts = self.options
        try:
            context = ssl.create_default_context(cafile=str(opts.ca_file) if opts.ca_file else None)
            if opts.cert_file is not None:
                context.load_cert_chain(str(opts.cert_file), str(opts.key_file) if opts.key_file else None)
        except (OSError, ssl.SSLError) as exc:
            raise PublisherError(f"mqtt TLS files (ca_file, cert_file, key_file): {exc}") from None
        client.tls_set_context(context)

    # -- paho's thread -> the event loop -------------------------------------------------

    def _bridge(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed while paho was still talking
            loop.call_soon_threadsafe(fn, *args)

    def _paho_connect(
        self, client: mqtt.Client, _userdata: object, flags: Any, reason: ReasonCode, _props: Properties | None
    ) -> None:
        if reason.is_failure:
            self._bridge(self._set_error, f"broker refused the connection: {reason}")
            return
        # Still on paho's thread, before it resends what was in flight: subscribe and
        # announce ourselves first.
        for topic in self.options.subscriptions:
            client.subscribe(topic, qos=1)
        if self.options.will_topic is not None:
            client.publish(self.options.will_topic, self.options.online_payload, qos=1, retain=True)
        self._bridge(self._connection_up, bool(flags.session_present))

    def _paho_connect_fail(self, _client: mqtt.Client, _userdata: object) -> None:
        self._bridge(self._set_error, "cannot reach the broker")

    def _paho_disconnect(
        self, _client: mqtt.Client, _userdata: object, _flags: Any, reason: ReasonCode, _props: Properties | None
    ) -> None:
        self._bridge(self._connection_down, str(reason))

    def _paho_publish(
        self, _client: mqtt.Client, _userdata: object, mid: int, reason: ReasonCode, _props: Properties | None
    ) -> None:
        # PUBACKs come in bursts: hand them to the loop in groups, one wake-up per group.
        with self._acks_lock:
            self._acks.append((mid, not reason.is_failure, reason))
            if self._acks_scheduled:
                return
            self._acks_scheduled = True
        self._bridge(self._pubacks)

    def _paho_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        self._bridge(self._message, message.topic, bytes(message.payload))

    # -- on the event loop --------------------------------------------------------------

    def _set_error(self, text: str) -> None:
        if text != self.last_error:
            log.warning("mqtt %s:%d: %s", self.options.host, self.options.port, text)
        self.last_error = text
        if self.on_error is not None:
            self.on_error(text)

    def _connection_up(self, session_present: bool) -> None:
        self._set_connected(connected=True, session_present=session_present)

    def _connection_down(self, reason: str) -> None:
        self._set_connected(connected=False, session_present=False, reason=reason)

    def _set_connected(self, *, connected: bool, session_present: bool, reason: str = "") -> None:
        was = self._connected
        self._connected = connected
        if connected:
            self.connects += 1
            self.last_error = ""
            log.info(
                "mqtt connected to %s:%d (session %s)",
                self.options.host,
                self.options.port,
                "resumed" if session_present else "new",
            )
        elif was:
            log.warning("mqtt connection to %s:%d lost: %s", self.options.host, self.options.port, reason)
            self.last_error = f"connection lost: {reason}"
        if self.on_connection is not None and connected != was:
            self.on_connection(connected)

    def _pubacks(self) -> None:
        with self._acks_lock:
            acks, self._acks = self._acks, []
            self._acks_scheduled = False
        for mid, ok, reason in acks:
            self._puback(mid, ok, reason)

    def _puback(self, mid: int, ok: bool, reason: object) -> None:
        if mid not in self._pending:
            return
        token = self._pending.pop(mid)
        if not ok:
            log.error("mqtt: the broker refused message %d: %s", mid, reason)
        waiter = self._waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(ok)
        if token is not None and self.on_delivered is not None:
            self.on_delivered(token, ok)

    def _message(self, topic: str, payload: bytes) -> None:
        if self.on_message is not None:
            self.on_message(topic, payload)

    # -- public API (event loop) ----------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the broker accepted us and the link is up (as far as we know)."""
        return self._connected

    @property
    def inflight(self) -> int:
        """Messages sent and not acknowledged yet."""
        return len(self._pending)

    @property
    def inflight_max(self) -> int:
        """The in-flight window."""
        return self.options.inflight_max

    def start(self) -> None:
        """Connect in the background (retrying with backoff until stopped)."""
        self._loop = asyncio.get_running_loop()
        opts = self.options
        kwargs: dict[str, Any] = {}
        if opts.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            kwargs = {"clean_start": False, "properties": props}
        self._client.connect_async(opts.host, opts.port, keepalive=opts.keepalive_s, **kwargs)
        self._client.loop_start()
        self._started = True

    def send(self, topic: str, payload: bytes, token: int | None = None, *, retain: bool = False) -> bool:
        """Publish with QoS 1; False (nothing sent) when disconnected or the window is full.

        `token` comes back through on_delivered when the broker acknowledges the message.
        """
        if not self._connected or len(self._pending) >= self.options.inflight_max:
            return False
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        # NO_CONN: the link dropped a moment ago; paho keeps the message and resends it on
        # reconnect, so it stays in flight.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.error("mqtt: cannot publish to %s: %s", topic, mqtt.error_string(info.rc))
            return False
        self._pending[info.mid] = token
        return True

    async def send_and_wait(self, topic: str, payload: bytes, timeout_s: float, *, retain: bool = False) -> bool:
        """Publish with QoS 1 and wait (bounded) for the PUBACK; True when acknowledged."""
        if not self._connected:
            return False
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[info.mid] = None
        self._waiters[info.mid] = future
        try:
            return await asyncio.wait_for(future, timeout=timeout_s)
        except TimeoutError:
            return False
        finally:
            self._waiters.pop(info.mid, None)

    def revive(self) -> bool:
        """Restart paho's network thread if it ended without stop() (an exception in its loop).

        Without it, the agent would go on polling and spooling with no broker connection and
        nothing but a traceback to show. The connection is dropped and made afresh (the
        session keeps what was in flight). Called every second; True when it had to restart.
        """
        if not self._started:
            return False
        thread = getattr(self._client, "_thread", None)  # paho keeps its network thread here
        if thread is not None and thread.is_alive():
            return False
        self.thread_restarts += 1
        log.error(
            "mqtt %s:%d: paho's network thread stopped unexpectedly; reconnecting with a new one (restart %d)",
            self.options.host,
            self.options.port,
            self.thread_restarts,
        )
        self._set_connected(connected=False, session_present=False, reason="network thread stopped")
        sock = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()  # the new thread finds the link lost and reconnects
        self._client.loop_start()
        return True

    async def stop(self, offline_payload: bytes | None = None, timeout_s: float = 5.0) -> None:
        """Publish the retained offline status (when given), disconnect and stop paho's thread."""
        if not self._started:
            return
        self._started = False
        if offline_payload is not None and self.options.will_topic is not None and self._connected:
            acked = await self.send_and_wait(self.options.will_topic, offline_payload, timeout_s, retain=True)
            if not acked:
                log.warning("mqtt: the offline status was not acknowledged; the last will covers it")
        self._client.disconnect()
        await asyncio.get_running_loop().run_in_executor(None, self._client.loop_stop)
        self._connected = False
