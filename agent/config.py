"""Agent configuration: public schema, loading and cross-checks against models."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlparse

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from models import catalog
from models.errors import ConfigError, read_toml, resolve_paths, validate
from models.schema import DeviceModel, Protocol
from models.telemetry import ID_RE


def _ident(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(f"{value!r} is not a valid id (letters, digits, '_', '.', ':', '-')")
    return value


def _mqtt_url(value: str) -> str:
    url = urlparse(value)
    if url.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{value!r}: scheme must be mqtt:// or mqtts://")
    if not url.hostname:
        raise ValueError(f"{value!r} names no host")
    try:
        _ = url.port
    except ValueError as exc:
        raise ValueError(f"{value!r}: {exc}") from None
    if url.username or url.password:
        raise ValueError("put no credentials in the URL: use username and password_file")
    return value


Ident = Annotated[str, AfterValidator(_ident)]
MqttUrl = Annotated[str, AfterValidator(_mqtt_url)]
Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentSection(_Section):
    """[agent]: who this agent is."""

    id: Ident
    site: Ident
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    health_interval_s: float = Field(default=30.0, gt=0)


class MqttSection(_Section):
    """[mqtt]: the broker and how to reach it."""

    url: MqttUrl = "mqtt://127.0.0.1:1883"
    protocol: Literal["3.1.1", "5"] = "5"
    client_id: str | None = None  # default: dcim-agent-{agent.id}
    username: str | None = None
    password_file: Path | None = None  # or $DCIM_MQTT_PASSWORD
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    inflight_max: int = Field(default=64, ge=1, le=65535)
    reconnect_max_s: int = Field(default=60, ge=1, le=3600)  # reconnect backoff doubles from 1 s up to this
    batch_devices: int = Field(default=1, ge=1, le=1000)  # reserved: devices per message

    @model_validator(mode="after")
    def _tls_pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        return self


class SpoolSection(_Section):
    """[spool]: store-and-forward while the broker is unreachable."""

    path: Path = Path("spool.sqlite")
    max_mb: float = Field(default=1024, gt=0)
    when_full: Literal["drop-oldest", "drop-newest"] = "drop-oldest"
    replay_per_s: float = Field(default=200.0, gt=0)


class DefaultsSection(_Section):
    """[defaults]: poll settings every device inherits unless it sets its own."""

    interval_s: float = Field(default=10.0, gt=0)
    timeout_s: float = Field(default=2.0, gt=0)
    retries: int = Field(default=1, ge=0, le=10)


class CommandsSection(_Section):
    """[commands]: setpoint writes from the collector."""

    advisory_only: bool = False  # refuse every write
    audit_log: Path = Path("audit.jsonl")
    allowed_senders: list[str] = Field(default_factory=list)  # empty: any sender


class TrapsSection(_Section):
    """[traps]: the SNMP trap receiver."""

    enabled: bool = False
    host: str = "0.0.0.0"  # noqa: S104  (traps come from devices on the equipment network)
    port: Port = 162
    community: str = "public"


class SnmpOptions(_Section):
    """Per-device SNMP settings."""

    version: Literal["1", "2c", "3"] = "2c"
    community: str = "public"
    user: str | None = None
    auth: Literal["SHA", "SHA-256", "SHA-512", "MD5"] | None = None
    auth_key_file: Path | None = None
    priv: Literal["AES", "AES-128", "AES-256", "DES"] | None = None
    priv_key_file: Path | None = None
    max_varbinds: int = Field(default=40, ge=1, le=1000)
    max_repetitions: int = Field(default=25, ge=1, le=1000)

    @model_validator(mode="after")
    def _v3(self) -> Self:
        if self.version == "3":
            if not self.user:
                raise ValueError("SNMPv3 needs 'user'")
            if (self.auth is None) != (self.auth_key_file is None):
                raise ValueError("'auth' and 'auth_key_file' go together")
            if self.priv is not None and self.auth is None:
                raise ValueError("privacy ('priv') needs authentication ('auth')")
            if (self.priv is None) != (self.priv_key_file is None):
                raise ValueError("'priv' and 'priv_key_file' go together")
        elif self.user or self.auth or self.priv:
            raise ValueError('user, auth and priv are for SNMPv3 (version = "3")')
        return self


class ModbusOptions(_Section):
    """Per-device Modbus settings."""

    unit: int = Field(default=1, ge=0, le=255)
    framer: Literal["tcp", "rtu-over-tcp", "rtu"] = "tcp"
    serial: str | None = None  # with framer = "rtu"
    baudrate: int = Field(default=9600, gt=0)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    max_registers: int = Field(default=125, ge=1, le=125)
    max_bits: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=16, ge=0, le=124)  # registers read and discarded to join two reads
    delay_ms: float = Field(default=0.0, ge=0)  # pause between requests for slow serial devices

    @model_validator(mode="after")
    def _serial(self) -> Self:
        if self.framer == "rtu" and not self.serial:
            raise ValueError("framer 'rtu' needs 'serial' (e.g. /dev/ttyUSB0)")
        if self.framer != "rtu" and self.serial:
            raise ValueError("'serial' is only for framer 'rtu'")
        return self


class BacnetOptions(_Section):
    """Per-device BACnet settings."""

    device_instance: int = Field(ge=0, le=4194302)
    local_port: Port | None = None  # default: an ephemeral port
    max_apdu: int = Field(default=1476, ge=50, le=1476)
    rpm: bool = True  # use ReadPropertyMultiple (falls back automatically when rejected)
    cov_lifetime_s: int = Field(default=300, ge=10)


class DeviceConfig(_Section):
    """[[devices]]: one device to poll."""

    id: Ident
    model: str
    host: str = "127.0.0.1"
    port: Port | None = None  # default: the protocol's port
    interval_s: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int | None = Field(default=None, ge=0, le=10)
    enabled: bool = True
    snmp: SnmpOptions | None = None
    modbus: ModbusOptions | None = None
    bacnet: BacnetOptions | None = None


class AgentConfig(_Section):
    """A whole agent configuration file."""

    agent: AgentSection
    mqtt: MqttSection = MqttSection()
    spool: SpoolSection = SpoolSection()
    defaults: DefaultsSection = DefaultsSection()
    commands: CommandsSection = CommandsSection()
    traps: TrapsSection = TrapsSection()
    devices: list[DeviceConfig] = Field(default_factory=list)


HEALTH_DEVICE_ID = "agent"  # the pseudo-device under which the agent publishes its own health

DEFAULT_PORTS: dict[Protocol, int] = {Protocol.MODBUS: 502, Protocol.SNMP: 161, Protocol.BACNET: 47808}


@dataclass(frozen=True, slots=True)
class Device:
    """A device with everything resolved: its model, port and poll settings."""

    config: DeviceConfig
    model: DeviceModel
    port: int
    interval_s: float
    timeout_s: float
    retries: int

    @property
    def id(self) -> str:
        """The device id."""
        return self.config.id

    @property
    def protocol(self) -> Protocol:
        """The protocol, which follows from the model."""
        return self.model.protocol


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated configuration file with its devices resolved."""

    path: Path
    config: AgentConfig
    devices: tuple[Device, ...]

    def device(self, device_id: str) -> Device:
        """The device of that id (KeyError naming it when unknown)."""
        for device in self.devices:
            if device.id == device_id:
                return device
        raise KeyError(f"no device {device_id!r} in {self.path}")


def _resolve(
    path: Path, index: int, dev: DeviceConfig, cfg: AgentConfig
) -> tuple[Device | None, list[tuple[str, str]]]:
    key = f"devices[{index}] ({dev.id})"
    try:
        model = catalog.load(dev.model, base=path.parent)
    except ConfigError as exc:
        return None, [(f"{key}.model", str(exc))]
    problems: list[tuple[str, str]] = []
    options = {Protocol.SNMP: dev.snmp, Protocol.MODBUS: dev.modbus, Protocol.BACNET: dev.bacnet}
    for protocol, value in options.items():
        if value is not None and protocol is not model.protocol:
            problems.append((f"{key}.{protocol}", f"model {model.id!r} speaks {model.protocol}, not {protocol}"))
    if model.protocol is Protocol.BACNET and dev.bacnet is None:
        problems.append((f"{key}.bacnet", "BACnet devices need bacnet = { device_instance = N }"))
    if problems:
        return None, problems
    device = Device(
        config=dev,
        model=model,
        port=dev.port or DEFAULT_PORTS[model.protocol],
        interval_s=dev.interval_s or cfg.defaults.interval_s,
        timeout_s=dev.timeout_s or cfg.defaults.timeout_s,
        retries=cfg.defaults.retries if dev.retries is None else dev.retries,
    )
    return device, []


def parse(path: Path, data: object) -> LoadedConfig:
    """Validate already-read TOML data; ConfigError lists every problem found."""
    cfg = resolve_paths(validate(AgentConfig, data, path), path.parent)
    problems: list[tuple[str, str]] = []
    devices: list[Device] = []
    seen: dict[str, int] = {}
    for index, dev in enumerate(cfg.devices):
        if dev.id in seen:
            problems.append((f"devices[{index}].id", f"{dev.id!r} is already used by devices[{seen[dev.id]}]"))
            continue
        seen[dev.id] = index
        if dev.id == HEALTH_DEVICE_ID:
            problems.append((f"devices[{index}].id", f"{dev.id!r} is reserved for the agent's own health telemetry"))
            continue
        device, errs = _resolve(path, index, dev, cfg)
        problems.extend(errs)
        if device is not None:
            devices.append(device)
    if cfg.mqtt.password_file is not None and not cfg.mqtt.password_file.is_file():
        problems.append(("mqtt.password_file", f"{cfg.mqtt.password_file} is not a readable file"))
    if problems:
        raise ConfigError(path, problems)
    return LoadedConfig(path=path, config=cfg, devices=tuple(devices))


def load(path: str | Path) -> LoadedConfig:
    """Read and validate an agent configuration file."""
    p = Path(path)
    return parse(p, read_toml(p))
