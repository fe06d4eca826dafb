"""dcim-collector settle from raw figures: the contract's JSON keys, both directions, the edges."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

KEYS = {
    "pue",
    "it_kwh",
    "facility_kwh",
    "excess_kwh",
    "saved_kwh",
    "penalty",
    "bonus",
    "savings_value",
    "co2_t",
    "currency",
    "load_condition_met",
}


def settle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", "settle", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_source_facility_2022() -> None:
    result = settle(
        "--it-kwh", "100000000", "--facility-kwh", "115000000", "--tariff", "0.60", "--co2-factor", "0.3407", "--json"
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out) == KEYS
    assert out["pue"] == 1.15
    assert out["saved_kwh"] == 15_000_000
    assert out["savings_value"] == 9_000_000
    assert out["bonus"] == 900_000
    assert out["penalty"] == 0
    assert out["co2_t"] == pytest.approx(5110.5)  # the source document rounds this to 5,111 t
    assert out["load_condition_met"] is None
    assert out["currency"] == "CNY"


def test_penalty_case_and_load_condition() -> None:
    result = settle(
        "--it-kwh", "100000000", "--facility-kwh", "145000000", "--tariff", "0.60",
        "--capacity-kw", "20000", "--json",
    )  # fmt: skip
    out = json.loads(result.stdout)
    assert out["excess_kwh"] == 5_000_000
    assert out["penalty"] == 300_000
    assert out["bonus"] == 0
    # 100 GWh over 8760 h is 11.4 MW mean: below 70 % of 20 MW.
    assert out["load_condition_met"] is False


@pytest.mark.parametrize("facility", ["130000000", "140000000"])
def test_nothing_paid_at_exactly_threshold_or_cap(facility: str) -> None:
    out = json.loads(settle("--it-kwh", "100000000", "--facility-kwh", facility, "--json").stdout)
    assert out["bonus"] == 0
    assert out["penalty"] == 0


def test_bad_usage_exits_2() -> None:
    assert settle("--it-kwh", "5").returncode == 2
    bad = settle("--it-kwh", "0", "--facility-kwh", "5")
    assert bad.returncode == 2
    assert "it_kwh must be positive" in bad.stderr


def test_readable_table() -> None:
    result = settle("--it-kwh", "1000", "--facility-kwh", "1200")
    assert result.returncode == 0
    assert "PUE" in result.stdout
    assert "1.2000" in result.stdout
