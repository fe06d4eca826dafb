"""BACnet/IP device simulator: any BACnet model served over UDP, with priority arrays and faults."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self

from bacpypes3.apdu import (
    AbortPDU,
    AbortReason,
    APCISequence,
    ComplexAckPDU,
    ConfirmedRequestPDU,
    Error,
    ReadPropertyMultipleRequest,
    SubscribeCOVRequest,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import (
    BinaryPV,
    EngineeringUnits,
    EventState,
    PriorityValue,
    PropertyIdentifier,
    Reliability,
    Segmentation,
)
from bacpypes3.errors import PropertyError, UnrecognizedService
from bacpypes3.local.analog import AnalogInputObject, AnalogOutputObject, AnalogValueObject, AnalogValueObjectCmd
from bacpypes3.local.binary import BinaryInputObject, BinaryOutputObject, BinaryValueObject
from bacpypes3.local.cmd import Commandable
from bacpypes3.local.cov import GenericCriteria
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.multistate import MultiStateInputObject, MultiStateOutputObject, MultiStateValueObject
from bacpypes3.local.networkport import NetworkPortObject

from models.profile import profile_value
from models.schema import DeviceModel, Point, Protocol
from models.units import ALIASES
from models.values import Value, decode_scalar, to_raw

log = logging.getLogger(__name__)

DEFAULT_DEVICE_INSTANCE: Final = 1001
DEFAULT_MAX_APDU: Final = 1476  # BACnet/IP
VENDOR_ID: Final = 999  # "unregistered / testing" in the sample applications
UPDATE_INTERVAL_S: Final = 1.0
COMPLEX_ACK_HEADER_BYTES: Final = 3  # unsegmented complex-ack APCI: type, invoke id, service choice
ANALOG_TYPES: Final = frozenset({"analog-input", "analog-output", "analog-value"})
BINARY_TYPES: Final = frozenset({"binary-input", "binary-output", "binary-value"})
MULTISTATE_TYPES: Final = frozenset({"multi-state-input", "multi-state-output", "multi-state-value"})
INPUT_TYPES: Final = frozenset({"analog-input", "binary-input", "multi-state-input"})


def bacnet_units(unit: str) -> str:
    """The BACnet engineering-units name for one of our unit symbols ("no-units" when none fits)."""
    for name, symbol in ALIASES.items():
        if symbol == unit and name.islower() and name.replace("-", "").isalpha():
            with contextlib.suppress(ValueError):
                return str(EngineeringUnits(name))
    return "no-units"


class _InputGuard:
    """Inputs follow the physical world: present-value is writable only while out-of-service."""

    async def write_property(
        self,
        attr: int | str,
        value: Any,
        index: int | None = None,
        priority: int | None = None,
    ) -> None:
        name = PropertyIdentifier(attr).attr if isinstance(attr, int) else str(attr)
        if name in ("presentValue", "present-value") and not getattr(self, "outOfService", False):
            raise PropertyError("writeAccessDenied")
        await super().write_property(attr, value, index, priority)  # type: ignore[misc]


class _AnalogInput(_InputGuard, AnalogInputObject):  # type: ignore[misc]
    pass


class _BinaryInput(_InputGuard, BinaryInputObject):  # type: ignore[misc]
    pass


class _MultiStateInput(_InputGuard, MultiStateInputObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class _BinaryValueCmd(Commandable, BinaryValueObject):  # type: ignore[misc]
    _required = ("priorityArray", "relinquishDefault", "currentCommandPriority")


class _MultiStateOutput(MultiStateOutputObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class _MultiStateValue(MultiStateValueObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria


class _MultiStateValueCmd(Commandable, MultiStateValueObject):  # type: ignore[misc]
    _cov_criteria = GenericCriteria
    _required = ("priorityArray", "relinquishDefault", "currentCommandPriority")


# object type -> (plain class, commandable class); outputs are always commandable.
_CLASSES: Final[dict[str, tuple[type[Any], type[Any]]]] = {
    "analog-input": (_AnalogInput, _AnalogInput),
    "analog-output": (AnalogOutputObject, AnalogOutputObject),
    "analog-value": (AnalogValueObject, AnalogValueObjectCmd),
    "binary-input": (_BinaryInput, _BinaryInput),
    "binary-output": (BinaryOutputObject, BinaryOutputObject),
    "binary-value": (BinaryValueObject, _BinaryValueCmd),
    "multi-state-input": (_MultiStateInput, _MultiStateInput),
    "multi-state-output": (_MultiStateOutput, _MultiStateOutput),
    "multi-state-value": (_MultiStateValue, _MultiStateValueCmd),
}


@dataclass
class Faults:
    """Faults a test can switch on while the device runs."""

    no_answer: bool = False  # drop every request, as a dead or unplugged device does
    delay_s: float = 0.0  # answer every request this late, as a slow or overloaded device does
    error: tuple[str, str] | None = None  # answer every confirmed request with (error class, error code)


@dataclass
class Traffic:
    """What the device received and answered, for tests that count requests."""

    requests: Counter[str] = field(default_factory=Counter)  # by service name
    rpm_objects: list[list[str]] = field(default_factory=list)  # objects named in each ReadPropertyMultiple
    response_sizes: list[int] = field(default_factory=list)  # bytes of each complex acknowledgement
    oversized: int = 0  # responses larger than the device's max APDU
    aborted: int = 0  # of those, answered with an abort because segmentation is off

    def reset(self) -> None:
        """Forget everything counted so far."""
        self.requests.clear()
        self.rpm_objects.clear()
        self.response_sizes.clear()
        self.oversized = 0
        self.aborted = 0


def _service_name(apdu: Any) -> str:
    """The service name of a request: read-property-multiple, subscribe-cov, who-is, and so on."""
    name = type(apdu).__name__.removesuffix("Request")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()


class _SimApplication(Application):  # type: ignore[misc]
    """An Application that counts requests and applies the device's switches and faults."""

    sim: SimulatedDevice

    def get_services_supported(self) -> Any:
        services = super().get_services_supported()
        if not self.sim.rpm:
            services[services.readPropertyMultiple] = 0
            services[services.writePropertyMultiple] = 0
        if not self.sim.cov:
            services[services.subscribeCOV] = 0
        return services

    async def indication(self, apdu: Any) -> None:
        sim = self.sim
        sim.traffic.requests[_service_name(apdu)] += 1
        if isinstance(apdu, ReadPropertyMultipleRequest):
            sim.traffic.rpm_objects.append([_object_key(spec.objectIdentifier) for spec in apdu.listOfReadAccessSpecs])
        if sim.faults.no_answer:
            return
        if sim.faults.delay_s > 0:
            await asyncio.sleep(sim.faults.delay_s)
        if sim.faults.error is not None and isinstance(apdu, ConfirmedRequestPDU):
            error_class, error_code = sim.faults.error
            await self.response(
                Error(service_choice=apdu.apduService, errorClass=error_class, errorCode=error_code, context=apdu)
            )
            return
        await super().indication(apdu)

    async def do_ReadPropertyMultipleRequest(self, apdu: Any) -> None:  # noqa: N802  (bacpypes3 dispatch name)
        if not self.sim.rpm:
            raise UnrecognizedService
        await super().do_ReadPropertyMultipleRequest(apdu)

    async def do_WritePropertyMultipleRequest(self, apdu: Any) -> None:  # noqa: N802
        if not self.sim.rpm:
            raise UnrecognizedService
        await super().do_WritePropertyMultipleRequest(apdu)

    async def do_SubscribeCOVRequest(self, apdu: SubscribeCOVRequest) -> None:  # noqa: N802
        if not self.sim.cov:
            raise UnrecognizedService
        await super().do_SubscribeCOVRequest(apdu)

    async def response(self, apdu: Any) -> None:
        sim = self.sim
        if isinstance(apdu, ComplexAckPDU) and isinstance(apdu, APCISequence):
            size = len(apdu.encode().pduData) + COMPLEX_ACK_HEADER_BYTES
            sim.traffic.response_sizes.append(size)
            if size > sim.max_apdu:
                sim.traffic.oversized += 1
                if not sim.segmentation:
                    # A device that cannot segment refuses an answer larger than its buffer.
                    sim.traffic.aborted += 1
                    abort = AbortPDU(srv=True, invoke_id=apdu.apduInvokeID, reason=AbortReason.segmentationNotSupported)
                    abort.pduDestination = apdu.pduDestination
                    abort.pduUserData = apdu.pduUserData
                    apdu = abort
        await super().response(apdu)


def _object_key(object_identifier: Any) -> str:
    return f"{object_identifier[0]}:{object_identifier[1]}"


@dataclass(frozen=True, slots=True)
class _Served:
    """One simulated BACnet object and the model point that defines it."""

    point: Point
    object_type: str
    instance: int
    commandable: bool
    obj: Any


class SimulatedDevice:
    """A BACnet/IP device serving one model's points on host:port (UDP).

    Values follow the model's simulation profiles; `update(t_s)` moves them to a time,
    and `serve_forever` does so every second. Commandable objects (outputs, and values the
    model marks writable with a priority) keep a 16-slot priority array: the profile drives
    their relinquish-default, writes fill slots.
    """

    def __init__(
        self,
        model: DeviceModel,
        host: str = "127.0.0.1",
        port: int = 47808,
        *,
        instance: int | None = None,
        seed: int = 0,
        rpm: bool = True,
        cov: bool = True,
        max_apdu: int | None = None,
        segmentation: bool | None = None,
    ) -> None:
        if model.protocol is not Protocol.BACNET:
            raise ValueError(f"model {model.id!r} speaks {model.protocol}, not bacnet")
        self.model = model
        self.host = host
        self.port = port
        self.instance = int(
            instance if instance is not None else model.bacnet.get("device_instance", DEFAULT_DEVICE_INSTANCE)
        )
        self.seed = seed
        self.rpm = rpm
        self.cov = cov
        self.max_apdu = int(max_apdu if max_apdu is not None else model.bacnet.get("max_apdu", DEFAULT_MAX_APDU))
        self.segmentation = bool(segmentation if segmentation is not None else model.bacnet.get("segmentation", True))
        self.faults = Faults()
        self.traffic = Traffic()
        self.started = False
        self._app: _SimApplication | None = None
        self._served: dict[str, _Served] = {}  # by point name
        self._t0 = time.monotonic()

    @property
    def address(self) -> str:
        """host:port of the device."""
        return f"{self.host}:{self.port}"

    # -- life cycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the UDP port and create the objects (call inside the running loop)."""
        segmentation = Segmentation.segmentedBoth if self.segmentation else Segmentation.noSegmentation
        device = DeviceObject(
            objectIdentifier=("device", self.instance),
            objectName=f"{self.model.id}-{self.instance}",
            vendorIdentifier=VENDOR_ID,
            vendorName="dcim-edge simulator",
            modelName=self.model.id,
            description=self.model.description[:100],
            maxApduLengthAccepted=self.max_apdu,
            segmentationSupported=segmentation,
        )
        port_object = NetworkPortObject(
            f"{self.host}:{self.port}", objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
        )
        app = _SimApplication.from_object_list([device, port_object])
        app.sim = self
        self._app = app
        for point in self.model.points:
            if point.object is None or point.object in {f"{s.object_type}:{s.instance}" for s in self._served.values()}:
                continue
            served = self._make_object(point)
            app.add_object(served.obj)
            self._served[point.name] = served
        self.update(0.0)
        # Let the link layer bind before anyone sends to us.
        for link_layer in app.link_layers.values():
            server = getattr(link_layer, "server", None)
            ready = getattr(server, "_local_transport_ready", None)
            tasks = getattr(server, "_transport_tasks", None)
            if tasks:
                await asyncio.gather(*tasks)
            if ready is not None:
                await ready.wait()
        self.started = True
        log.info(
            "BACnet device %s (%s) serving %d objects on %s",
            self.instance,
            self.model.id,
            len(self._served),
            self.address,
        )

    def close(self) -> None:
        """Release the UDP port."""
        if self._app is not None:
            self._app.close()
            self._app = None
        self.started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- objects --------------------------------------------------------------------------

    def _make_object(self, point: Point) -> _Served:
        assert point.object is not None  # noqa: S101  (bacnet points always name their object)
        object_type, _, instance_text = point.object.rpartition(":")
        if object_type not in _CLASSES:
            raise ValueError(
                f"model {self.model.id!r} point {point.name!r}: object type {object_type!r} is not simulated"
            )
        commandable = object_type.endswith("-output") or (
            object_type.endswith("-value") and point.writable is not None and point.writable.priority is not None
        )
        plain, command = _CLASSES[object_type]
        cls = command if commandable else plain
        kwargs: dict[str, Any] = {
            "objectIdentifier": (object_type, int(instance_text)),
            "objectName": point.name,
            "description": (point.description or point.name)[:100],
            "eventState": EventState.normal,
            "outOfService": False,
            "reliability": Reliability.noFaultDetected,
        }
        initial = self._raw(point, profile_value(point, 0.0, self.seed))
        if object_type in ANALOG_TYPES:
            kwargs.update(units=bacnet_units(point.unit), covIncrement=0.0, presentValue=float(initial))
        elif object_type in BINARY_TYPES:
            kwargs.update(presentValue=initial, polarity="normal")
        else:
            states = max(point.enum) if point.enum else 1
            kwargs.update(numberOfStates=states, presentValue=initial)
            if point.enum and sorted(point.enum) == list(range(1, states + 1)):
                kwargs["stateText"] = [point.enum[i] for i in range(1, states + 1)]
        if commandable:
            kwargs["relinquishDefault"] = initial
            kwargs["priorityArray"] = [PriorityValue(null=()) for _ in range(16)]
        obj = cls(**kwargs)
        return _Served(point, object_type, int(instance_text), commandable, obj)

    def _raw(self, point: Point, value: Value) -> Any:
        """A point's engineering value as the BACnet present-value primitive."""
        object_type = (point.object or "").rpartition(":")[0]
        raw = to_raw(point, value)
        if object_type in BINARY_TYPES:
            return BinaryPV.active if raw else BinaryPV.inactive
        if object_type in MULTISTATE_TYPES:
            return int(raw)
        number = float(raw)
        return 0.0 if math.isnan(number) else number

    def _served_point(self, name: str) -> _Served:
        try:
            return self._served[name]
        except KeyError:
            raise KeyError(f"simulated device {self.model.id!r} serves no object for point {name!r}") from None

    def update(self, t_s: float | None = None) -> None:
        """Move every profile-driven value to time t_s (seconds since start; default: now)."""
        if t_s is None:
            t_s = time.monotonic() - self._t0
        for served in self._served.values():
            point, obj = served.point, served.obj
            if point.property != "present-value":
                continue
            raw = self._raw(point, profile_value(point, t_s, self.seed))
            if served.commandable:
                if obj.relinquishDefault != raw:
                    obj.relinquishDefault = raw
                    obj.recalculating()
            elif not obj.outOfService and obj.presentValue != raw:
                obj.presentValue = raw

    async def run_updates(self, interval_s: float = UPDATE_INTERVAL_S) -> None:
        """Update values every interval_s until cancelled."""
        while True:
            self.update()
            await asyncio.sleep(interval_s)

    # -- what tests look at and change ------------------------------------------------------

    def value(self, name: str) -> Value:
        """The point's present value, decoded as the model says."""
        served = self._served_point(name)
        return decode_scalar(served.point, _python(served.obj.presentValue, served.object_type)).value

    def priority_array(self, name: str) -> tuple[Value, ...]:
        """The 16 priority slots of a commandable point (None for NULL)."""
        served = self._served_point(name)
        if not served.commandable:
            raise ValueError(f"point {name!r} is not commandable")
        slots: list[Value] = []
        for slot in served.obj.priorityArray:
            if slot.null is not None:
                slots.append(None)
            else:
                raw = _python(getattr(slot, slot._choice), served.object_type)  # noqa: SLF001  (bacpypes3 choice name)
                slots.append(decode_scalar(served.point, raw).value)
        return tuple(slots)

    def relinquish_default(self, name: str) -> Value:
        """The value a commandable point returns to when every slot is NULL."""
        served = self._served_point(name)
        return decode_scalar(served.point, _python(served.obj.relinquishDefault, served.object_type)).value

    def command(self, name: str, value: Value, priority: int) -> None:
        """Fill (or with None, relinquish) a priority slot locally, as a panel or operator would."""
        served = self._served_point(name)
        if not served.commandable:
            raise ValueError(f"point {name!r} is not commandable")
        if not 1 <= priority <= 16:
            raise ValueError(f"priority {priority} is outside 1-16")
        slot = (
            PriorityValue(null=())
            if value is None
            else _priority_value(self._raw(served.point, value), served.object_type)
        )
        served.obj.priorityArray[priority - 1] = slot

    def set_value(self, name: str, value: Value) -> None:
        """Set a point's present value directly (inputs and plain values; sticks until the next update)."""
        served = self._served_point(name)
        raw = self._raw(served.point, value)
        if served.commandable:
            served.obj.relinquishDefault = raw
            served.obj.recalculating()
        else:
            served.obj.presentValue = raw

    def set_reliability(self, name: str, reliability: str = "no-fault-detected") -> None:
        """Set an object's reliability; anything but no-fault-detected raises its fault flag."""
        self._served_point(name).obj.reliability = Reliability(reliability)

    def set_out_of_service(self, name: str, out_of_service: bool = True) -> None:
        """Decouple an object from the (simulated) physical world."""
        self._served_point(name).obj.outOfService = out_of_service

    def set_units(self, name: str, units: str) -> None:
        """Report other units for an analog object (a misconfigured device)."""
        self._served_point(name).obj.units = EngineeringUnits(units)


def _python(value: Any, object_type: str) -> float | int | bool | str:
    """A bacpypes3 primitive as a plain Python value."""
    if object_type in BINARY_TYPES:
        return int(value) == int(BinaryPV.active)
    if object_type in MULTISTATE_TYPES:
        return int(value)
    return float(value)


def _priority_value(raw: Any, object_type: str) -> Any:
    if object_type in BINARY_TYPES:
        return PriorityValue(enumerated=raw)
    if object_type in MULTISTATE_TYPES:
        return PriorityValue(unsigned=raw)
    return PriorityValue(real=raw)


async def _serve(model: DeviceModel, host: str, port: int, seed: int) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    device = SimulatedDevice(model, host, port, seed=seed)
    await device.start()
    updates = asyncio.create_task(device.run_updates())
    print(f"ready bacnet {model.id} on {host}:{port} device {device.instance}", flush=True)  # noqa: T201
    try:
        await stop.wait()
    finally:
        updates.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await updates
        device.close()
    return 0


def serve_forever(model: DeviceModel, host: str, port: int, seed: int = 0) -> int:
    """Serve one simulated BACnet/IP device until SIGINT or SIGTERM; the exit code."""
    return asyncio.run(_serve(model, host, port, seed))
