"""The collector's MQTT side (the only collector module importing paho-mqtt).

QoS 1 subscriptions in a persistent session, acknowledged by hand (``manual_ack``) only after
the store has taken a message; optionally a shared subscription (``$share/{group}/...``) so
several collectors split the load. Under MQTT 5 the receive maximum is the size of the ingest
queue: the broker never has more unacknowledged messages out to us than we can hold.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, Final, cast

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from collector.config import MqttSection

log = logging.getLogger(__name__)

PASSWORD_ENV: Final = "DCIM_MQTT_PASSWORD"  # noqa: S105  (the name of a variable, not a secret)
QOS: Final = 1
# A filter the collector never subscribes to: unsubscribing from it is a side-effect-free round trip.
FLUSH_FILTER: Final = "dcim/v1/$collector-flush"

# (connection generation, packet id, qos): what to acknowledge, and on which connection.
Token = tuple[int, int, int]
OnMessage = Callable[[str, bytes, Token], bool]


def subscriptions(site: str, shared_group: str = "") -> list[str]:
    """The topic filters the collector subscribes to: its site's telemetry, events and agent statuses."""
    filters = [f"dcim/v1/{site}/+/+/telemetry", f"dcim/v1/{site}/+/+/event", f"dcim/v1/{site}/+/status"]
    if shared_group:
        filters = [f"$share/{shared_group}/{f}" for f in filters]
    return filters


class Subscriber:
    """A paho client subscribed for the collector, with acknowledgements under our control."""

    def __init__(
        self,
        settings: MqttSection,
        *,
        client_id: str,
        site: str,
        receive_maximum: int,
        on_message: OnMessage,
        on_subscribed: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.on_subscribed = on_subscribed
        self.client_id = client_id
        self.site = site
        self.receive_maximum = max(1, min(receive_maximum, 65_535))
        self.on_message = on_message
        self.filters = subscriptions(site, settings.shared_group)
        url = urllib.parse.urlparse(settings.url)
        self.tls = url.scheme == "mqtts"
        self.host = url.hostname or "127.0.0.1"
        self.port = url.port or (8883 if self.tls else 1883)
        self.v5 = settings.protocol == "5"
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.subscribed = threading.Event()
        self.connections = 0
        self.session_lost = 0
        self._gen = 0
        self._gen_lock = threading.Lock()
        self._receiving = True
        self._flushes: dict[int, threading.Event] = {}
        self._flush_lock = threading.Lock()
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        if self.v5:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5, manual_ack=True
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        s = self.settings
        if s.username:
            password = None
            if s.password_file is not None:
                password = s.password_file.read_text(encoding="utf-8").strip()
            else:
                password = os.environ.get(PASSWORD_ENV)
            client.username_pw_set(s.username, password)
        if self.tls:
            client.tls_set(
                ca_certs=str(s.ca_file) if s.ca_file else None,
                certfile=str(s.cert_file) if s.cert_file else None,
                keyfile=str(s.key_file) if s.key_file else None,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.connect_timeout = s.connect_timeout_s
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_unsubscribe = self._on_unsubscribe
        client.on_message = self._on_message
        return client

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Connect in the background (retrying until the broker answers) and start paho's thread."""
        properties = None
        kwargs: dict[str, Any] = {}
        if self.v5:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self.settings.session_expiry_s
            properties.ReceiveMaximum = self.receive_maximum
            kwargs["clean_start"] = False
            kwargs["properties"] = properties
        self._client.connect_async(self.host, self.port, keepalive=self.settings.keepalive_s, **kwargs)
        self._client.loop_start()

    def stop_receiving(self) -> None:
        """Leave further deliveries unacknowledged and untouched (the broker redelivers them later)."""
        self._receiving = False

    def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect (keeping the session on the broker) and stop paho's thread.

        Waits (up to timeout_s) for the disconnect to go out, so that acknowledgements queued
        before it reach the broker.
        """
        self._receiving = False
        was_connected = self.connected.is_set()
        if was_connected:
            self.flush(timeout_s)
        self._client.disconnect()
        if was_connected:
            self.disconnected.wait(timeout_s)
        self._client.loop_stop()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the broker has processed everything sent so far (acknowledgements included).

        The broker handles a connection's packets in order, so its answer to an UNSUBSCRIBE (from
        a filter we never subscribed to: no side effect) proves the earlier PUBACKs arrived. Without
        this, a collector restarted at once can connect before the broker has read the old
        connection's last acknowledgements, and the takeover discards them (they come back later
        as duplicates).
        """
        done = threading.Event()
        with self._flush_lock:
            rc, mid = self._client.unsubscribe(FLUSH_FILTER)
            if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
                return False
            self._flushes[mid] = done
        ok = done.wait(timeout_s)
        with self._flush_lock:
            self._flushes.pop(mid, None)
        return ok

    # ------------------------------------------------------------ used by ingest

    def ack(self, token: object) -> None:
        """Acknowledge a delivery if its connection is still the current one.

        After a reconnect the broker delivers unacknowledged messages again; acknowledging
        a packet id of the old connection could acknowledge a different message.
        """
        gen, mid, qos = cast("Token", token)
        if qos == 0:
            return
        with self._gen_lock:
            if gen == self._gen and self.connected.is_set():
                self._client.ack(mid, qos)

    def dead_letter(self, payload: bytes) -> None:
        """Publish a dead-letter record (QoS 1)."""
        self._client.publish(self.settings.dead_letter_topic, payload, qos=QOS)

    # Used by the alarm service (collector/alarms): transitions and retained alarm states.
    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        """Publish one message (QoS 1); paho queues it while the broker is away."""
        self._client.publish(topic, payload, qos=QOS, retain=retain)

    # ------------------------------------------------------------ paho callbacks (paho's thread)

    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker %s:%d refused the connection: %s", self.host, self.port, reason_code)
            return
        with self._gen_lock:
            self._gen += 1
            self.connections += 1
            self.connected.set()
            self.disconnected.clear()
        if not flags.session_present and self.connections > 1:
            self.session_lost += 1
            log.warning(
                "broker %s:%d had no session for %s: it started a new one", self.host, self.port, self.client_id
            )
        log.info(
            "connected to %s:%d as %s (session %s)",
            self.host,
            self.port,
            self.client_id,
            "resumed" if flags.session_present else "new",
        )
        if self.v5:
            client.subscribe([(f, SubscribeOptions(qos=QOS)) for f in self.filters])
        else:
            client.subscribe([(f, QOS) for f in self.filters])

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        failed = [(f, rc) for f, rc in zip(self.filters, reason_codes, strict=False) if rc.is_failure]
        for topic_filter, rc in failed:
            log.error("broker %s:%d refused the subscription to %s: %s", self.host, self.port, topic_filter, rc)
        if not failed:
            self.subscribed.set()
            if self.on_subscribed is not None:
                self.on_subscribed()

    def _on_unsubscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        _reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        with self._flush_lock:
            done = self._flushes.get(mid)
        if done is not None:
            done.set()

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._gen_lock:
            self._gen += 1
            self.connected.clear()
            self.disconnected.set()
        self.subscribed.clear()
        if self._receiving:
            log.warning("disconnected from %s:%d: %s; reconnecting", self.host, self.port, reason_code)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if not self._receiving:
            return
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)  # noqa: SLF001  (paho's raw bytes; the name is not UTF-8)
        with self._gen_lock:
            token: Token = (self._gen, message.mid, message.qos)
        try:
            self.on_message(topic, bytes(message.payload), token)
        except Exception:
            # Never let an error escape into paho's loop; the message stays unacknowledged.
            log.exception("failed to take a message from %s", topic)
