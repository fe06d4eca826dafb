"""Collector configuration: schema (CONTRACTS.md) and loading."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Self
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from models.errors import ConfigError, read_toml, validate
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
    dead_letter_topic: str = "dcim/v1/dead-letter"


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

    @model_validator(mode="after")
    def _v2(self) -> Self:
        if self.kind == "influxdb" and self.api == "v2" and not (self.org and self.bucket and self.token_file):
            raise ValueError("api = 'v2' needs org, bucket and token_file")
        return self


class CollectorConfig(_Section):
    """A whole collector configuration file."""

    collector: CollectorSection
    mqtt: MqttSection = MqttSection()
    store: StoreSection = StoreSection()


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated collector configuration."""

    path: Path
    config: CollectorConfig


def load(path: str | Path) -> LoadedConfig:
    """Read and validate a collector configuration file."""
    p = Path(path)
    cfg = validate(CollectorConfig, read_toml(p), p)
    problems: list[tuple[str, str]] = []
    for key, file in (
        ("mqtt.password_file", cfg.mqtt.password_file),
        ("store.password_file", cfg.store.password_file),
        ("store.token_file", cfg.store.token_file),
    ):
        if file is not None and not file.is_file():
            problems.append((key, f"{file} is not a readable file"))
    if problems:
        raise ConfigError(p, problems)
    return LoadedConfig(path=p, config=cfg)
