"""Protocol drivers and their registry (one module per protocol)."""

from __future__ import annotations

import importlib
from typing import Final

from agent.drivers.base import Driver, DriverUnavailableError
from models.schema import Protocol

# Explicit registry: protocol -> "module:class". Imported on first use so an agent that
# polls only Modbus never loads pysnmp or bacpypes3.
DRIVERS: Final[dict[Protocol, str]] = {
    Protocol.MODBUS: "agent.drivers.modbus:ModbusDriver",
    Protocol.SNMP: "agent.drivers.snmp:SnmpDriver",
    Protocol.BACNET: "agent.drivers.bacnet:BacnetDriver",
}


def driver_class(protocol: Protocol) -> type[Driver]:
    """The driver class for a protocol; DriverUnavailableError when it is not built yet."""
    module_name, _, class_name = DRIVERS[protocol].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise DriverUnavailableError(f"the {protocol} driver is not available yet") from None
    cls: type[Driver] = getattr(module, class_name)
    return cls
