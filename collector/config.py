"""Collector configuration: public schema and loading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from collector.alarms.settings import AlarmsSection, file_problems
from collector.analytics_config import AvailabilitySection, ContractSection, JobsSection, PueSection
from collector.optimizer_config import OptimizerSection
from models.errors import ConfigError, read_toml, resolve_paths, validate
from models.telemetry import ID_RE


def _ident(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(f"{value!r} is not a valid id (letters, digits, '_', '.', ':', '-')")
    return value


def _tz(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{value!r} is not an IANA time zone (e.g. Asia/Shanghai)") from None
    return value


def _url(schemes: tuple[str, ...]) -> AfterValidator:
    def check(value: str) -> str:
        url = urlparse(value)
        if url.scheme not in schemes or not url.hostname:
            raise ValueError(f"{value!r} is not a {' or '.join(s + '://' for s in schemes)} URL with a host")
        if url.username or url.password:
            raise ValueError("put no credentials in the URL: use the username and *_file keys")
        return value

    return AfterValidator(check)


def _topic(value: str) -> str:
    if not value or any(c in value for c in "+#\0") or value.startswith("$"):
        raise ValueError(f"{value!r} is not a topic to publish to (no wildcards, no leading '$')")
    return value


Ident = Annotated[str, AfterValidator(_ident)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CollectorSection(_Section):
    """[collector]: who this collector is."""

    id: Ident
    site: Ident
    timezone: Annotated[str, AfterValidator(_tz)] = "UTC"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"


class MqttSection(_Section):
    """[mqtt]: the broker."""

    url: Annotated[str, _url(("mqtt", "mqtts"))] = "mqtt://127.0.0.1:1883"
    shared_group: str = ""
    client_id: str | None = None
    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    dead_letter_topic: Annotated[str, AfterValidator(_topic)] = "dcim/v1/dead-letter"
    protocol: Literal["5", "3.1.1"] = "5"
    # How long the broker keeps this collector's session (and its queued messages) while it is away.
    session_expiry_s: int = Field(default=7 * 86400, ge=60, le=0xFFFFFFFF)
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _tls(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if self.shared_group and not ID_RE.match(self.shared_group):
            raise ValueError(
                f"shared_group {self.shared_group!r} is not a valid name (letters, digits, '_', '.', ':', '-')"
            )
        return self


class StoreSection(_Section):
    """[store]: where readings go."""

    kind: Literal["influxdb", "sqlite"] = "sqlite"
    url: Annotated[str, _url(("http", "https"))] = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v1"
    database: str = "dcim"
    username: str | None = None
    password_file: Path | None = None
    org: str | None = None
    bucket: str | None = None
    token_file: Path | None = None
    path: Path = Path("store.sqlite")
    retention_policy: str | None = None
    create_database: bool = True
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    gzip: bool = True

    @model_validator(mode="after")
    def _v2(self) -> Self:
        if self.kind == "influxdb" and self.api == "v2" and not (self.org and self.bucket and self.token_file):
            raise ValueError("api = 'v2' needs org, bucket and token_file")
        return self


class IngestSection(_Section):
    """[ingest]: the queue between MQTT and the store, de-duplication and self-metrics."""

    # Unacknowledged messages held in memory, and the MQTT 5 receive maximum asked of the broker.
    # When the queue is full the collector stops reading (and acknowledging) until it drains.
    queue_max_messages: int = Field(default=10_000, ge=1, le=65_535)
    max_write_values: int = Field(default=200_000, ge=1, le=10_000_000)
    # How long the writer waits for a write to fill up (fewer, larger writes are much faster).
    write_linger_s: float = Field(default=0.2, ge=0, le=10)
    dedup_window: int = Field(default=256, ge=0, le=1_000_000)
    metrics_interval_s: float = Field(default=10.0, ge=0.1, le=3600)
    retry_max_s: float = Field(default=30.0, ge=0.1, le=3600)
    drain_timeout_s: float = Field(default=10.0, ge=0, le=600)


class CollectorConfig(_Section):
    """A whole collector configuration file."""

    collector: CollectorSection
    mqtt: MqttSection = MqttSection()
    store: StoreSection = StoreSection()
    ingest: IngestSection = IngestSection()
    alarms: AlarmsSection = AlarmsSection()
    pue: PueSection | None = None
    availability: AvailabilitySection | None = None
    contract: ContractSection | None = None
    jobs: JobsSection = JobsSection()
    optimizer: OptimizerSection | None = None


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated collector configuration."""

    path: Path
    config: CollectorConfig


def load(path: str | Path) -> LoadedConfig:
    """Read and validate a collector configuration file."""
    p = Path(path)
    cfg = resolve_paths(validate(CollectorConfig, read_toml(p), p), p.parent)
    problems: list[tuple[str, str]] = []
    for key, file in (
        ("mqtt.password_file", cfg.mqtt.password_file),
        ("store.password_file", cfg.store.password_file),
        ("store.token_file", cfg.store.token_file),
    ):
        if file is not None and not file.is_file():
            problems.append((key, f"{file} is not a readable file"))
    problems += file_problems(cfg.alarms, p.parent)
    if problems:
        raise ConfigError(p, problems)
    return LoadedConfig(path=p, config=cfg)
