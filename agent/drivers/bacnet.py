"""BACnet/IP driver on bacpypes3: batched reads, change of value, priority-array-aware writes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import itertools
import logging
import math
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from bacpypes3.apdu import (
    ErrorPDU,
    ErrorRejectAbortNack,
    RejectPDU,
    SimpleAckPDU,
    SubscribeCOVRequest,
)
from bacpypes3.app import Application
from bacpypes3.basetypes import BinaryPV, Segmentation
from bacpypes3.errors import ServicesError
from bacpypes3.local.device import DeviceObject
from bacpypes3.local.networkport import NetworkPortObject
from bacpypes3.pdu import Address
from bacpypes3.primitivedata import Boolean, Enumerated, Null, ObjectIdentifier
from bacpypes3.vendor import get_vendor_info

from agent.config import BacnetOptions, Device
from agent.drivers.base import Driver, PollResult, WriteResult
from models.limits import LOWEST_FORBIDDEN_PRIORITY, WriteRefused, check_write
from models.quality import Quality
from models.schema import Point
from models.units import UnitError, canonical
from models.values import Reading, Value, decode_scalar, to_raw

log = logging.getLogger(__name__)

T = TypeVar("T")

LOCAL_DEVICE_INSTANCE: Final = 4194302  # highest valid instance; 4194303 is the wildcard
LOCAL_MAX_APDU: Final = 1476
WILDCARD_INSTANCE: Final = 4194303
PRIORITY_SLOTS: Final = 16

# Worst-case sizes (bytes) of a ReadPropertyMultiple-ACK, used to keep every answer
# within one APDU of the device: ack header, per object (identifier and the opening and
# closing tags of its result list), per property (identifier and the opening and closing
# tags of its result) plus the value itself, or an error in its place.
ACK_HEADER_BYTES: Final = 3
OBJECT_BYTES: Final = 7
PROPERTY_BYTES: Final = 5
ERROR_BYTES: Final = 7
VALUE_BYTES: Final[dict[str, int]] = {
    "status-flags": 3,
    "reliability": 3,
    "units": 3,
    "out-of-service": 1,
    "event-state": 2,
    "priority-array": 16 * 7,
    "relinquish-default": 6,
    "max-apdu-length-accepted": 5,
    "segmentation-supported": 2,
    "vendor-identifier": 3,
    "object-name": 66,
    "description": 66,
}
PRESENT_VALUE_BYTES: Final[dict[str, int]] = {"analog": 5, "binary": 2, "multi-state": 5}
UNKNOWN_VALUE_BYTES: Final = 32
# A ReadPropertyMultiple request: header, then per object and per property.
REQUEST_HEADER_BYTES: Final = 4
REQUEST_OBJECT_BYTES: Final = 7
REQUEST_PROPERTY_BYTES: Final = 3

ANALOG_TYPES: Final = frozenset({"analog-input", "analog-output", "analog-value"})
BINARY_TYPES: Final = frozenset({"binary-input", "binary-output", "binary-value"})
MULTISTATE_TYPES: Final = frozenset({"multi-state-input", "multi-state-output", "multi-state-value"})

# Answers meaning "this device does not do ReadPropertyMultiple (or SubscribeCOV)".
UNSUPPORTED_SERVICE_REASONS: Final = frozenset(
    {"unrecognized-service", "service-request-denied", "optional-functionality-not-supported"}
)
# Answers meaning "that answer would not fit": split the batch.
TOO_LONG_REASONS: Final = frozenset(
    {"segmentation-not-supported", "buffer-overflow", "apdu-too-long", "response-too-large"}
)

Key = tuple[str, str]  # (object, property), e.g. ("analog-input:1", "present-value")
Raw = Any  # a decoded bacpypes3 value, or a Quality for a failed read


class BacnetError(Exception):
    """A BACnet Error, Reject or Abort answer, as an ordinary exception."""

    def __init__(self, answer: ErrorRejectAbortNack) -> None:
        if isinstance(answer, ErrorPDU):
            self.kind = "error"
            self.error_class = str(getattr(answer, "errorClass", ""))
            self.reason = str(getattr(answer, "errorCode", ""))
        else:
            self.kind = "reject" if isinstance(answer, RejectPDU) else "abort"
            self.error_class = ""
            self.reason = str(answer.reason)
        text = f"{self.error_class}: {self.reason}" if self.error_class else f"{self.kind}: {self.reason}"
        super().__init__(text)

    @property
    def unsupported(self) -> bool:
        """Whether the device says it does not implement the service."""
        return self.reason in UNSUPPORTED_SERVICE_REASONS and self.kind in ("reject", "error", "abort")

    @property
    def too_long(self) -> bool:
        """Whether the answer would not have fitted the device's buffers."""
        return self.reason in TOO_LONG_REASONS

    @property
    def quality(self) -> Quality:
        """The quality of a point whose read got this answer."""
        return _error_quality(self.reason)


class NoAnswerError(Exception):
    """The device did not answer within its timeout, after every retry."""


def _error_quality(error_code: str) -> Quality:
    if error_code == "unknown-object":
        return Quality.NO_SUCH_OBJECT
    if error_code == "unknown-property":
        return Quality.UNSUPPORTED
    return Quality.DEVICE_EXCEPTION


def _object_type(obj: str) -> str:
    return obj.rpartition(":")[0]


def _object_key(object_identifier: Any) -> str:
    return f"{object_identifier[0]}:{object_identifier[1]}"


def _value_bytes(obj: str, prop: str) -> int:
    if prop == "present-value":
        family = _object_type(obj).rsplit("-", 1)[0]
        size = PRESENT_VALUE_BYTES.get(family, UNKNOWN_VALUE_BYTES)
    else:
        size = VALUE_BYTES.get(prop, UNKNOWN_VALUE_BYTES)
    return PROPERTY_BYTES + max(size, ERROR_BYTES)


def plan_batches(objects: Sequence[tuple[str, Sequence[str]]], max_apdu: int) -> list[list[tuple[str, list[str]]]]:
    """Group (object, properties) into ReadPropertyMultiple requests whose answers fit max_apdu.

    Objects keep their order; a batch takes objects while the worst-case answer fits. An
    object too large on its own has its properties split over requests.
    """
    batches: list[list[tuple[str, list[str]]]] = []
    current: list[tuple[str, list[str]]] = []
    answer = ACK_HEADER_BYTES
    request = REQUEST_HEADER_BYTES
    for obj, props in objects:
        pending = list(props)
        while pending:
            cost = OBJECT_BYTES
            req_cost = REQUEST_OBJECT_BYTES
            take: list[str] = []
            for prop in pending:
                extra = _value_bytes(obj, prop)
                if answer + cost + extra > max_apdu or request + req_cost + REQUEST_PROPERTY_BYTES > max_apdu:
                    break
                cost += extra
                req_cost += REQUEST_PROPERTY_BYTES
                take.append(prop)
            if not take:
                if current:
                    batches.append(current)
                    current, answer, request = [], ACK_HEADER_BYTES, REQUEST_HEADER_BYTES
                    continue
                take = [pending[0]]  # a single property larger than the APDU: let the device segment or refuse
                cost += _value_bytes(obj, take[0])
            current.append((obj, take))
            answer += cost
            request += req_cost
            pending = pending[len(take) :]
    if current:
        batches.append(current)
    return batches


def python_value(value: Any) -> float | int | bool | str | None:
    """A bacpypes3 primitive as a plain Python value (enumerations as their names)."""
    if value is None or isinstance(value, Null):
        return None
    if isinstance(value, BinaryPV):
        return int(value) == int(BinaryPV.active)
    if isinstance(value, Boolean):
        return bool(value)
    if isinstance(value, Enumerated):
        return str(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _flags_quality(flags: Any) -> Quality | None:
    """Quality from status-flags (in-alarm, fault, overridden, out-of-service); None when good."""
    try:
        bits = [int(b) for b in flags]
    except TypeError:
        return None
    bits += [0] * (4 - len(bits))
    if bits[3]:
        return Quality.OUT_OF_SERVICE
    if bits[1]:
        return Quality.FAULT
    if bits[2]:
        return Quality.OVERRIDDEN
    return None


def _unit_of(value: Any) -> str | None:
    """Our unit symbol for a BACnet engineering-units value (None when we have no such unit)."""
    name = str(value)
    try:
        return canonical(name)
    except UnitError:
        return None


@dataclass
class _Count:
    """Requests sent for one operation."""

    n: int = 0


@dataclass
class _CovWatch:
    """One change-of-value subscription and the last values it delivered."""

    obj: str
    object_identifier: Any
    process_id: int
    expires_at: float = 0.0
    renew_at: float = 0.0
    values: dict[str, Any] = field(default_factory=dict)  # property -> decoded value
    fresh: bool = False  # a notification arrived since the subscription was (re)made


@dataclass
class _Session:
    """What the driver knows about one device."""

    device_id: str
    address: Any  # bacpypes3 Address
    instance: int
    options: BacnetOptions
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ready: bool = False
    max_apdu: int = LOCAL_MAX_APDU
    segmentation: str = "no-segmentation"
    vendor_id: int = 0
    rpm: bool = True
    cov: bool = True
    budget: int = LOCAL_MAX_APDU  # bytes an answer may take
    units_checked: bool = False
    warned: set[str] = field(default_factory=set)
    polls: int = 0
    watches: dict[str, _CovWatch] = field(default_factory=dict)  # by object
    cov_refused: set[str] = field(default_factory=set)  # objects the device would not subscribe

    def warn_once(self, key: str, level: int, msg: str, *args: object) -> None:
        """Log a message once per session."""
        if key not in self.warned:
            self.warned.add(key)
            log.log(level, msg, *args, extra={"device": self.device_id, "protocol": "bacnet"})


class _ClientApplication(Application):  # type: ignore[misc]
    """The agent's BACnet application: a client that also receives COV notifications."""

    watches: dict[tuple[Any, int], tuple[_Session, _CovWatch]]

    async def do_ConfirmedCOVNotificationRequest(self, apdu: Any) -> None:  # noqa: N802  (bacpypes3 dispatch name)
        if not self._deliver(apdu):
            raise ServicesError(errorCode="unknownSubscription")
        await self.response(SimpleAckPDU(context=apdu))

    async def do_UnconfirmedCOVNotificationRequest(self, apdu: Any) -> None:  # noqa: N802
        self._deliver(apdu)

    def _deliver(self, apdu: Any) -> bool:
        found = self.watches.get((apdu.pduSource, int(apdu.subscriberProcessIdentifier)))
        if found is None:
            return False
        session, watch = found
        if apdu.monitoredObjectIdentifier != watch.object_identifier:
            return False
        object_class = get_vendor_info(session.vendor_id).get_object_class(watch.object_identifier[0])
        for element in apdu.listOfValues:
            prop = str(element.propertyIdentifier)
            prop_type = object_class.get_property_type(element.propertyIdentifier) if object_class else None
            if prop_type is None:
                continue
            try:
                watch.values[prop] = element.value.cast_out(prop_type)
            except Exception:  # noqa: BLE001  (a malformed notification is dropped, the point is polled)
                log.warning("device %s: undecodable COV value for %s %s", session.device_id, watch.obj, prop)
                continue
        watch.fresh = "present-value" in watch.values
        return True


@dataclass
class _Stack:
    """One local UDP endpoint and its bacpypes3 application."""

    app: _ClientApplication
    timeout_ms: int = 0


@dataclass(frozen=True, slots=True)
class DiscoveredObject:
    """One object of a discovered device."""

    object: str  # "analog-input:1"
    name: str
    description: str
    units: str | None  # BACnet engineering-units name, None when the object has none
    commandable: bool
    states: tuple[str, ...] = ()  # multi-state state texts


@dataclass(frozen=True, slots=True)
class DiscoveredDevice:
    """What `discover` found on a device."""

    instance: int
    name: str
    vendor: str
    model_name: str
    max_apdu: int
    segmentation: str
    objects: tuple[DiscoveredObject, ...]
    other_objects: tuple[str, ...]  # objects of types a model cannot describe


class BacnetDriver(Driver):
    """BACnet/IP driver: one local UDP endpoint per local port, one session per device.

    `clock` (monotonic seconds) times COV renewals; tests pass their own.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._stacks: dict[tuple[str, int], _Stack] = {}
        self._sessions: dict[str, _Session] = {}
        self._process_ids = itertools.count(1)

    # -- plumbing -------------------------------------------------------------------------

    async def _stack(self, bind_host: str, local_port: int, timeout_s: float) -> _Stack:
        key = (bind_host, local_port)
        stack = self._stacks.get(key)
        if stack is None:
            device = DeviceObject(
                objectIdentifier=("device", LOCAL_DEVICE_INSTANCE),
                objectName=f"dcim-agent-{local_port}",
                vendorIdentifier=999,
                maxApduLengthAccepted=LOCAL_MAX_APDU,
                segmentationSupported=Segmentation.segmentedBoth,
                # Retries and timeouts are ours (per device); the stack must not resend on its own.
                numberOfApduRetries=0,
            )
            port_object = NetworkPortObject(
                f"{bind_host}:{local_port}", objectIdentifier=("network-port", 1), objectName="NetworkPort-1"
            )
            app = _ClientApplication.from_object_list([device, port_object])
            app.watches = {}
            stack = _Stack(app)
            self._stacks[key] = stack
        timeout_ms = math.ceil(timeout_s * 1000)
        if timeout_ms > stack.timeout_ms:
            # The stack's own transaction timer only cleans up after ours has given up.
            stack.timeout_ms = timeout_ms
            stack.app.device_object.apduTimeout = timeout_ms + 500
        return stack

    async def _session(self, device: Device) -> tuple[_Session, _ClientApplication]:
        options = device.config.bacnet
        if options is None:
            raise ValueError(f"device {device.id} has no bacnet = {{ device_instance = N }}")
        host = await _resolve(device.config.host, device.timeout_s)
        bind = "127.0.0.1" if ipaddress.ip_address(host).is_loopback else "0.0.0.0"  # noqa: S104  (equipment network)
        stack = await self._stack(bind, options.local_port or 0, device.timeout_s)
        address = Address(f"{host}:{device.port}")
        session = self._sessions.get(device.id)
        if session is not None and (session.address, session.options) != (address, options):
            session = None  # the configuration changed (reload): start afresh
        if session is None:
            session = _Session(device.id, address, options.device_instance, options)
            session.rpm = options.rpm
            self._sessions[device.id] = session
        return session, stack.app

    async def _call(self, device: Device, count: _Count, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """Send one confirmed request with the device's timeout and retries."""
        for attempt in range(device.retries + 1):
            count.n += 1
            try:
                return await asyncio.wait_for(make(), device.timeout_s)
            except TimeoutError:
                log.debug("device %s: no answer to %s (attempt %d)", device.id, what, attempt + 1)
            except ErrorRejectAbortNack as answer:  # BaseException in bacpypes3
                raise BacnetError(answer) from None
        raise NoAnswerError(
            f"device {device.id}: no answer to {what} from {device.config.host}:{device.port} "
            f"within {device.timeout_s:g} s ({device.retries + 1} attempts)"
        )

    async def _read_property(self, app: Any, session: _Session, device: Device, count: _Count, key: Key) -> Any:
        obj, prop = key
        return await self._call(
            device, count, f"ReadProperty {obj} {prop}", lambda: app.read_property(session.address, obj, prop)
        )

    # -- setting up a session -----------------------------------------------------------------

    async def _ensure_ready(self, app: Any, session: _Session, device: Device, count: _Count) -> None:
        if session.ready:
            return
        device_object = f"device:{session.instance}"
        services = await self._read_property(
            app, session, device, count, (device_object, "protocol-services-supported")
        )
        session.rpm = session.options.rpm and _has_service(services, "readPropertyMultiple")
        session.cov = _has_service(services, "subscribeCOV")
        props = ["max-apdu-length-accepted", "segmentation-supported", "vendor-identifier"]
        values = await self._read_keys(app, session, device, count, [(device_object, p) for p in props])
        max_apdu = values.get((device_object, "max-apdu-length-accepted"))
        if isinstance(max_apdu, int) and not isinstance(max_apdu, Quality):
            session.max_apdu = int(max_apdu)
        segmentation = values.get((device_object, "segmentation-supported"))
        if segmentation is not None and not isinstance(segmentation, Quality):
            session.segmentation = str(segmentation)
        vendor = values.get((device_object, "vendor-identifier"))
        if isinstance(vendor, int) and not isinstance(vendor, Quality):
            session.vendor_id = int(vendor)
        session.budget = min(session.max_apdu, session.options.max_apdu)
        session.ready = True
        log.info(
            "device %s: BACnet device %d at %s, max APDU %d, %s, ReadPropertyMultiple %s, COV %s",
            device.id,
            session.instance,
            session.address,
            session.max_apdu,
            session.segmentation,
            "yes" if session.rpm else "no",
            "yes" if session.cov else "no",
            extra={"device": device.id, "protocol": "bacnet"},
        )

    # -- reading ------------------------------------------------------------------------------

    async def _read_keys(
        self, app: Any, session: _Session, device: Device, count: _Count, keys: Sequence[Key]
    ) -> dict[Key, Raw]:
        """Read properties, batched with ReadPropertyMultiple or one by one; failures as Quality.

        Raises NoAnswerError when the device stops answering.
        """
        grouped: dict[str, list[str]] = {}
        for obj, prop in keys:
            props = grouped.setdefault(obj, [])
            if prop not in props:
                props.append(prop)
        pending = list(grouped.items())
        out: dict[Key, Raw] = {}
        while pending and session.rpm:
            batch = plan_batches(pending, session.budget)[0]
            try:
                out.update(await self._rpm(app, session, device, count, batch))
            except BacnetError as exc:
                if exc.unsupported:
                    session.rpm = False
                    session.warn_once(
                        "rpm",
                        logging.WARNING,
                        "device %s refuses ReadPropertyMultiple (%s): reading property by property",
                        device.id,
                        exc,
                    )
                    break
                if exc.too_long and sum(len(props) for _, props in batch) > 1:
                    session.budget = max(ACK_HEADER_BYTES + OBJECT_BYTES + 2 * PROPERTY_BYTES, session.budget // 2)
                    session.warn_once(
                        f"budget-{session.budget}",
                        logging.WARNING,
                        "device %s: answer too long (%s): ReadPropertyMultiple answers now limited to %d bytes",
                        device.id,
                        exc,
                        session.budget,
                    )
                    continue
                if exc.error_class in ("object", "property"):
                    # The request as a whole failed: find out which properties fail, one by one.
                    out.update(await self._read_each(app, session, device, count, _flatten(batch)))
                else:
                    # The device itself is in trouble (busy, operational problem): every property shares it.
                    out.update(dict.fromkeys(_flatten(batch), exc.quality))
            done = dict(batch)
            pending = _subtract(pending, done)
        if pending:
            out.update(await self._read_each(app, session, device, count, _flatten(pending)))
        return out

    async def _rpm(
        self, app: Any, session: _Session, device: Device, count: _Count, batch: list[tuple[str, list[str]]]
    ) -> dict[Key, Raw]:
        params: list[Any] = []
        for obj, props in batch:
            params.extend([obj, list(props)])
        what = f"ReadPropertyMultiple of {len(batch)} objects"
        results = await self._call(device, count, what, lambda: app.read_property_multiple(session.address, params))
        out: dict[Key, Raw] = {}
        for object_identifier, prop, _index, value in results or ():
            key = (_object_key(object_identifier), str(prop))
            if value is None:
                out[key] = Quality.DECODE_ERROR
            elif hasattr(value, "errorClass") and hasattr(value, "errorCode"):
                out[key] = _error_quality(str(value.errorCode))
            else:
                out[key] = value
        for obj, props in batch:
            for prop in props:
                out.setdefault((obj, prop), Quality.DECODE_ERROR)
        return out

    async def _read_each(
        self, app: Any, session: _Session, device: Device, count: _Count, keys: Iterable[Key]
    ) -> dict[Key, Raw]:
        out: dict[Key, Raw] = {}
        for key in keys:
            try:
                out[key] = await self._read_property(app, session, device, count, key)
            except BacnetError as exc:
                out[key] = exc.quality
        return out

    async def _subscribe(self, app: _ClientApplication, session: _Session, device: Device, count: _Count) -> None:
        """(Re)subscribe to COV for the points marked for it; refusals fall back to polling."""
        if not session.cov or session.polls < 1:
            # A device polled once (poll-once, a write's read-back) is not worth a subscription.
            return
        now = self._clock()
        lifetime = session.options.cov_lifetime_s
        for point in device.model.points:
            obj = point.object
            if not point.cov or obj is None or obj in session.cov_refused:
                continue
            watch = session.watches.get(obj)
            if watch is not None and now < watch.renew_at:
                continue
            if watch is None:
                watch = _CovWatch(obj, ObjectIdentifier(obj), next(self._process_ids))
                session.watches[obj] = watch
                app.watches[(session.address, watch.process_id)] = (session, watch)
            request = SubscribeCOVRequest(
                subscriberProcessIdentifier=watch.process_id,
                monitoredObjectIdentifier=watch.object_identifier,
                issueConfirmedNotifications=True,
                lifetime=lifetime,
                destination=session.address,
            )
            watch.fresh = False  # until the notification that answers this subscription
            try:
                await self._call(device, count, f"SubscribeCOV {obj}", functools.partial(app.request, request))
            except BacnetError as exc:
                session.cov_refused.add(obj)
                del app.watches[(session.address, watch.process_id)]
                del session.watches[obj]
                if exc.unsupported:
                    session.cov = False
                session.warn_once(
                    f"cov-{obj}",
                    logging.WARNING,
                    "device %s refuses COV for %s (%s): polling it instead",
                    device.id,
                    obj,
                    exc,
                )
                continue
            watch.expires_at = now + lifetime
            watch.renew_at = now + lifetime / 2

    async def poll(self, device: Device) -> PollResult:
        """Read every point of the device's model once."""
        ts = time.time()
        started = time.perf_counter()
        count = _Count()
        try:
            session, app = await self._session(device)
        except (OSError, ValueError, TimeoutError) as exc:
            return _failed(device, ts, started, count, quality=Quality.COMM_ERROR, message=f"device {device.id}: {exc}")
        async with session.lock:
            try:
                await self._ensure_ready(app, session, device, count)
                await self._subscribe(app, session, device, count)
                readings = await self._read_points(app, session, device, count, device.model.points)
            except NoAnswerError as exc:
                session.ready = False
                return _failed(device, ts, started, count, quality=Quality.TIMEOUT, message=str(exc))
            except BacnetError as exc:
                session.ready = False
                message = f"device {device.id}: BACnet device {session.instance} answered {exc}"
                return _failed(device, ts, started, count, quality=exc.quality, message=message)
            session.polls += 1
        return PollResult(
            device=device.id, ts=ts, points=readings, requests=count.n, elapsed_s=time.perf_counter() - started
        )

    async def _read_points(
        self, app: Any, session: _Session, device: Device, count: _Count, points: Sequence[Point]
    ) -> dict[str, Reading]:
        now = self._clock()
        live = {obj for obj, watch in session.watches.items() if watch.fresh and now < watch.expires_at}
        keys: list[Key] = []
        for point in points:
            obj = point.object
            if obj is None:
                continue
            if point.property == "present-value" and obj in live:
                continue
            keys.append((obj, point.property))
            if point.property == "present-value":
                keys.append((obj, "status-flags"))
                if not session.units_checked and _object_type(obj) in ANALOG_TYPES:
                    keys.append((obj, "units"))
        values = await self._read_keys(app, session, device, count, keys) if keys else {}
        if not session.units_checked and keys:
            self._check_units(session, device, points, values)
        readings: dict[str, Reading] = {}
        faulted: list[Point] = []
        for point in points:
            obj = point.object
            if obj is None:
                readings[point.name] = Reading.bad(Quality.ERROR)
                continue
            if point.property == "present-value" and obj in live:
                watch = session.watches[obj]
                raw, flags = watch.values.get("present-value"), watch.values.get("status-flags")
            else:
                raw = values.get((obj, point.property), Quality.ERROR)
                flags = values.get((obj, "status-flags")) if point.property == "present-value" else None
            reading = _reading(point, raw, flags)
            readings[point.name] = reading
            if reading.quality is Quality.FAULT:
                faulted.append(point)
            elif reading.quality.good:
                session.warned.discard(f"fault-{point.name}")  # the next fault is logged again
        if faulted:
            await self._log_reliability(app, session, device, count, faulted)
        return readings

    def _check_units(self, session: _Session, device: Device, points: Sequence[Point], values: dict[Key, Raw]) -> None:
        checked = False
        for point in points:
            obj = point.object
            if obj is None or point.property != "present-value" or _object_type(obj) not in ANALOG_TYPES:
                continue
            units = values.get((obj, "units"))
            if units is None or isinstance(units, Quality):
                continue
            checked = True
            ours = _unit_of(units)
            if ours == point.unit:
                continue
            session.warn_once(
                f"units-{point.name}",
                logging.ERROR,
                "UNIT MISMATCH: device %s point %s (%s) reports units %r but model %s says %r; "
                "values are passed through unconverted: fix the model or the device",
                device.id,
                point.name,
                obj,
                str(units),
                device.model.id,
                point.unit,
            )
        session.units_checked = checked or session.units_checked

    async def _log_reliability(
        self, app: Any, session: _Session, device: Device, count: _Count, points: Sequence[Point]
    ) -> None:
        """Say why points are in fault (reliability), once per point and fault episode."""
        new = [p for p in points if f"fault-{p.name}" not in session.warned]
        if not new:
            return
        keys = [(p.object, "reliability") for p in new if p.object is not None]
        try:
            values = await self._read_keys(app, session, device, count, keys)
        except NoAnswerError:
            return
        for point in new:
            reliability = values.get((point.object or "", "reliability"))
            shown = str(reliability) if not isinstance(reliability, Quality) else "unknown"
            session.warn_once(
                f"fault-{point.name}",
                logging.WARNING,
                "device %s point %s is in fault: reliability %s",
                device.id,
                point.name,
                shown,
            )

    async def read_point(self, device: Device, point: Point) -> Reading:
        """Read one point, with its status flags."""
        count = _Count()
        try:
            session, app = await self._session(device)
        except (OSError, ValueError, TimeoutError):
            return Reading.bad(Quality.COMM_ERROR)
        async with session.lock:
            try:
                await self._ensure_ready(app, session, device, count)
                readings = await self._read_points(app, session, device, count, [point])
            except NoAnswerError:
                session.ready = False
                return Reading.bad(Quality.TIMEOUT)
            except BacnetError as exc:
                return Reading.bad(exc.quality)
        return readings[point.name]

    # -- writing ------------------------------------------------------------------------------

    async def write(self, device: Device, point: Point, value: Value, *, release: bool = False) -> WriteResult:
        """Write at the point's priority within its limits, read back, and report the priority array."""
        limits = point.writable
        if limits is None or point.object is None:
            return WriteResult(ok=False, outcome="refused", reason=f"point {point.name!r} is not writable in its model")
        priority = limits.priority
        if priority is not None and priority <= LOWEST_FORBIDDEN_PRIORITY:
            return WriteResult(ok=False, outcome="refused", reason=f"priority {priority} is reserved for life safety")
        count = _Count()
        try:
            session, app = await self._session(device)
        except (OSError, ValueError, TimeoutError) as exc:
            return WriteResult(ok=False, outcome="failed", reason=f"device {device.id}: {exc}")
        async with session.lock:
            try:
                await self._ensure_ready(app, session, device, count)
                before = await self._command_state(app, session, device, count, point)
                try:
                    check_write(point, value, before.value, release=release)
                    bacnet_value = Null(()) if release else _encode(point, value)
                except WriteRefused as exc:
                    return WriteResult(
                        ok=False,
                        outcome="refused",
                        reason=str(exc),
                        before=before.value,
                        priority_array=before.slots,
                        active_priority=before.active,
                    )
                obj, prop = point.object, point.property
                try:
                    await self._call(
                        device,
                        count,
                        f"WriteProperty {obj} {prop}",
                        lambda: app.write_property(session.address, obj, prop, bacnet_value, priority=priority),
                    )
                except BacnetError as exc:
                    return WriteResult(
                        ok=False,
                        outcome="failed",
                        reason=f"device {device.id} refused the write: {exc}",
                        before=before.value,
                        priority_array=before.slots,
                        active_priority=before.active,
                    )
                after = await self._command_state(app, session, device, count, point)
            except NoAnswerError as exc:
                session.ready = False
                return WriteResult(ok=False, outcome="failed", reason=str(exc))
            except BacnetError as exc:
                return WriteResult(ok=False, outcome="failed", reason=f"device {device.id}: {exc}")
        return _write_outcome(device, point, value, priority=priority, release=release, before=before, after=after)

    async def _command_state(
        self, app: Any, session: _Session, device: Device, count: _Count, point: Point
    ) -> _CommandState:
        obj = point.object or ""
        keys: list[Key] = [(obj, point.property)]
        commandable = point.property == "present-value" and point.writable is not None and point.writable.priority
        if commandable:
            keys += [(obj, "priority-array"), (obj, "relinquish-default")]
        values = await self._read_keys(app, session, device, count, keys)
        reading = _reading(point, values[(obj, point.property)], None)
        slots: tuple[Value, ...] | None = None
        active: int | None = None
        default: Value = None
        array = values.get((obj, "priority-array"))
        if commandable and array is not None and not isinstance(array, Quality):
            decoded: list[Value] = []
            for slot in array:
                choice = getattr(slot, "_choice", None)
                raw = None if choice in (None, "null") else python_value(getattr(slot, choice))
                if raw is not None and _object_type(obj) in BINARY_TYPES:
                    # A slot holds a bare enumerated: 1 is active.
                    raw = raw in (True, 1, "1", "active")
                decoded.append(None if raw is None else decode_scalar(point, raw).value)
            slots = tuple(decoded)
            active = next((i + 1 for i, v in enumerate(slots) if v is not None), None)
            raw_default = values.get((obj, "relinquish-default"))
            if raw_default is not None and not isinstance(raw_default, Quality):
                default = _reading(point, raw_default, None).value
        return _CommandState(reading.value, slots, active, default)

    # -- discovery ----------------------------------------------------------------------------

    async def discover(
        self, host: str, port: int, instance: int | None = None, *, timeout_s: float = 3.0, retries: int = 1
    ) -> DiscoveredDevice:
        """Read a device's object list and each object's name, units and description."""
        address = await _resolve(host, timeout_s)
        bind = "127.0.0.1" if ipaddress.ip_address(address).is_loopback else "0.0.0.0"  # noqa: S104
        stack = await self._stack(bind, 0, timeout_s)
        app = stack.app
        target = Address(f"{address}:{port}")
        if instance is None:
            instance = await _who_is(app, target, timeout_s, retries)
        device = _probe_device(host, port, instance, timeout_s, retries)
        session = _Session(device.id, target, instance, BacnetOptions(device_instance=instance))
        count = _Count()
        await self._ensure_ready(app, session, device, count)
        device_object = f"device:{instance}"
        info = await self._read_keys(
            app,
            session,
            device,
            count,
            [(device_object, "object-name"), (device_object, "vendor-name"), (device_object, "model-name")],
        )
        object_ids = await self._object_list(app, session, device, count, device_object)
        wanted = [o for o in object_ids if _object_type(o) in ANALOG_TYPES | BINARY_TYPES | MULTISTATE_TYPES]
        others = tuple(o for o in object_ids if o not in wanted and _object_type(o) != "device")
        keys: list[Key] = []
        for obj in wanted:
            keys += [(obj, "object-name"), (obj, "description"), (obj, "priority-array")]
            if _object_type(obj) in ANALOG_TYPES:
                keys.append((obj, "units"))
            if _object_type(obj) in MULTISTATE_TYPES:
                keys.append((obj, "state-text"))
        values = await self._read_keys(app, session, device, count, keys)
        objects = tuple(_discovered(obj, values) for obj in wanted)
        return DiscoveredDevice(
            instance=instance,
            name=_text(info.get((device_object, "object-name"))),
            vendor=_text(info.get((device_object, "vendor-name"))),
            model_name=_text(info.get((device_object, "model-name"))),
            max_apdu=session.max_apdu,
            segmentation=session.segmentation,
            objects=objects,
            other_objects=others,
        )

    async def _object_list(
        self, app: Any, session: _Session, device: Device, count: _Count, device_object: str
    ) -> list[str]:
        """The object-list, whole when it fits (or the device segments), else item by item."""
        try:
            whole = await self._read_property(app, session, device, count, (device_object, "object-list"))
            return [_object_key(o) for o in whole]
        except BacnetError as exc:
            if not exc.too_long:
                raise
        length = await self._read_property(app, session, device, count, (device_object, "object-list[0]"))
        items: list[str] = []
        for index in range(1, int(length) + 1):
            item = await self._read_property(app, session, device, count, (device_object, f"object-list[{index}]"))
            items.append(_object_key(item))
        return items

    async def close(self) -> None:
        """Cancel COV subscriptions and close the UDP endpoints."""
        for stack in self._stacks.values():
            app = stack.app
            for (address, process_id), (_session, watch) in list(app.watches.items()):
                request = SubscribeCOVRequest(
                    subscriberProcessIdentifier=process_id,
                    monitoredObjectIdentifier=watch.object_identifier,
                    destination=address,
                )
                with contextlib.suppress(ErrorRejectAbortNack, TimeoutError):
                    await asyncio.wait_for(app.request(request), 1.0)
            app.watches.clear()
            app.close()
        self._stacks.clear()
        self._sessions.clear()


@dataclass(frozen=True, slots=True)
class _CommandState:
    value: Value
    slots: tuple[Value, ...] | None
    active: int | None
    default: Value


def _write_outcome(
    device: Device,
    point: Point,
    value: Value,
    *,
    priority: int | None,
    release: bool,
    before: _CommandState,
    after: _CommandState,
) -> WriteResult:
    common: dict[str, Any] = {
        "before": before.value,
        "after": after.value,
        "priority_array": after.slots,
        "active_priority": after.active,
    }
    if release:
        if after.slots is not None and priority is not None and after.slots[priority - 1] is not None:
            return WriteResult(ok=False, outcome="failed", reason=f"priority {priority} still holds a value", **common)
        held = f"priority {after.active}" if after.active is not None else "its relinquish-default"
        return WriteResult(ok=True, outcome="released", reason=f"the point now follows {held}", **common)
    if after.slots is not None and priority is not None:
        ours = after.slots[priority - 1]
        if after.active is not None and after.active < priority:
            holder = "an operator (manual)" if after.active == 8 else f"priority {after.active}"
            return WriteResult(
                ok=False,
                outcome="overridden",
                reason=(
                    f"{holder} holds {point.name} at {after.value}; our value {ours} at priority {priority} "
                    "takes effect only when the higher priority is released"
                ),
                **common,
            )
    if not _same(after.value, value, point):
        return WriteResult(
            ok=False, outcome="failed", reason=f"read back {after.value}, not {value}: device {device.id}", **common
        )
    return WriteResult(ok=True, outcome="written", **common)


def _same(read: Value, wanted: Value, point: Point) -> bool:
    if isinstance(read, bool) or isinstance(wanted, bool):
        return bool(read) == bool(wanted)
    if isinstance(read, int | float) and isinstance(wanted, int | float):
        # REAL is float32: compare to its precision.
        return math.isclose(float(read), float(wanted), rel_tol=1e-6, abs_tol=1e-6)
    return read == wanted or (point.enum is not None and str(read) == str(wanted))


def _encode(point: Point, value: Value) -> Any:
    """An engineering value as what the point's object takes; WriteRefused when it cannot be."""
    raw = to_raw(point, value)
    object_type = _object_type(point.object or "")
    if point.property != "present-value":
        return raw
    if object_type in BINARY_TYPES:
        if isinstance(raw, str):
            if raw in ("active", "inactive"):
                return raw
            raise WriteRefused(f"point {point.name!r}: {value!r} is not active/inactive")
        if float(raw) not in (0.0, 1.0):
            raise WriteRefused(f"point {point.name!r}: {value!r} is not 0 or 1")
        return "active" if raw else "inactive"
    if object_type in MULTISTATE_TYPES:
        if isinstance(raw, str) or float(raw) != int(raw) or int(raw) < 1:
            raise WriteRefused(f"point {point.name!r}: {value!r} is not a state number (1, 2, ...)")
        return int(raw)
    if isinstance(raw, str):
        raise WriteRefused(f"point {point.name!r}: {value!r} is not a number")
    return float(raw)


def _reading(point: Point, raw: Raw, flags: Raw) -> Reading:
    if isinstance(raw, Quality):
        return Reading.bad(raw)
    if flags is not None and not isinstance(flags, Quality):
        flagged = _flags_quality(flags)
        if flagged is not None:
            return Reading.bad(flagged)
    value = python_value(raw)
    if value is None:
        return Reading.bad(Quality.NOT_AVAILABLE)
    return decode_scalar(point, value)


def _failed(device: Device, ts: float, started: float, count: _Count, *, quality: Quality, message: str) -> PollResult:
    log.warning("%s", message, extra={"device": device.id, "protocol": "bacnet"})
    return PollResult(
        device=device.id,
        ts=ts,
        points={p.name: Reading.bad(quality) for p in device.model.points},
        requests=count.n,
        elapsed_s=time.perf_counter() - started,
        error=message,
    )


def _flatten(batch: Iterable[tuple[str, Sequence[str]]]) -> list[Key]:
    return [(obj, prop) for obj, props in batch for prop in props]


def _subtract(pending: list[tuple[str, list[str]]], done: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    for obj, props in pending:
        left = [p for p in props if p not in done.get(obj, ())]
        if left:
            out.append((obj, left))
    return out


def _has_service(services: Any, name: str) -> bool:
    try:
        return bool(services[getattr(services, name)])
    except (AttributeError, IndexError, TypeError):
        return False


def _text(value: Raw) -> str:
    if value is None or isinstance(value, Quality):
        return ""
    return str(value)


def _discovered(obj: str, values: dict[Key, Raw]) -> DiscoveredObject:
    units = values.get((obj, "units"))
    states = values.get((obj, "state-text"))
    state_names: tuple[str, ...] = ()
    if states is not None and not isinstance(states, Quality):
        with contextlib.suppress(TypeError):
            state_names = tuple(str(s) for s in states)
    priority_array = values.get((obj, "priority-array"))
    return DiscoveredObject(
        object=obj,
        name=_text(values.get((obj, "object-name"))) or obj.replace(":", "_"),
        description=_text(values.get((obj, "description"))),
        units=None if units is None or isinstance(units, Quality) else str(units),
        commandable=priority_array is not None and not isinstance(priority_array, Quality),
        states=state_names,
    )


async def _resolve(host: str, timeout_s: float) -> str:
    """An IPv4 address for host (names are looked up, with a timeout)."""
    try:
        ipaddress.IPv4Address(host)
    except ValueError:
        loop = asyncio.get_running_loop()
        infos = await asyncio.wait_for(loop.getaddrinfo(host, None, family=socket.AF_INET), timeout_s)
        if not infos:
            raise OSError(f"cannot resolve {host!r}") from None
        return str(infos[0][4][0])
    return host


async def _who_is(app: Any, target: Any, timeout_s: float, retries: int) -> int:
    """The instance of the device at target, from a unicast Who-Is (or a wildcard read)."""
    for _attempt in range(retries + 1):
        i_ams = await app.who_is(address=target, timeout=timeout_s)
        for i_am in i_ams or ():
            await app.device_info_cache.set_device_info(i_am)
            return int(i_am.iAmDeviceIdentifier[1])
    try:
        identifier = await asyncio.wait_for(
            app.read_property(target, f"device:{WILDCARD_INSTANCE}", "object-identifier"), timeout_s
        )
    except ErrorRejectAbortNack as answer:
        raise BacnetError(answer) from None
    except TimeoutError:
        raise NoAnswerError(f"no BACnet device answered at {target} within {timeout_s:g} s") from None
    return int(identifier[1])


def _probe_device(host: str, port: int, instance: int, timeout_s: float, retries: int) -> Device:
    """A throw-away Device for discovery (no model points)."""
    from agent.config import DeviceConfig  # noqa: PLC0415  (only discovery needs it)
    from models.schema import DeviceModel, Kind, Protocol  # noqa: PLC0415

    model = DeviceModel(
        id="discovery",
        kind=Kind.GENERIC,
        protocol=Protocol.BACNET,
        points=[Point(name="object_name", object=f"device:{instance}", property="object-name")],
    )
    config = DeviceConfig(id=f"{host}:{port}", model="discovery", host=host, port=port)
    return Device(config=config, model=model, port=port, interval_s=60.0, timeout_s=timeout_s, retries=retries)
