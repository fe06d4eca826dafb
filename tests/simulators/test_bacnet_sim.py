"""The BACnet simulator's own behaviour: priority arrays, profiles, and what it refuses to serve."""

from __future__ import annotations

import socket

import pytest

from models import catalog
from models.profile import profile_value
from simulators.bacnet import SimulatedDevice, bacnet_units
from tests.support.servers import free_port

CHILLER = catalog.load("chiller-bacnet")
CRAH = catalog.load("crah-bacnet")


async def test_priority_array_decides_the_present_value() -> None:
    async with SimulatedDevice(CHILLER, port=free_port(socket.SOCK_DGRAM)) as sim:
        name = "chw_supply_setpoint"
        assert sim.value(name) == sim.relinquish_default(name) == 7.0
        sim.command(name, 8.0, 16)
        assert sim.value(name) == 8.0
        sim.command(name, 9.0, 8)
        assert sim.value(name) == 9.0  # priority 8 beats 16
        sim.command(name, 10.0, 12)
        assert sim.value(name) == 9.0
        sim.command(name, None, 8)
        assert sim.value(name) == 10.0  # next highest: 12
        sim.command(name, None, 12)
        sim.command(name, None, 16)
        assert sim.value(name) == 7.0
        assert sim.priority_array(name) == (None,) * 16
        with pytest.raises(ValueError, match="not commandable"):
            sim.command("chw_supply_temp", 7.0, 16)
        with pytest.raises(ValueError, match="outside 1-16"):
            sim.command(name, 7.0, 17)


async def test_profiles_move_inputs_and_relinquish_defaults_but_not_commands() -> None:
    async with SimulatedDevice(CRAH, port=free_port(socket.SOCK_DGRAM), seed=3) as sim:
        sim.command("valve_position", 42.0, 16)
        for t in (0.0, 450.0, 900.0):
            sim.update(t)
            temp = CRAH.point("return_air_temp")
            fan = CRAH.point("fan_speed")
            assert sim.value("return_air_temp") == profile_value(temp, t, 3)
            assert sim.value("fan_speed") == profile_value(fan, t, 3)  # an output at its relinquish-default
            assert sim.value("valve_position") == 42.0  # held by a command
        sim.set_out_of_service("supply_air_temp")
        sim.set_value("supply_air_temp", 30.0)
        sim.update(1800.0)
        assert sim.value("supply_air_temp") == 30.0  # out of service: decoupled from the profile


async def test_only_bacnet_models_are_served() -> None:
    with pytest.raises(ValueError, match="not bacnet"):
        SimulatedDevice(catalog.load("ups-rfc1628"), port=free_port(socket.SOCK_DGRAM))
    async with SimulatedDevice(CHILLER, port=free_port(socket.SOCK_DGRAM)) as sim:
        with pytest.raises(KeyError, match="no_such_point"):
            sim.value("no_such_point")


def test_units_map_to_bacnet_names() -> None:
    assert bacnet_units("degC") == "degrees-celsius"
    assert bacnet_units("kW") == "kilowatts"
    assert bacnet_units("L/s") == "liters-per-second"
    assert bacnet_units("%") == "percent"
    assert bacnet_units("") == "no-units"
