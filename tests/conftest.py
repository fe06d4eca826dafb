"""Shared fixtures: real Mosquitto and InfluxDB on free loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import servers


def _binary_or_skip(name: str) -> str:
    path = servers.find_binary(name)
    if path is None:
        message = f"{name} is not installed; {servers.INSTALL_HINT}"
        if servers.servers_required():
            pytest.fail(f"{message} ({servers.REQUIRE_ENV}=1: missing servers are failures)")
        pytest.skip(message)
    return path


@pytest.fixture
def mosquitto_bin() -> str:
    """Path of the mosquitto binary (skip or fail when missing)."""
    return _binary_or_skip("mosquitto")


@pytest.fixture
def influxd_bin() -> str:
    """Path of the influxd binary (skip or fail when missing)."""
    return _binary_or_skip("influxd")


@pytest.fixture
def mosquitto(mosquitto_bin: str, tmp_path: Path) -> Iterator[servers.Mosquitto]:
    """A fresh Mosquitto broker for one test."""
    broker = servers.start_mosquitto(mosquitto_bin, tmp_path / "mosquitto")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def influxdb(influxd_bin: str, tmp_path: Path) -> Iterator[servers.InfluxDB]:
    """A fresh InfluxDB 1.x server for one test."""
    server = servers.start_influxdb(influxd_bin, tmp_path / "influxdb")
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """With DCIM_REQUIRE_SERVERS=1, a test skipped because a tool "is not installed" fails.

    Tests skip with that phrase when a server or third-party tool they need is missing
    (a developer's laptop); in CI every such tool is installed, so a skip there means a
    broken install step and must not pass silently.
    """
    del item, call
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.skipped and servers.servers_required() and "not installed" in str(report.longrepr):
        report.outcome = "failed"
        report.longrepr = f"{servers.REQUIRE_ENV}=1 and a required tool is missing: {report.longrepr}"
