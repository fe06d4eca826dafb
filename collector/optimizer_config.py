"""The [optimizer] section of the collector configuration: chiller-plant optimiser settings."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from models.telemetry import ID_RE


def _ident(value: str) -> str:
    if not ID_RE.match(value):
        raise ValueError(f"{value!r} is not a valid id (letters, digits, '_', '.', ':', '-')")
    return value


Ident = Annotated[str, AfterValidator(_ident)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NameplateSection(_Section):
    """[optimizer.nameplate]: sizes of the plant (what the site knows without measuring)."""

    chillers: int = Field(ge=1, le=20)
    duty_chillers: int = Field(ge=1, le=20)
    chiller_capacity_kw: float = Field(gt=0)
    chw_design_flow_kg_s: float = Field(gt=0)  # whole plant, all duty pumps at full speed
    cw_design_flow_kg_s: float = Field(gt=0)
    min_unloading: float = Field(default=0.2, gt=0, lt=1)  # compressors cycle below this part load
    condenser_floor_c: float = 13.0  # head-pressure control: lowest condenser water the chillers see
    min_lift_k: float = Field(default=4.0, ge=0)
    tower_min_speed: float = Field(default=0.2, ge=0, lt=1)  # fans cycle below this speed
    # Tower cell staging (both or neither; 0: unknown): cells installed, and the condenser
    # flow each wetted cell needs. With them, fan power is modelled per wetted cell.
    tower_cells: int = Field(default=0, ge=0, le=64)
    tower_cell_min_flow_kg_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _duty(self) -> Self:
        if self.duty_chillers > self.chillers:
            raise ValueError("duty_chillers cannot exceed chillers")
        if (self.tower_cells > 0) != (self.tower_cell_min_flow_kg_s > 0):
            raise ValueError("tower_cells and tower_cell_min_flow_kg_s go together: give both or neither")
        return self


class LimitsSection(_Section):
    """[optimizer.limits]: what the optimiser may ask for."""

    chw_supply_min_c: float = 7.0
    chw_supply_max_c: float = 16.0
    cw_setpoint_min_c: float = 13.0
    cw_setpoint_max_c: float = 32.0
    chw_pump_min_pct: float = Field(default=30.0, ge=0, le=100)
    cw_pump_min_pct: float = Field(default=25.0, ge=0, le=100)
    evaporator_flow_min: float = Field(default=0.3, ge=0, le=1)
    condenser_flow_min: float = Field(default=0.5, ge=0, le=2)
    condenser_flow_max: float = Field(default=1.25, ge=0, le=2)
    max_plr: float = Field(default=0.9, gt=0, le=1.2)

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.chw_supply_min_c >= self.chw_supply_max_c:
            raise ValueError("chw_supply_min_c must be below chw_supply_max_c")
        if self.cw_setpoint_min_c >= self.cw_setpoint_max_c:
            raise ValueError("cw_setpoint_min_c must be below cw_setpoint_max_c")
        return self


class RateSection(_Section):
    """[optimizer.rate]: largest move of each setpoint per decision (keep within the points' max_step)."""

    chw_supply_k: float = Field(default=1.0, gt=0)
    cw_setpoint_k: float = Field(default=2.0, gt=0)
    pump_pct: float = Field(default=10.0, gt=0)


class BaselineSection(_Section):
    """[optimizer.baseline]: the site's own setpoints, used as fallback and to measure the saving."""

    chw_supply_c: float = 10.0
    cw_setpoint_c: float = 29.4
    chw_pump_pct: float = Field(default=80.0, ge=0, le=100)
    cw_pump_pct: float = Field(default=80.0, ge=0, le=100)


class SeriesRef(_Section):
    """One stored series: measurement (device kind), device and field (point)."""

    measurement: str
    device: Ident
    field: str
    scale: float = 1.0


class InletSensors(_Section):
    """IT inlet temperature points of one device (a sensor gateway, an air handler, ...)."""

    measurement: str = "gateway"
    device: Ident
    fields: list[str] = Field(min_length=1)


class DevicesSection(_Section):
    """[optimizer.devices]: which devices are the plant, and which agent commands them."""

    agent: Ident
    chillers: list[Ident] = Field(min_length=1)  # chiller-bacnet: chw_supply_setpoint
    towers: list[Ident] = Field(min_length=1)  # tower-modbus: leaving_water_setpoint
    chw_pumps: list[Ident] = Field(min_length=1)  # pump-modbus: speed_setpoint
    cw_pumps: list[Ident] = Field(min_length=1)
    it_power: list[SeriesRef] = Field(min_length=1)  # summed: the IT load, kW
    inlet_sensors: list[InletSensors] = Field(min_length=1)
    chiller_setpoint: str = "chw_supply_setpoint"
    tower_setpoint: str = "leaving_water_setpoint"
    pump_setpoint: str = "speed_setpoint"


class OptimizerSection(_Section):
    """[optimizer]: the chiller-plant optimiser (docs/optimizer.md)."""

    mode: Literal["off", "advisory", "closed-loop"] = "advisory"
    interval_s: float = Field(default=300.0, ge=10, le=3600)  # one decision every interval
    refit_interval_s: float = Field(default=6 * 3600.0, ge=60, le=30 * 86_400)
    history_days: float = Field(default=30.0, gt=0, le=366)  # telemetry the models are fitted on
    sample_s: float = Field(default=300.0, ge=10, le=3600)  # telemetry averaged into bins this long
    inlet_limit_c: float = 27.0
    inlet_margin_k: float = Field(default=0.5, ge=0)
    inlet_sigma: float = Field(default=1.0, ge=0)  # further multiples of the inlet model's error bound kept below
    fallback_inlet_margin_k: float = Field(default=0.3, ge=0)  # measured inlet this close to the limit: fall back
    max_data_age_s: float = Field(default=900.0, ge=10)  # newest plant data older than this: stale, fall back
    min_r2: float = Field(default=0.8, ge=0, le=1)
    min_samples: int = Field(default=200, ge=10)
    command_ttl_s: float = Field(default=120.0, ge=5, le=3600)
    sender: str = "optimizer"  # the `by` of every command (agents may restrict allowed_senders)
    topic: str = "dcim/v1/{site}/optimizer"  # retained recommendation
    nameplate: NameplateSection
    devices: DevicesSection
    limits: LimitsSection = LimitsSection()
    rate: RateSection = RateSection()
    baseline: BaselineSection = BaselineSection()
