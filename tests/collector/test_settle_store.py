"""dcim-collector settle --config --year: the contract settled from stored meter counters."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from collector.store.sqlite import SqliteStore
from tests.collector import analytics_seed as seed

SHANGHAI = ZoneInfo("Asia/Shanghai")
IT_KWH_2022 = 100_000_000.0  # 11.4 MW mean IT load for a year: the source document's 2022 figures
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

SETTLE_TOML = """
[pue]
emission_factor = 0.3407
emission_factor_source = "implied by the source document's 2022 figures"

[[pue.meters]]
device = "utility"
role = "facility"

[[pue.meters]]
device = "ups-out"
role = "it_ups_output"

[contract]
capacity_kw = 12214.4    # 1,388 racks of 8.8 kW
{tariff}
"""
FLAT = "tariff = 0.60"
TIME_OF_USE = """
[[contract.tou]]
name = "peak"
start = "08:00"
end = "20:00"
price = 1.00

[[contract.tou]]
name = "valley"
start = "20:00"
end = "08:00"
price = 0.40
"""


def seed_year(path: Path, pue: float, *, it_missing_days: int = 0) -> None:
    """Hourly counters of 2022 (Beijing time) at constant power: IT 1e8 kWh a year, facility pue x that."""
    start = datetime(2022, 1, 1, tzinfo=SHANGHAI)
    hours = 8760
    ts = [(start + timedelta(hours=h)).timestamp() for h in range(hours + 1)]
    it = np.arange(hours + 1) * (IT_KWH_2022 / hours)
    facility = it * pue
    it_values: list[seed.Value] = [None if h < it_missing_days * 24 else v for h, v in enumerate(it.tolist())]
    store = SqliteStore(path)
    store.open()
    try:
        seed.write(
            store, seed.batches("utility", "meter", "meter-sdm630", ts, {"import_energy": ("kWh", facility.tolist())})
        )
        seed.write(store, seed.batches("ups-out", "meter", "meter-sdm630", ts, {"import_energy": ("kWh", it_values)}))
    finally:
        store.close()


def config(tmp_path: Path, tariff: str = FLAT) -> Path:
    store = f'kind = "sqlite"\npath = "{tmp_path / "store.sqlite"}"'
    return seed.write_config(
        tmp_path / "collector.toml", store, SETTLE_TOML.format(tariff=tariff), timezone="Asia/Shanghai"
    )


def settle(cfg: Path, *args: str) -> tuple[int, dict[str, Any]]:
    result = seed.dcim_collector("settle", "--config", str(cfg), "--year", "2022", *args, "--json")
    assert result.returncode in {0, 1}, result.stderr
    return result.returncode, json.loads(result.stdout)


def test_store_settlement_reproduces_the_source_2022_figures(tmp_path: Path) -> None:
    seed_year(tmp_path / "store.sqlite", 1.15)
    code, out = settle(config(tmp_path))
    assert code == 0
    assert set(out) >= KEYS
    assert out["pue"] == 1.15
    assert out["it_kwh"] == pytest.approx(IT_KWH_2022, abs=0.01)
    assert out["saved_kwh"] == pytest.approx(15_000_000, abs=0.01)
    assert out["savings_value"] == 9_000_000
    assert out["bonus"] == 900_000
    assert out["penalty"] == 0
    assert out["co2_t"] == pytest.approx(5110.5)  # 5,111 t in the source document
    assert out["load_condition_met"] is True  # 11.4 MW of 12.2 MW is above 70 %
    assert out["currency"] == "CNY"
    assert out["complete"] is True
    assert out["in_progress"] is False
    assert out["from"] == "2022-01-01T00:00:00+08:00"
    assert out["to"] == "2023-01-01T00:00:00+08:00"


def test_store_settlement_penalty_case(tmp_path: Path) -> None:
    seed_year(tmp_path / "store.sqlite", 1.45)
    code, out = settle(config(tmp_path))
    assert code == 0
    assert out["pue"] == 1.45
    assert out["excess_kwh"] == pytest.approx(5_000_000, abs=0.01)
    assert out["penalty"] == 300_000  # 10 % of 5 GWh at 0.60
    assert out["bonus"] == 0


def test_year_to_date_and_projection(tmp_path: Path) -> None:
    seed_year(tmp_path / "store.sqlite", 1.15)
    code, out = settle(config(tmp_path), "--as-of", "2022-03-02")
    assert code == 0
    assert out["in_progress"] is True
    assert out["to"] == "2022-03-02T00:00:00+08:00"
    assert out["it_kwh"] == pytest.approx(IT_KWH_2022 * 60 / 365, abs=0.01)
    assert out["bonus"] == pytest.approx(900_000 * 60 / 365, abs=0.01)
    projected = out["projected"]
    assert set(projected) == KEYS
    assert projected["it_kwh"] == pytest.approx(IT_KWH_2022, abs=0.01)
    assert projected["bonus"] == 900_000


def test_time_of_use_values_the_saving_at_its_hours(tmp_path: Path) -> None:
    seed_year(tmp_path / "store.sqlite", 1.15)
    code, out = settle(config(tmp_path, TIME_OF_USE))
    assert code == 0
    assert out["tariff"] == "time-of-use"
    # Constant power: half the saving at 1.00, half at 0.40.
    assert out["savings_value"] == pytest.approx(15_000_000 * 0.70, abs=0.01)
    assert out["bonus"] == pytest.approx(1_050_000, abs=0.01)


def test_missing_meter_data_is_settled_as_incomplete_and_exits_1(tmp_path: Path) -> None:
    seed_year(tmp_path / "store.sqlite", 1.15, it_missing_days=31)
    code, out = settle(config(tmp_path))
    assert code == 1
    assert out["complete"] is False
    assert out["incomplete_meters"] == ["ups-out:import_energy"]
    assert out["coverage"] == pytest.approx(334 / 365, abs=1e-4)


def test_settle_from_store_needs_its_sections(tmp_path: Path) -> None:
    cfg = seed.write_config(tmp_path / "c.toml", f'kind = "sqlite"\npath = "{tmp_path / "s.sqlite"}"')
    result = seed.dcim_collector("settle", "--config", str(cfg), "--year", "2022")
    assert result.returncode == 2
    assert "pue: the [pue] section is missing" in result.stderr
    assert "contract: the [contract] section is missing" in result.stderr
