"""The real servers run: a telemetry batch through Mosquitto, line protocol into InfluxDB."""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from models import telemetry
from tests.support.servers import InfluxDB, Mosquitto

pytestmark = pytest.mark.servers


def _client(name: str) -> mqtt.Client:
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)


def test_batch_round_trips_through_mosquitto(mosquitto: Mosquitto) -> None:
    batch = telemetry.Batch(
        site="bj-dx",
        agent="edge-01",
        device="ups-a1",
        model="ups-rfc1628",
        kind="ups",
        seq=7,
        ts=1_764_450_000.123,
        points={
            "battery_charge": telemetry.Point(87.0, "%"),
            "input_voltage": telemetry.Point(None, "V", "timeout"),
        },
    )
    topic = telemetry.telemetry_topic(batch.site, batch.agent, batch.device)
    received: queue.Queue[bytes] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()

    sub = _client("test-sub")
    sub.on_message = lambda _c, _u, msg: received.put(bytes(msg.payload))
    sub.on_subscribe = lambda *_a: subscribed.put(True)
    sub.on_connect = lambda c, *_a: c.subscribe("dcim/v1/#", qos=1)
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    try:
        assert subscribed.get(timeout=10)
        pub = _client("test-pub")
        pub.connect(mosquitto.host, mosquitto.port)
        pub.loop_start()
        info = pub.publish(topic, telemetry.encode(batch), qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()
        pub.loop_stop()
        pub.disconnect()
        payload = received.get(timeout=10)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert telemetry.decode_batch(payload) == batch


def test_influxdb_write_and_query(influxdb: InfluxDB) -> None:
    influxdb.query("CREATE DATABASE dcim", method="POST")
    ts_ns = int(time.time()) * 1_000_000_000
    lines = f'ups,site=bj-dx,device=ups-a1 battery_charge=87,output_source="normal" {ts_ns}\n'
    req = urllib.request.Request(  # noqa: S310  (loopback test server)
        f"{influxdb.url}/write?db=dcim&precision=ns", data=lines.encode(), method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
        assert resp.status == 204
    answer = json.loads(influxdb.query("SELECT battery_charge, output_source FROM ups", db="dcim"))
    series = answer["results"][0]["series"][0]
    assert series["columns"] == ["time", "battery_charge", "output_source"]
    assert series["values"][0][1:] == [87, "normal"]


def test_influxdb_rejects_malformed_line(influxdb: InfluxDB) -> None:
    influxdb.query("CREATE DATABASE dcim", method="POST")
    req = urllib.request.Request(  # noqa: S310
        f"{influxdb.url}/write?db=dcim", data=b"this is not line protocol", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=10)  # noqa: S310
    assert err.value.code == 400
