"""Wire format v1: round trips, topics, and a table of malformed payloads rejected with reasons."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models import telemetry
from models.telemetry import Batch, Point, TelemetryError

TS = 1_764_450_000.123


def batch(**kw: object) -> Batch:
    base: dict[str, object] = {
        "site": "bj-dx",
        "agent": "edge-01",
        "device": "ups-a1",
        "model": "ups-rfc1628",
        "kind": "ups",
        "seq": 42,
        "ts": TS,
        "points": {
            "battery_charge": Point(87.0, "%"),
            "output_source": Point("normal", ""),
            "input_voltage": Point(None, "V", "timeout"),
            "output_energy": Point(1234.5, "kWh", counter=True),
        },
        "tables": {"outlet": {"1": {"power": Point(120.0, "W")}, "2": {"power": Point(None, "W", "no_such_instance")}}},
    }
    base.update(kw)
    return Batch(**base)  # type: ignore[arg-type]


def test_round_trip_and_version_on_the_wire() -> None:
    original = batch()
    data = telemetry.encode(original)
    assert json.loads(data)["v"] == 1
    assert telemetry.decode_batch(data) == original


@given(
    st.integers(0, 2**53),
    st.floats(telemetry.MIN_TS, telemetry.MAX_TS),
    st.dictionaries(
        st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
        st.one_of(
            st.floats(allow_nan=False, allow_infinity=False).map(lambda v: Point(v, "kW")),
            st.integers(-(2**63), 2**63 - 1).map(lambda v: Point(v, "")),
            st.text(max_size=30).map(lambda v: Point(v, "")),
            st.booleans().map(lambda v: Point(v, "")),
            st.just(Point(None, "V", "timeout")),
        ),
        max_size=30,
    ),
)
def test_any_valid_batch_round_trips(seq: int, ts: float, points: dict[str, Point]) -> None:
    original = batch(seq=seq, ts=ts, points=points, tables={})
    assert telemetry.decode_batch(telemetry.encode(original)) == original


def good_json() -> dict[str, object]:
    loaded: dict[str, object] = json.loads(telemetry.encode(batch()))
    return loaded


def mutate(path: list[str], value: object) -> bytes:
    data = good_json()
    node: dict[str, object] = data
    for key in path[:-1]:
        node = node[key]  # type: ignore[assignment]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return json.dumps(data).encode()


DELETE = object()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"not json at all", "not JSON"),
        (b"", "not JSON"),
        (b"[1,2,3]", "version"),
        (mutate(["v"], 2), "unsupported version 2"),
        (mutate(["v"], DELETE), "no usable version field"),
        (mutate(["v"], "1"), "no usable version field"),
        (mutate(["seq"], "42"), "Expected `int`"),
        (mutate(["seq"], -1), "seq -1 is negative"),
        (mutate(["ts"], 1_764_450_000_123), "not a Unix time in seconds"),
        (mutate(["ts"], 0), "not a Unix time"),
        (mutate(["device"], "a/b"), "device 'a/b' is not a valid id"),
        (mutate(["agent"], "+"), "agent '+' is not a valid id"),
        (mutate(["site"], DELETE), "missing required field `site`"),
        (mutate(["extra"], 1), "unknown field `extra`"),
        (mutate(["points", "battery_charge", "unit"], "Volts"), "unknown unit 'Volts'"),
        (mutate(["points", "battery_charge", "quality"], "fine"), "unknown quality 'fine'"),
        (mutate(["points", "battery_charge", "value"], None), "quality good but no value"),
        (mutate(["points", "input_voltage", "value"], 0), "must carry no value"),
        (mutate(["points", "battery_charge", "value"], [1, 2]), "Expected"),
        (mutate(["points", "Bad-Name"], {"value": 1, "unit": ""}), "not snake_case"),
        (mutate(["tables", "outlet", "1", "power", "unit"], "x"), "table 'outlet' row 1 column 'power'"),
        (b'{"v":1,' + b" " * telemetry.MAX_PAYLOAD_BYTES + b"}", "exceeds the"),
    ],
)
def test_malformed_payloads_rejected_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(TelemetryError, match=None) as err:
        telemetry.decode_batch(payload)
    assert reason in str(err.value)


def test_nan_value_cannot_be_encoded_as_good() -> None:
    data = telemetry.encode(batch(points={"p": Point(float("nan"), "kW")}, tables={}))
    # msgspec writes NaN as null, which a strict decoder refuses for a good point.
    with pytest.raises(TelemetryError, match="quality good but no value"):
        telemetry.decode_batch(data)


def test_oversized_batch_refused_on_encode() -> None:
    points = {f"p{i}": Point("x" * 1000, "") for i in range(300)}
    with pytest.raises(TelemetryError, match="exceeds"):
        telemetry.encode(batch(points=points, tables={}))


def test_topics() -> None:
    assert telemetry.telemetry_topic("bj-dx", "edge-01", "ups-a1") == "dcim/v1/bj-dx/edge-01/ups-a1/telemetry"
    assert telemetry.command_topic("bj-dx", "edge-01") == "dcim/v1/bj-dx/edge-01/cmd"
    assert telemetry.command_result_topic("bj-dx", "edge-01") == "dcim/v1/bj-dx/edge-01/cmd/result"
    assert telemetry.agent_status_topic("bj-dx", "edge-01") == "dcim/v1/bj-dx/edge-01/status"
    assert telemetry.parse_topic("dcim/v1/bj-dx/edge-01/ups-a1/event") == ("bj-dx", "edge-01", "ups-a1", "event")
    assert telemetry.parse_topic("dcim/v1/bj-dx/edge-01/cmd/result") == ("bj-dx", "edge-01", None, "cmd/result")
    with pytest.raises(TelemetryError, match="not a valid id"):
        telemetry.telemetry_topic("bj-dx", "edge/01", "x")
    with pytest.raises(TelemetryError, match="not under"):
        telemetry.parse_topic("other/v1/a/b/c/telemetry")


def test_other_messages_round_trip() -> None:
    messages: list[telemetry.Message] = [
        telemetry.Status(site="s", agent="a", state="offline"),
        telemetry.Event(site="s", agent="a", device="ups-a1", type="on_battery", ts=TS, severity="critical"),
        telemetry.Command(id="c1", device="chiller-1", point="chw_supply_setpoint", value=9.0, expires=TS + 60),
        telemetry.CommandResult(id="c1", device="chiller-1", point="x", ok=False, outcome="refused", ts=TS),
    ]
    for message in messages:
        cls: type = type(message)
        assert telemetry.decode_as(cls, telemetry.encode(message)) == message
