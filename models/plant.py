"""Steady-state hourly physics of the data-centre chilled-water plant, vectorised with numpy.

The plant is a waterside-economised chilled-water plant: a plate heat exchanger
(the economiser) pre-cools the chilled-water return with condenser water from
the cooling towers; electric chillers (EnergyPlus ``Chiller:Electric:EIR``)
carry whatever load is left; variable-speed cooling towers (EnergyPlus
``YorkCalc``) reject the heat; chilled- and condenser-water pumps follow the
ASHRAE 90.1 Appendix G part-load curves; one aggregate cooling coil serves the
IT rooms.

Everything here is pure and deterministic: no I/O, no clock, no randomness.
All component functions broadcast over arbitrary array shapes, so the same
code evaluates one hour, a year of hours, or a ``(candidates, hours)`` block
for an optimiser.

Units are carried in names: ``_c`` degrees Celsius, ``_k`` kelvin
(temperature differences), ``_kw`` kilowatts, ``_kw_k`` kilowatts per kelvin,
``_kg_s`` kilograms per second, ``_kpa`` kilopascals, ``_m`` metres; ratios are
dimensionless.

Sign conventions: heat flows are kilowatts in their natural direction (load
removed from the chilled water, heat rejected to air); the one that can turn
negative is the economiser duty, when an economiser left on with condenser
water warmer than the chilled-water return heats the chilled water.
The IT load must be positive: the air-side model divides by it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

#: Anything numpy can broadcast into a float array (a scalar, a list, an array).
ArrayLike = npt.ArrayLike

CP_WATER_KJ_KG_K = 4.186
"""Specific heat of water, kJ/(kg·K); constant over the plant's 2-40 °C range."""

GRAVITY_M_S2 = 9.80665
"""Standard gravity, m/s², for pump hydraulic power."""

HOURS_PER_YEAR = 8760
"""Hours in the (non-leap) simulated year."""

FANS_AT_MAX = float("-inf")
"""Condenser-water setpoint meaning "run the tower fans at full speed".

Any setpoint the towers cannot reach has the same effect; this constant names
the intent.
"""

# Numerical guards: tiny positive floors that keep divisions finite when a flow
# or a load is exactly zero; far below any physically meaningful value.
_TINY = 1e-12
# Tower/chiller coupling: the root solve stops once every residual is below
# this (kelvin), or after this many iterations (never reached in practice).
_LEAVING_TOLERANCE_K = 1e-9
_LEAVING_MAX_ITERATIONS = 60


# ---------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ChillerParams:
    """One model of electric chiller (EnergyPlus ``Chiller:Electric:EIR``).

    Curves, with ``L`` the leaving chilled-water temperature and ``E`` the
    entering condenser-water temperature (°C)::

        CAPFT   = a1 + a2·L + a3·L² + a4·E + a5·E² + a6·L·E
        EIRFT   = e1 + e2·L + e3·L² + e4·E + e5·E² + e6·L·E
        EIRFPLR = b1 + b2·PLR + b3·PLR²

    The shapes come from a centrifugal VSD chiller of the EnergyPlus dataset
    (1,586 kW reference), reused at ``capacity_ref_kw``.

    Attributes:
        capacity_ref_kw: Reference cooling capacity of one chiller, kW.
        cop_ref: Reference coefficient of performance, kW cooling / kW electric.
        plr_min: Minimum unloading ratio; below it the compressor cycles.
        capft: Coefficients a1…a6 of the capacity curve.
        eirft: Coefficients e1…e6 of the temperature EIR curve.
        eirfplr: Coefficients b1…b3 of the part-load EIR curve.
        leaving_min_c: Lower clamp of ``L`` fed to the curves, °C.
        leaving_max_c: Upper clamp of ``L`` fed to the curves, °C.
        entering_min_c: Lower clamp of ``E`` fed to the curves, °C.
        entering_max_c: Upper clamp of ``E`` fed to the curves, °C.
        entering_floor_c: Head-pressure floor: the chiller never sees
            condenser water below this, °C (a real plant bypasses or throttles).
        min_lift_k: Minimum lift ``E - L``, K, also enforced by head-pressure
            control.
        count: Chillers installed.
        duty_count: Duty chillers (the rest are standby); design flows are
            shared among the duty chillers.

    """

    capacity_ref_kw: float = 3500.0
    cop_ref: float = 5.53
    plr_min: float = 0.19
    capft: tuple[float, float, float, float, float, float] = (
        1.119233,
        0.01130501,
        -0.0006423802,
        -0.005144512,
        -0.0003085995,
        0.0007813582,
    )
    eirft: tuple[float, float, float, float, float, float] = (
        1.110611,
        -0.03795765,
        0.0002851444,
        -0.004560404,
        0.0004044229,
        0.0001407332,
    )
    eirfplr: tuple[float, float, float] = (0.1996379, -0.1612021, 0.9608483)
    leaving_min_c: float = 7.22
    leaving_max_c: float = 16.0
    entering_min_c: float = 12.78
    entering_max_c: float = 32.0
    entering_floor_c: float = 13.0
    min_lift_k: float = 4.0
    count: int = 5
    duty_count: int = 4


#: EnergyPlus YorkCalc approach correlation, 27 coefficients. Term order (the
#: EnergyPlus and Modelica Buildings order): the innermost index runs over
#: powers 0..2 of wet-bulb ``T``, the middle one over powers 0..2 of range
#: ``R``, the outer one over powers 0..2 of liquid-to-gas ratio ``LG``:
#: c1 + c2·T + c3·T² + c4·R + c5·T·R + … + c27·T²·R²·LG².
YORKCALC_COEFFICIENTS: tuple[float, ...] = (
    -0.359741205,
    -0.055053608,
    0.0023850432,
    0.173926877,
    -0.0248473764,
    0.00048430224,
    -0.005589849456,
    0.0005770079712,
    -0.00001342427256,
    2.84765801111111,
    -0.121765149,
    0.0014599242,
    1.680428651,
    -0.0166920786,
    -0.0007190532,
    -0.025485194448,
    0.0000487491696,
    0.00002719234152,
    -0.0653766255555556,
    -0.002278167,
    0.0002500254,
    -0.0910565458,
    0.00318176316,
    0.000038621772,
    -0.0034285382352,
    0.00000856589904,
    -0.000001516821552,
)


@dataclass(frozen=True)
class TowerParams:
    """Variable-speed cooling-tower cells (EnergyPlus YorkCalc model).

    Attributes:
        cells: Tower cells installed.
        design_flow_kg_s: Design condenser-water flow (all duty chillers), kg/s.
        cell_flow_kg_s: Design water flow of one cell, kg/s.
        min_cell_flow_fraction: A cell is only wetted above this fraction of
            its design flow; sets how many cells are in use.
        design_range_k: Design range (entering - leaving water), K.
        fan_kw_per_kw_rejected: Full-speed fan power per kW rejected at design.
        min_airflow_ratio: Lowest fan speed (air-flow ratio) before cycling.
        free_convection_fraction: Air-flow ratio equivalent of natural draught
            with the fans off (EnergyPlus "fraction of tower capacity in free
            convection regime").
        coefficients: The 27 YorkCalc coefficients.
        wet_bulb_min_c: Lower validity bound of wet-bulb, °C (inputs clamped).
        wet_bulb_max_c: Upper validity bound of wet-bulb, °C (inputs clamped).
        range_min_k: Lower validity bound of range, K (clamped).
        range_max_k: Upper validity bound of range, K (clamped).
        water_flow_ratio_min: Lower validity bound of cell water-flow ratio.
        water_flow_ratio_max: Upper validity bound of cell water-flow ratio.
        liquid_gas_ratio_max: Upper validity bound of liquid-to-gas ratio.

    """

    cells: int = 6
    design_flow_kg_s: float = 689.0
    cell_flow_kg_s: float = 137.9
    min_cell_flow_fraction: float = 0.75
    design_range_k: float = 5.6
    fan_kw_per_kw_rejected: float = 0.010
    min_airflow_ratio: float = 0.2
    free_convection_fraction: float = 0.125
    coefficients: tuple[float, ...] = YORKCALC_COEFFICIENTS
    wet_bulb_min_c: float = -34.4
    wet_bulb_max_c: float = 26.67
    range_min_k: float = 1.1
    range_max_k: float = 22.2
    water_flow_ratio_min: float = 0.75
    water_flow_ratio_max: float = 1.25
    liquid_gas_ratio_max: float = 8.0

    @property
    def fan_design_kw(self) -> float:
        """Full-speed fan power of all cells, kW (0.010 x design heat rejected)."""
        rejected_kw = self.design_flow_kg_s * CP_WATER_KJ_KG_K * self.design_range_k
        return self.fan_kw_per_kw_rejected * rejected_kw

    @property
    def cell_fan_design_kw(self) -> float:
        """Full-speed fan power of one cell, kW."""
        return self.fan_design_kw / self.cells


@dataclass(frozen=True)
class PumpParams:
    """A variable-speed pump group with an ASHRAE 90.1 Appendix G curve.

    ``P = P_design · (k1·r + k2·r² + k3·r³)`` with ``r`` the flow ratio and
    ``P_design = m·g·H / η``.

    Attributes:
        design_flow_kg_s: Design mass flow, kg/s.
        head_m: Design head, m.
        efficiency: Combined pump/motor/drive efficiency at design.
        curve: Coefficients k1, k2, k3 of the part-load curve.

    """

    design_flow_kg_s: float
    head_m: float
    efficiency: float
    curve: tuple[float, float, float]

    @property
    def design_kw(self) -> float:
        """Hydraulic shaft power at design over efficiency, kW."""
        return self.design_flow_kg_s * GRAVITY_M_S2 * self.head_m / self.efficiency / 1000.0


CHW_PUMP = PumpParams(design_flow_kg_s=477.8, head_m=30.0, efficiency=0.70, curve=(0.0205, 0.4101, 0.5753))
"""Chilled-water pumps: 477.8 kg/s, 30 m, 70 % → 201 kW at design."""

CW_PUMP = PumpParams(design_flow_kg_s=689.0, head_m=25.0, efficiency=0.70, curve=(0.5726, -0.301, 0.7347))
"""Condenser-water pumps: 689 kg/s, 25 m, 70 % → 241 kW at design."""


@dataclass(frozen=True)
class EconomiserParams:
    """Waterside economiser: counterflow plate heat exchanger.

    Attributes:
        ua_kw_k: Overall conductance, kW/K (2 K approach at design flows).

    """

    ua_kw_k: float = 4253.0


@dataclass(frozen=True)
class AirSideParams:
    """Aggregate cooling coil and IT-room air path.

    Attributes:
        coil_ua_kw_k: Conductance of the aggregate counterflow coil, kW/K.
        air_rise_k: Air temperature rise across the IT equipment, K; it fixes
            the air capacity rate ``C_air = Q / air_rise_k``.
        inlet_offset_k: Mixing/bypass rise from supply air to IT inlet, K.
        inlet_limit_c: Hard upper limit on IT inlet temperature, °C (ASHRAE
            TC 9.9 recommended envelope).

    """

    coil_ua_kw_k: float = 1022.0
    air_rise_k: float = 12.0
    inlet_offset_k: float = 1.0
    inlet_limit_c: float = 27.0


@dataclass(frozen=True)
class LoadParams:
    """IT load profile and the facility overheads proportional to it.

    Attributes:
        it_design_kw: Mean weekday IT load, kW.
        daily_amplitude: Relative amplitude of the diurnal sinusoid.
        peak_shift_h: The sinusoid crosses zero upwards at this hour of day.
        weekend_factor: Multiplier on Saturdays and Sundays.
        chw_load_factor: Chilled-water load per kW of IT (air-handler fans and
            other gains end up in the chilled water).
        air_handler_fraction: Air-handler electric power per kW of IT.
        other_fraction: UPS losses and lighting per kW of IT.

    """

    it_design_kw: float = 11000.0
    daily_amplitude: float = 0.03
    peak_shift_h: float = 9.0
    weekend_factor: float = 0.98
    chw_load_factor: float = 1.04
    air_handler_fraction: float = 0.03
    other_fraction: float = 0.06


@dataclass(frozen=True)
class DecisionBounds:
    """Admissible range of every operating decision.

    Attributes:
        chw_supply_min_c: Lowest chilled-water supply setpoint, °C.
        chw_supply_max_c: Highest chilled-water supply setpoint, °C.
        cw_setpoint_below_wet_bulb_k: The condenser-water setpoint may go this
            far below the wet-bulb (it is then unreachable: fans at maximum), K.
        cw_setpoint_max_c: Highest condenser-water setpoint, °C.
        chw_flow_ratio_min: Lowest chilled-water flow ratio.
        cw_flow_ratio_min: Lowest condenser-water flow ratio.
        evaporator_flow_min: Lowest evaporator flow per running chiller, as a
            fraction of its design flow.
        condenser_flow_min: Lowest condenser flow per running chiller, as a
            fraction of its design flow.
        condenser_flow_max: Highest condenser flow per running chiller, as a
            fraction of its design flow.

    """

    chw_supply_min_c: float = 7.0
    chw_supply_max_c: float = 16.0
    cw_setpoint_below_wet_bulb_k: float = 2.0
    cw_setpoint_max_c: float = 32.0
    chw_flow_ratio_min: float = 0.30
    cw_flow_ratio_min: float = 0.25
    evaporator_flow_min: float = 0.3
    condenser_flow_min: float = 0.5
    condenser_flow_max: float = 1.25


@dataclass(frozen=True)
class PlantParams:
    """Every coefficient of the plant; defaults are the reference plant."""

    chiller: ChillerParams = field(default_factory=ChillerParams)
    tower: TowerParams = field(default_factory=TowerParams)
    chw_pump: PumpParams = CHW_PUMP
    cw_pump: PumpParams = CW_PUMP
    economiser: EconomiserParams = field(default_factory=EconomiserParams)
    air_side: AirSideParams = field(default_factory=AirSideParams)
    load: LoadParams = field(default_factory=LoadParams)
    bounds: DecisionBounds = field(default_factory=DecisionBounds)

    @property
    def evaporator_design_flow_kg_s(self) -> float:
        """Design evaporator flow of one chiller, kg/s."""
        return self.chw_pump.design_flow_kg_s / self.chiller.duty_count

    @property
    def condenser_design_flow_kg_s(self) -> float:
        """Design condenser flow of one chiller, kg/s."""
        return self.cw_pump.design_flow_kg_s / self.chiller.duty_count


DEFAULT_PARAMS = PlantParams()
"""The reference plant."""


# ---------------------------------------------------------------------------
# Boundary conditions: weather and IT load
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClimateNormals:
    """Monthly climate normals that drive the synthetic weather year.

    Attributes:
        daily_high_c: Mean daily maximum dry-bulb for January…December, °C.
        daily_low_c: Mean daily minimum dry-bulb for January…December, °C.
        relative_humidity: Monthly mean relative humidity, fraction 0-1.
        days_in_month: Length of each month, days (365-day year).
        synoptic: ``(amplitude_k, period_days, phase_rad)`` sinusoids added to
            the daily mean to mimic passing weather systems.
        warmest_hour: Hour of day of the diurnal maximum.

    """

    daily_high_c: tuple[float, ...]
    daily_low_c: tuple[float, ...]
    relative_humidity: tuple[float, ...]
    days_in_month: tuple[int, ...] = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
    synoptic: tuple[tuple[float, float, float], ...] = ((2.0, 5.3, 0.0), (1.5, 11.7, 1.0))
    warmest_hour: float = 15.0


BEIJING_NORMALS = ClimateNormals(
    daily_high_c=(1.8, 5.0, 11.6, 20.3, 26.0, 30.2, 30.9, 29.7, 25.8, 19.1, 10.1, 3.7),
    daily_low_c=(-8.4, -5.6, 0.4, 7.9, 13.6, 18.8, 22.0, 20.8, 14.8, 7.9, 0.0, -5.8),
    relative_humidity=(0.44, 0.44, 0.46, 0.46, 0.53, 0.61, 0.75, 0.77, 0.68, 0.61, 0.57, 0.49),
)
"""Beijing 1971-2000 monthly normals (relative humidity assumed)."""


@dataclass(frozen=True)
class Weather:
    """Hourly outdoor conditions.

    Attributes:
        hours: Hour index from the start of the year (0 = 1 January 00:00).
        dry_bulb_c: Dry-bulb temperature, °C.
        wet_bulb_c: Thermodynamic wet-bulb temperature, °C.

    """

    hours: FloatArray
    dry_bulb_c: FloatArray
    wet_bulb_c: FloatArray


def saturation_pressure_kpa(temp_c: ArrayLike) -> FloatArray:
    """Saturation vapour pressure over water (≥ 0 °C) or ice (< 0 °C), kPa.

    Hyland-Wexler formulation as given in ASHRAE Handbook—Fundamentals (2017),
    chapter 1, equations 5 and 6.
    """
    t_k = np.asarray(temp_c, dtype=np.float64) + 273.15
    log_t = np.log(t_k)
    over_ice = (
        -5.6745359e3 / t_k
        + 6.3925247
        - 9.6778430e-3 * t_k
        + 6.2215701e-7 * t_k**2
        + 2.0747825e-9 * t_k**3
        - 9.4840240e-13 * t_k**4
        + 4.1635019 * log_t
    )
    over_water = (
        -5.8002206e3 / t_k
        + 1.3914993
        - 4.8640239e-2 * t_k
        + 4.1764768e-5 * t_k**2
        - 1.4452093e-8 * t_k**3
        + 6.5459673 * log_t
    )
    result: FloatArray = np.exp(np.where(t_k < 273.15, over_ice, over_water)) / 1000.0
    return result


def humidity_ratio(temp_c: ArrayLike, relative_humidity: ArrayLike, pressure_kpa: float = 100.0) -> FloatArray:
    """Humidity ratio W, kg water per kg dry air, from temperature (°C) and RH (0-1)."""
    vapour_kpa = np.asarray(relative_humidity, dtype=np.float64) * saturation_pressure_kpa(temp_c)
    result: FloatArray = 0.621945 * vapour_kpa / (pressure_kpa - vapour_kpa)
    return result


def _psychrometric_humidity_ratio(dry_bulb_c: FloatArray, wet_bulb_c: FloatArray, pressure_kpa: float) -> FloatArray:
    """Humidity ratio implied by a dry-bulb/wet-bulb pair (ASHRAE eqs. 33 and 35)."""
    ws = humidity_ratio(wet_bulb_c, 1.0, pressure_kpa)
    above = ((2501.0 - 2.326 * wet_bulb_c) * ws - 1.006 * (dry_bulb_c - wet_bulb_c)) / (
        2501.0 + 1.86 * dry_bulb_c - 4.186 * wet_bulb_c
    )
    below = ((2830.0 - 0.24 * wet_bulb_c) * ws - 1.006 * (dry_bulb_c - wet_bulb_c)) / (
        2830.0 + 1.86 * dry_bulb_c - 2.1 * wet_bulb_c
    )
    result: FloatArray = np.where(wet_bulb_c >= 0.0, above, below)
    return result


def wet_bulb_c(dry_bulb_c: ArrayLike, humidity_ratio_kg_kg: ArrayLike, pressure_kpa: float = 100.0) -> FloatArray:
    """Thermodynamic wet-bulb temperature, °C, by vectorised bisection.

    Solves the ASHRAE psychrometric equation for the wet-bulb ``t*`` that gives
    the humidity ratio ``W`` at dry-bulb ``t``. Where ``W`` exceeds saturation
    at ``t`` (fog: the day's moisture held through a cold night), the air is
    taken as saturated and the wet-bulb equals the dry-bulb.

    Args:
        dry_bulb_c: Dry-bulb temperature, °C.
        humidity_ratio_kg_kg: Humidity ratio, kg/kg dry air.
        pressure_kpa: Barometric pressure, kPa.

    """
    t = np.asarray(dry_bulb_c, dtype=np.float64)
    w = np.minimum(
        np.asarray(humidity_ratio_kg_kg, dtype=np.float64),
        humidity_ratio(t, 1.0, pressure_kpa),
    )
    t, w = np.broadcast_arrays(t, w)
    # The implied humidity ratio rises monotonically with t*; at t* = t it is
    # saturation (≥ w) and 60 K lower it is negative, so the root is bracketed.
    low = t - 60.0
    high = t.copy()
    for _ in range(48):  # 60 K / 2**48 ≈ 2e-13 K
        mid = 0.5 * (low + high)
        above = _psychrometric_humidity_ratio(t, mid, pressure_kpa) > w
        high = np.where(above, mid, high)
        low = np.where(above, low, mid)
    result: FloatArray = 0.5 * (low + high)
    return result


def weather_year(
    normals: ClimateNormals = BEIJING_NORMALS,
    pressure_kpa: float = 100.0,
    hours: ArrayLike | None = None,
) -> Weather:
    """Synthetic hourly dry-bulb and wet-bulb for one 365-day year.

    Construction (hour ``h``, day ``d = h/24``, hour of day ``h mod 24``):

    * the monthly mean daily high and low are interpolated linearly to each
      day's midpoint, periodically, with the anchors at mid-month;
    * dry-bulb = (high + low)/2 + synoptic swing
      + (high - low)/2 · cos(2π(hour_of_day - warmest_hour)/24),
      where the synoptic swing is Σ A·sin(2π·d/period + phase) in continuous d;
    * the humidity ratio is held for each day at that day's mean dry-bulb (the
      mean of its 24 hourly values) and the month's relative humidity;
    * the wet-bulb solves the psychrometric equation at ``pressure_kpa``.

    Args:
        normals: Monthly climate normals.
        pressure_kpa: Barometric pressure, kPa.
        hours: Hour indices to return (default: 0 … 8759). The humidity ratio
            always uses whole-day means, so any subset gives the same values
            as the full year at those hours.

    """
    hour_index = np.arange(HOURS_PER_YEAR, dtype=np.float64) if hours is None else np.asarray(hours, dtype=np.float64)
    days_in_year = float(sum(normals.days_in_month))
    month_length = np.asarray(normals.days_in_month, dtype=np.float64)
    month_end = np.cumsum(month_length)
    mid_month = month_end - month_length / 2.0

    def dry_bulb_at(h: FloatArray) -> FloatArray:
        day_position = h / 24.0
        day_centre = np.floor(day_position) + 0.5
        high = np.interp(day_centre, mid_month, normals.daily_high_c, period=days_in_year)
        low = np.interp(day_centre, mid_month, normals.daily_low_c, period=days_in_year)
        swing = np.zeros_like(h)
        for amplitude_k, period_days, phase_rad in normals.synoptic:
            swing += amplitude_k * np.sin(2.0 * np.pi * day_position / period_days + phase_rad)
        hour_of_day = np.mod(h, 24.0)
        diurnal = np.cos(2.0 * np.pi * (hour_of_day - normals.warmest_hour) / 24.0)
        result: FloatArray = (high + low) / 2.0 + swing + (high - low) / 2.0 * diurnal
        return result

    dry_bulb = dry_bulb_at(hour_index)
    # Daily mean from the 24 whole hours of each hour's day, so the result does
    # not depend on which hours were requested.
    day_start = np.floor(hour_index / 24.0) * 24.0
    day_hours = day_start[..., np.newaxis] + np.arange(24.0)
    daily_mean = dry_bulb_at(day_hours).mean(axis=-1)
    day_of_year = np.mod(np.floor(hour_index / 24.0), days_in_year)
    month = np.minimum(np.searchsorted(month_end, day_of_year, side="right"), 11)
    rh = np.asarray(normals.relative_humidity, dtype=np.float64)[month]
    w = humidity_ratio(daily_mean, rh, pressure_kpa)
    return Weather(
        hours=hour_index,
        dry_bulb_c=dry_bulb,
        wet_bulb_c=wet_bulb_c(dry_bulb, w, pressure_kpa),
    )


def parse_weather_csv(text: str, source: str = "<string>") -> Weather:
    """Parse hourly weather from CSV text with ``dry_bulb_c`` and ``wet_bulb_c`` columns.

    The first non-blank, non-``#`` line is a header naming the columns (in any
    order, case-insensitive; other columns are ignored). Each following line
    is one hour, in order from hour 0. The caller reads the file, so this
    module stays free of I/O.

    Args:
        text: The whole CSV content.
        source: Name used in error messages (usually the file name).

    Raises:
        ValueError: Naming ``source`` and the 1-based line number on a missing
            column, a wrong field count, a non-numeric or non-finite value, a
            wet-bulb above its dry-bulb, or no data rows.

    """
    header: list[str] | None = None
    line_numbers: list[int] = []
    rows: list[list[str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split(",")]
        if header is None:
            header = [f.lower() for f in fields]
            for needed in ("dry_bulb_c", "wet_bulb_c"):
                if needed not in header:
                    raise ValueError(f"{source} line {number}: header lacks column {needed!r}")
            continue
        if len(fields) != len(header):
            raise ValueError(f"{source} line {number}: expected {len(header)} fields, got {len(fields)}")
        rows.append(fields)
        line_numbers.append(number)
    if header is None or not rows:
        raise ValueError(f"{source}: no header and data rows found")
    columns = [header.index("dry_bulb_c"), header.index("wet_bulb_c")]
    table = np.asarray(rows, dtype=np.str_)[:, columns]
    values = np.full(table.shape, np.nan)
    try:
        values = table.astype(np.float64)
    except ValueError:
        # Find the first offending cell only on failure, to name its line.
        for i, row in enumerate(table):
            for cell in row:
                try:
                    float(cell)
                except ValueError:
                    raise ValueError(f"{source} line {line_numbers[i]}: not a number: {str(cell)!r}") from None
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        raise ValueError(f"{source} line {line_numbers[int(np.argmax(bad))]}: non-finite value")
    # 0.05 K of slack for rounding in the source data.
    inverted = values[:, 1] > values[:, 0] + 0.05
    if inverted.any():
        raise ValueError(f"{source} line {line_numbers[int(np.argmax(inverted))]}: wet-bulb above dry-bulb")
    return Weather(
        hours=np.arange(len(values), dtype=np.float64),
        dry_bulb_c=np.ascontiguousarray(values[:, 0]),
        wet_bulb_c=np.minimum(values[:, 1], values[:, 0]),
    )


def it_load_kw(hours: ArrayLike, load: LoadParams | None = None) -> FloatArray:
    """IT electrical load, kW, for hour indices from the start of the year.

    ``P_IT = P_design · (1 + a·sin(2π(hour_of_day - shift)/24))``, times the
    weekend factor on Saturdays and Sundays. Hour 0 is Monday 00:00 (as in
    2001, a non-leap year that began on a Monday), so days 5 and 6 of every
    week (counting from 0) are the weekend. Hour indices may be fractional or
    run past one year; the week simply repeats.
    """
    p = load or LoadParams()
    h = np.asarray(hours, dtype=np.float64)
    hour_of_day = np.mod(h, 24.0)
    weekend = np.mod(np.floor(h / 24.0), 7.0) >= 5.0
    diurnal = 1.0 + p.daily_amplitude * np.sin(2.0 * np.pi * (hour_of_day - p.peak_shift_h) / 24.0)
    result: FloatArray = p.it_design_kw * diurnal * np.where(weekend, p.weekend_factor, 1.0)
    return result


# ---------------------------------------------------------------------------
# Components
# ---------------------------------------------------------------------------


def _biquadratic(c: tuple[float, ...], x: FloatArray, y: FloatArray) -> FloatArray:
    """EnergyPlus biquadratic ``c1 + c2·x + c3·x² + c4·y + c5·y² + c6·x·y``."""
    result: FloatArray = c[0] + x * (c[1] + c[2] * x + c[5] * y) + y * (c[3] + c[4] * y)
    return result


def chiller_curve_inputs(
    leaving_c: ArrayLike, entering_c: ArrayLike, chiller: ChillerParams | None = None
) -> tuple[FloatArray, FloatArray]:
    """Clamp and floor the chiller curve inputs.

    Returns ``(L, E)``: the leaving chilled-water temperature clamped to the
    curve box, and the effective entering condenser-water temperature
    ``max(E_actual, floor, L + min_lift)`` clamped to the curve box, °C.
    """
    p = chiller or ChillerParams()
    leaving = np.clip(np.asarray(leaving_c, dtype=np.float64), p.leaving_min_c, p.leaving_max_c)
    entering = np.maximum(
        np.asarray(entering_c, dtype=np.float64),
        np.maximum(p.entering_floor_c, leaving + p.min_lift_k),
    )
    return leaving, np.clip(entering, p.entering_min_c, p.entering_max_c)


def chiller_capft(leaving_c: ArrayLike, entering_c: ArrayLike, chiller: ChillerParams | None = None) -> FloatArray:
    """Capacity modifier CAPFT at the (clamped, floored) curve inputs."""
    p = chiller or ChillerParams()
    leaving, entering = chiller_curve_inputs(leaving_c, entering_c, p)
    return _biquadratic(p.capft, leaving, entering)


def chiller_eirft(leaving_c: ArrayLike, entering_c: ArrayLike, chiller: ChillerParams | None = None) -> FloatArray:
    """Temperature EIR modifier EIRFT at the (clamped, floored) curve inputs."""
    p = chiller or ChillerParams()
    leaving, entering = chiller_curve_inputs(leaving_c, entering_c, p)
    return _biquadratic(p.eirft, leaving, entering)


@dataclass(frozen=True)
class ChillerOperation:
    """Operating point of a group of identical chillers sharing load equally.

    Attributes:
        power_kw: Electric power of the whole group, kW.
        plr: Part-load ratio of each running chiller (0 with none running).
        capacity_kw: Available capacity of each chiller at these temperatures, kW.

    """

    power_kw: FloatArray
    plr: FloatArray
    capacity_kw: FloatArray


def chiller_operation(
    load_kw: ArrayLike,
    running: ArrayLike,
    leaving_c: ArrayLike,
    entering_c: ArrayLike,
    chiller: ChillerParams | None = None,
) -> ChillerOperation:
    """Electric power of ``running`` chillers carrying ``load_kw`` together.

    Per chiller, with ``Q`` its share of the load::

        Q_avail = Q_ref · CAPFT(L, E)
        PLR     = Q / Q_avail
        CR      = min(PLR / PLR_min, 1)                     (cycling ratio)
        P       = Q_avail / COP_ref · EIRFT(L, E) · EIRFPLR(max(PLR, PLR_min)) · CR

    A PLR above 1 is evaluated on the extrapolated curve (and flagged by
    :func:`evaluate`): the power stays finite and monotone so that optimisers
    see a gradient back towards feasibility. Zero chillers draw no power.

    Args:
        load_kw: Total chiller load, kW (negative values count as zero).
        running: Number of chillers running (≥ 0).
        leaving_c: Leaving chilled-water temperature, °C.
        entering_c: Actual entering condenser-water temperature, °C.
        chiller: Chiller parameters.

    """
    p = chiller or ChillerParams()
    n = np.asarray(running, dtype=np.float64)
    leaving, entering = chiller_curve_inputs(leaving_c, entering_c, p)
    capacity = p.capacity_ref_kw * _biquadratic(p.capft, leaving, entering)
    eirft = _biquadratic(p.eirft, leaving, entering)
    per_chiller = np.maximum(np.asarray(load_kw, dtype=np.float64), 0.0) / np.maximum(n, 1.0)
    plr = per_chiller / capacity
    cycling = np.minimum(plr / p.plr_min, 1.0)
    plr_curve = np.maximum(plr, p.plr_min)
    b1, b2, b3 = p.eirfplr
    eirfplr = b1 + plr_curve * (b2 + b3 * plr_curve)
    power = n * capacity / p.cop_ref * eirft * eirfplr * cycling
    return ChillerOperation(
        power_kw=np.asarray(power, dtype=np.float64),
        plr=np.asarray(np.where(n > 0, plr, 0.0), dtype=np.float64),
        capacity_kw=np.asarray(capacity + 0.0 * n, dtype=np.float64),
    )


def chiller_cop(
    load_kw: ArrayLike,
    leaving_c: ArrayLike,
    entering_c: ArrayLike,
    chiller: ChillerParams | None = None,
) -> FloatArray:
    """Coefficient of performance of one chiller carrying ``load_kw``."""
    op = chiller_operation(load_kw, 1.0, leaving_c, entering_c, chiller)
    result: FloatArray = np.asarray(load_kw, dtype=np.float64) / np.maximum(op.power_kw, _TINY)
    return result


def _yorkcalc_lg_polynomial(
    wet_bulb_c: FloatArray, range_k: FloatArray, tower: TowerParams
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Coefficients ``(A0, A1, A2)`` of the YorkCalc approach as a quadratic in LG.

    Inputs must already be clamped to the correlation's validity box.
    """
    c = tower.coefficients
    t = wet_bulb_c
    r = range_k
    out: list[FloatArray] = []
    for k in range(3):
        base = 9 * k
        g0 = c[base] + t * (c[base + 1] + c[base + 2] * t)
        g1 = c[base + 3] + t * (c[base + 4] + c[base + 5] * t)
        g2 = c[base + 6] + t * (c[base + 7] + c[base + 8] * t)
        out.append(g0 + r * (g1 + g2 * r))
    return out[0], out[1], out[2]


def tower_approach_k(
    wet_bulb_c: ArrayLike,
    range_k: ArrayLike,
    liquid_gas_ratio: ArrayLike,
    tower: TowerParams | None = None,
) -> FloatArray:
    """YorkCalc approach (leaving water - entering air wet-bulb), K.

    The wet-bulb, range and liquid-to-gas ratio are clamped to the
    correlation's validity bounds first (as EnergyPlus does); the approach is
    floored at zero since water cannot leave colder than the air wet-bulb.

    Args:
        wet_bulb_c: Entering air wet-bulb, °C.
        range_k: Entering minus leaving water temperature, K.
        liquid_gas_ratio: Cell water-flow ratio over air-flow ratio (each
            relative to design).
        tower: Tower parameters.

    """
    p = tower or TowerParams()
    t = np.clip(np.asarray(wet_bulb_c, dtype=np.float64), p.wet_bulb_min_c, p.wet_bulb_max_c)
    r = np.clip(np.asarray(range_k, dtype=np.float64), p.range_min_k, p.range_max_k)
    lg = np.minimum(np.asarray(liquid_gas_ratio, dtype=np.float64), p.liquid_gas_ratio_max)
    a0, a1, a2 = _yorkcalc_lg_polynomial(t, r, p)
    result: FloatArray = np.maximum(a0 + lg * (a1 + a2 * lg), 0.0)
    return result


def tower_cells_in_use(flow_kg_s: ArrayLike, tower: TowerParams | None = None) -> IntArray:
    """Cells wetted: ``clip(floor(m / (0.75 · m_cell)), 1, cells)``."""
    p = tower or TowerParams()
    m = np.asarray(flow_kg_s, dtype=np.float64)
    cells = np.floor(m / (p.min_cell_flow_fraction * p.cell_flow_kg_s))
    return np.clip(cells, 1, p.cells).astype(np.int64)


def tower_fan_kw(airflow_ratio: ArrayLike, cells: ArrayLike, tower: TowerParams | None = None) -> FloatArray:
    """Fan power of ``cells`` cells running at ``airflow_ratio``, kW (∝ ratio³)."""
    p = tower or TowerParams()
    a = np.asarray(airflow_ratio, dtype=np.float64)
    result: FloatArray = np.asarray(cells, dtype=np.float64) * p.cell_fan_design_kw * a**3
    return result


def tower_airflow_for_approach(
    wet_bulb_c: ArrayLike,
    range_k: ArrayLike,
    water_flow_ratio: ArrayLike,
    approach_k: ArrayLike,
    tower: TowerParams | None = None,
) -> FloatArray:
    """Fan air-flow ratio that gives ``approach_k``, clipped to [minimum, 1].

    The reference asks for the fan speed by bisection on the approach. The YorkCalc
    approach is an exact quadratic in the liquid-to-gas ratio, so the
    bisection's limit is computed in closed form: the root on the branch where
    the approach rises with LG (the first crossing coming down in fan speed
    from full speed). Where no root exists the fan saturates at a bound.

    Args:
        wet_bulb_c: Entering air wet-bulb, °C.
        range_k: Water range, K.
        water_flow_ratio: Cell water-flow ratio (clamped to validity bounds).
        approach_k: Required approach, K.
        tower: Tower parameters.

    """
    p = tower or TowerParams()
    t = np.clip(np.asarray(wet_bulb_c, dtype=np.float64), p.wet_bulb_min_c, p.wet_bulb_max_c)
    r = np.clip(np.asarray(range_k, dtype=np.float64), p.range_min_k, p.range_max_k)
    w = np.clip(
        np.asarray(water_flow_ratio, dtype=np.float64),
        p.water_flow_ratio_min,
        p.water_flow_ratio_max,
    )
    a0, a1, a2 = _yorkcalc_lg_polynomial(t, r, p)
    excess = np.asarray(approach_k, dtype=np.float64) - a0
    disc = a1 * a1 + 4.0 * a2 * excess
    root = np.sqrt(np.maximum(disc, 0.0))
    # 2·excess/(A1 + √D) is the rising-branch root without cancellation.
    denom = a1 + root
    lg = np.where(
        (disc >= 0.0) & (np.abs(denom) > _TINY),
        2.0 * excess / np.where(np.abs(denom) > _TINY, denom, 1.0),
        np.inf,
    )
    lg = np.where(lg > 0.0, lg, np.inf)
    airflow = w / lg
    result: FloatArray = np.clip(airflow, p.min_airflow_ratio, 1.0)
    return result


def pump_kw(flow_ratio: ArrayLike, pump: PumpParams) -> FloatArray:
    """Pump power at ``flow_ratio`` of design, kW (ASHRAE 90.1 Appendix G curve)."""
    r = np.asarray(flow_ratio, dtype=np.float64)
    k1, k2, k3 = pump.curve
    result: FloatArray = pump.design_kw * r * (k1 + r * (k2 + k3 * r))
    return result


def counterflow_effectiveness(
    ua_kw_k: ArrayLike, capacity_a_kw_k: ArrayLike, capacity_b_kw_k: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Counterflow ε-NTU: returns ``(ε, C_min)``.

    ``NTU = UA / C_min``, ``C_r = C_min / C_max``, and
    ``ε = (1 - exp(-NTU(1 - C_r))) / (1 - C_r·exp(-NTU(1 - C_r)))``, with the
    balanced limit ``ε = NTU / (1 + NTU)`` at ``C_r = 1``.
    """
    ca = np.maximum(np.asarray(capacity_a_kw_k, dtype=np.float64), _TINY)
    cb = np.maximum(np.asarray(capacity_b_kw_k, dtype=np.float64), _TINY)
    c_min = np.minimum(ca, cb)
    c_r = c_min / np.maximum(ca, cb)
    ntu = np.asarray(ua_kw_k, dtype=np.float64) / c_min
    balanced = np.abs(1.0 - c_r) < 1e-9
    x = np.exp(-ntu * (1.0 - c_r))
    unbalanced_eps = (1.0 - x) / np.where(balanced, 1.0, 1.0 - c_r * x)
    eps = np.where(balanced, ntu / (1.0 + ntu), unbalanced_eps)
    return np.asarray(eps, dtype=np.float64), c_min


def it_inlet_offset_k(
    chw_flow_ratio: ArrayLike, chw_load_kw: ArrayLike, params: PlantParams = DEFAULT_PARAMS
) -> FloatArray:
    """IT inlet temperature minus chilled-water supply temperature, K.

    The coil cools air from ``T_return_air`` to ``T_supply_air`` with
    ``T_return_air - T_supply_air = air_rise``, and
    ``Q = ε·C_min·(T_return_air - T_chws)``, so
    ``T_supply_air = T_chws + Q/(ε·C_min) - air_rise`` and the IT inlet is
    ``inlet_offset`` above supply air. The offset depends on the chilled-water
    flow (through ``C_min`` and ``ε``) and on the load, not on ``T_chws``.
    """
    air = params.air_side
    q = np.maximum(np.asarray(chw_load_kw, dtype=np.float64), _TINY)
    c_air = q / air.air_rise_k
    c_chw = np.asarray(chw_flow_ratio, dtype=np.float64) * params.chw_pump.design_flow_kg_s * CP_WATER_KJ_KG_K
    eps, c_min = counterflow_effectiveness(air.coil_ua_kw_k, c_air, c_chw)
    result: FloatArray = q / (eps * c_min) - air.air_rise_k + air.inlet_offset_k
    return result


# ---------------------------------------------------------------------------
# Whole plant
# ---------------------------------------------------------------------------


class Violation(enum.IntFlag):
    """Constraint violations; :attr:`PlantResult.violations` holds these bits."""

    NONE = 0
    INLET_OVER_LIMIT = 1
    """IT inlet above the hard limit."""
    PLR_OVER_ONE = 2
    """Running chillers cannot carry their load."""
    EVAPORATOR_FLOW_LOW = 4
    """Chilled-water flow per running chiller below its minimum."""
    CONDENSER_FLOW_OUT_OF_RANGE = 8
    """Condenser flow per running chiller outside its range."""
    ECONOMISER_SHORT = 16
    """No chiller running and the economiser cannot carry the whole load."""
    DECISION_OUT_OF_RANGE = 32
    """A decision lies outside its admissible range."""


@dataclass(frozen=True)
class Decisions:
    """Operating decisions; every field broadcasts against the others and the conditions.

    Attributes:
        chw_supply_c: Chilled-water supply setpoint, °C (7-16).
        cw_setpoint_c: Tower leaving-water setpoint, °C (wet-bulb - 2 … 32);
            a setpoint the towers cannot reach, e.g. :data:`FANS_AT_MAX`, runs
            the fans at full speed.
        chw_flow_ratio: Chilled-water flow over 477.8 kg/s design (0.30-1).
        cw_flow_ratio: Condenser-water flow over 689 kg/s design (0.25-1).
        economiser_on: Economiser in service (bool or 0/1).
        chillers_running: Number of chillers running (integer 0-5).

    """

    chw_supply_c: ArrayLike
    cw_setpoint_c: ArrayLike
    chw_flow_ratio: ArrayLike
    cw_flow_ratio: ArrayLike
    economiser_on: ArrayLike
    chillers_running: ArrayLike


@dataclass(frozen=True)
class Conditions:
    """Boundary conditions for each evaluated hour.

    Attributes:
        wet_bulb_c: Outdoor wet-bulb temperature, °C.
        it_kw: IT electrical load, kW (positive).

    """

    wet_bulb_c: ArrayLike
    it_kw: ArrayLike


@dataclass(frozen=True)
class PlantResult:
    """Steady state of the plant; all arrays share the broadcast shape of the inputs.

    Attributes:
        chiller_kw: Electric power of the running chillers, kW.
        tower_fan_kw: Tower fan power, kW.
        chw_pump_kw: Chilled-water pump power, kW.
        cw_pump_kw: Condenser-water pump power, kW.
        plant_kw: Sum of the four above, kW.
        it_kw: IT load, kW.
        facility_kw: IT + plant + air handlers + UPS losses and lighting, kW.
        chw_load_kw: Chilled-water load ``Q``, kW.
        economiser_kw: Heat removed by the economiser, kW (after throttling so
            as not to overcool; negative if warm condenser water heats the
            chilled water).
        economiser_capacity_kw: What the economiser would remove unthrottled
            at the operating temperatures, kW (0 when off).
        chiller_load_kw: Load left for the chillers, kW.
        chiller_plr: Part-load ratio of each running chiller (0 with none).
        chw_supply_c: Chilled-water supply temperature, °C.
        chw_return_c: Chilled-water return temperature, °C.
        cw_entering_chiller_c: Condenser water entering the chillers (after
            the economiser), °C.
        tower_leaving_c: Tower leaving-water temperature, °C.
        tower_entering_c: Tower entering-water temperature, °C.
        heat_rejected_kw: Heat rejected by the towers, kW.
        tower_airflow_ratio: Time-averaged fan air-flow ratio (0 fans off).
        tower_cells: Cells in use.
        supply_air_c: Supply-air temperature, °C.
        it_inlet_c: IT inlet air temperature, °C.
        violations: Bitwise OR of :class:`Violation` flags.

    """

    chiller_kw: FloatArray
    tower_fan_kw: FloatArray
    chw_pump_kw: FloatArray
    cw_pump_kw: FloatArray
    plant_kw: FloatArray
    it_kw: FloatArray
    facility_kw: FloatArray
    chw_load_kw: FloatArray
    economiser_kw: FloatArray
    economiser_capacity_kw: FloatArray
    chiller_load_kw: FloatArray
    chiller_plr: FloatArray
    chw_supply_c: FloatArray
    chw_return_c: FloatArray
    cw_entering_chiller_c: FloatArray
    tower_leaving_c: FloatArray
    tower_entering_c: FloatArray
    heat_rejected_kw: FloatArray
    tower_airflow_ratio: FloatArray
    tower_cells: IntArray
    supply_air_c: FloatArray
    it_inlet_c: FloatArray
    violations: npt.NDArray[np.uint8]

    @property
    def feasible(self) -> BoolArray:
        """True where no constraint is violated."""
        result: BoolArray = self.violations == 0
        return result


def _f64(x: ArrayLike) -> FloatArray:
    return np.asarray(x, dtype=np.float64)


@dataclass(frozen=True)
class _Loop:
    """Flat per-element state that fixes the plant once the tower leaving temperature is known.

    Attributes:
        wet_bulb_c: Outdoor wet-bulb, °C.
        chw_load_kw: Chilled-water load, kW.
        chw_supply_c: Chilled-water supply, °C.
        chw_return_c: Chilled-water return, °C.
        cw_capacity_kw_k: Condenser-water capacity rate, kW/K.
        hx_conductance_kw_k: Economiser ε·C_min, kW/K (0 when off).
        running: Chillers running.
        water_ratio: Tower cell water-flow ratio, clamped to validity bounds.

    """

    wet_bulb_c: FloatArray
    chw_load_kw: FloatArray
    chw_supply_c: FloatArray
    chw_return_c: FloatArray
    cw_capacity_kw_k: FloatArray
    hx_conductance_kw_k: FloatArray
    running: FloatArray
    water_ratio: FloatArray

    def take(self, index: IntArray) -> _Loop:
        """The elements at ``index``."""
        return _Loop(
            wet_bulb_c=self.wet_bulb_c[index],
            chw_load_kw=self.chw_load_kw[index],
            chw_supply_c=self.chw_supply_c[index],
            chw_return_c=self.chw_return_c[index],
            cw_capacity_kw_k=self.cw_capacity_kw_k[index],
            hx_conductance_kw_k=self.hx_conductance_kw_k[index],
            running=self.running[index],
            water_ratio=self.water_ratio[index],
        )


@dataclass(frozen=True)
class _Downstream:
    """What follows from a tower leaving temperature (see :func:`_downstream`)."""

    economiser_kw: FloatArray
    economiser_capacity_kw: FloatArray
    chiller_load_kw: FloatArray
    cw_entering_chiller_c: FloatArray
    chiller: ChillerOperation
    heat_rejected_kw: FloatArray


def _downstream(loop: _Loop, tower_leaving_c: FloatArray, chiller: ChillerParams) -> _Downstream:
    """Economiser, chillers and heat rejected for a given tower leaving temperature.

    The economiser removes ``ε·C_min·(T_chw_return - T_tower)`` but is throttled
    so as never to remove more than the whole load; condenser water warms by
    that duty before reaching the condensers. Load the economiser leaves goes
    to the chillers; with none running it is unmet and not rejected.
    """
    capacity = loop.hx_conductance_kw_k * (loop.chw_return_c - tower_leaving_c)
    q_econ = np.minimum(capacity, loop.chw_load_kw)
    q_chiller = loop.chw_load_kw - q_econ
    t_cond = tower_leaving_c + q_econ / loop.cw_capacity_kw_k
    op = chiller_operation(q_chiller, loop.running, loop.chw_supply_c, t_cond, chiller)
    rejected = q_econ + np.where(loop.running > 0, q_chiller, 0.0) + op.power_kw
    return _Downstream(
        economiser_kw=q_econ,
        economiser_capacity_kw=capacity,
        chiller_load_kw=q_chiller,
        cw_entering_chiller_c=t_cond,
        chiller=op,
        heat_rejected_kw=rejected,
    )


def _yorkcalc_range_polynomial(
    wet_bulb_c: FloatArray, lg: FloatArray, tower: TowerParams
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Coefficients ``(h0, h1, h2)`` of the YorkCalc approach as a quadratic in range.

    Wet-bulb and LG are clamped to the correlation's validity bounds here.
    """
    t = np.clip(wet_bulb_c, tower.wet_bulb_min_c, tower.wet_bulb_max_c)
    lg_c = np.minimum(lg, tower.liquid_gas_ratio_max)
    c = tower.coefficients
    h: list[FloatArray] = []
    for i in range(3):
        total = np.zeros_like(t)
        for k in (2, 1, 0):  # Horner in LG
            base = 9 * k + 3 * i
            total = total * lg_c + (c[base] + t * (c[base + 1] + c[base + 2] * t))
        h.append(total)
    return h[0], h[1], h[2]


def _approach_upper_bound_k(wet_bulb_c: FloatArray, lg: FloatArray, tower: TowerParams) -> FloatArray:
    """Largest YorkCalc approach over the clamped range interval, K.

    The approach is quadratic in range once wet-bulb and LG are fixed, so the
    maximum over ``[range_min, range_max]`` is at an end or at the vertex.
    """
    h0, h1, h2 = _yorkcalc_range_polynomial(wet_bulb_c, lg, tower)
    safe_h2 = np.where(np.abs(h2) > _TINY, h2, _TINY)
    vertex = np.clip(-h1 / (2.0 * safe_h2), tower.range_min_k, tower.range_max_k)
    best = np.maximum(
        h0 + tower.range_min_k * (h1 + h2 * tower.range_min_k),
        h0 + tower.range_max_k * (h1 + h2 * tower.range_max_k),
    )
    best = np.maximum(best, h0 + vertex * (h1 + h2 * vertex))
    result: FloatArray = np.maximum(best, 0.0)
    return result


def _solve_leaving(loop: _Loop, lg: FloatArray, low: FloatArray, high: FloatArray, params: PlantParams) -> FloatArray:
    """Tower leaving temperature with air flow fixed, by vectorised Illinois regula falsi.

    Solves ``T_t - T_wb - approach(range(T_t)) = 0``, where the range follows
    from the heat the plant rejects with the tower water at ``T_t``. Requires
    a bracket: the residual is ≤ 0 at ``low`` and ≥ 0 at ``high``. Regula
    falsi keeps the bracket, so it cannot diverge where the economiser couples
    the tower strongly to the chillers; the Illinois modification restores
    superlinear convergence. Converged elements drop out of the working set.
    """
    tower = params.tower
    h0, h1, h2 = _yorkcalc_range_polynomial(loop.wet_bulb_c, lg, tower)

    def residual(sub: _Loop, i: IntArray, t_tower: FloatArray) -> FloatArray:
        rejected = _downstream(sub, t_tower, params.chiller).heat_rejected_kw
        r = np.clip(rejected / sub.cw_capacity_kw_k, tower.range_min_k, tower.range_max_k)
        approach = np.maximum(h0[i] + r * (h1[i] + h2[i] * r), 0.0)
        result: FloatArray = t_tower - sub.wet_bulb_c - approach
        return result

    everything = np.arange(low.size)
    g_low = residual(loop, everything, low)
    g_high = residual(loop, everything, high)
    solution = np.where(-g_low < g_high, low, high)
    g_best = np.minimum(-g_low, g_high)
    active = np.flatnonzero(g_best > _LEAVING_TOLERANCE_K)
    sub = loop.take(active)
    low, high, g_low, g_high = low[active], high[active], g_low[active], g_high[active]
    last_side = np.zeros(active.size, dtype=np.int8)
    for _ in range(_LEAVING_MAX_ITERATIONS):
        if active.size == 0:
            break
        spread = g_high - g_low
        ok = spread > _TINY
        x = np.where(ok, low - g_low * (high - low) / np.where(ok, spread, 1.0), 0.5 * (low + high))
        g_x = residual(sub, active, x)
        solution[active] = x
        to_low = g_x <= 0.0
        low = np.where(to_low, x, low)
        g_low = np.where(to_low, g_x, g_low)
        high = np.where(to_low, high, x)
        g_high = np.where(to_low, g_high, g_x)
        # Illinois: an end point kept twice running has its residual halved.
        g_high = np.where(to_low & (last_side == -1), 0.5 * g_high, g_high)
        g_low = np.where(~to_low & (last_side == 1), 0.5 * g_low, g_low)
        last_side = np.where(to_low, -1, 1).astype(np.int8)
        keep = np.flatnonzero(np.abs(g_x) > _LEAVING_TOLERANCE_K)
        if keep.size < active.size:
            active = active[keep]
            sub = sub.take(keep)
            low, high, g_low, g_high = low[keep], high[keep], g_low[keep], g_high[keep]
            last_side = last_side[keep]
    return solution


@dataclass(frozen=True)
class _TowerState:
    """Tower operating point: leaving water °C, mean air-flow ratio, fan power kW."""

    leaving_c: FloatArray
    airflow_ratio: FloatArray
    fan_kw: FloatArray


def _operate_tower(loop: _Loop, setpoint_c: FloatArray, cells: IntArray, params: PlantParams) -> _TowerState:
    """Tower control (EnergyPlus variable-speed logic), judged at the setpoint's heat load.

    If full fan speed cannot reach the setpoint, the fans run flat out and the
    water settles warmer. Otherwise, if free convection (fans off) already
    reaches it, the fans stay off and the water settles colder; if the minimum
    speed overshoots, the fans cycle between off and minimum speed; otherwise
    the speed modulates to hold the setpoint.
    """
    tower = params.tower
    twb = loop.wet_bulb_c
    lg_full = loop.water_ratio
    lg_min = loop.water_ratio / tower.min_airflow_ratio
    lg_free = loop.water_ratio / tower.free_convection_fraction

    # Setpoints below the wet-bulb (including FANS_AT_MAX) are probed at it.
    t_probe = np.maximum(setpoint_c, twb)
    range_probe = _downstream(loop, t_probe, params.chiller).heat_rejected_kw / loop.cw_capacity_kw_k
    approach_needed = t_probe - twb
    approach_full = tower_approach_k(twb, range_probe, lg_full, tower)
    approach_min = tower_approach_k(twb, range_probe, lg_min, tower)
    approach_free = tower_approach_k(twb, range_probe, lg_free, tower)
    reachable = (setpoint_c >= twb) & (approach_full <= approach_needed)
    free = reachable & (approach_free <= approach_needed)
    cycling = reachable & ~free & (approach_min <= approach_needed)
    modulating = reachable & ~free & ~cycling

    leaving = t_probe.copy()
    airflow = np.zeros_like(twb)
    speed_cubed = np.zeros_like(twb)

    index = np.flatnonzero(~reachable)
    if index.size:
        # Fans flat out: the water settles above the probe (residual < 0 there)
        # and below the largest approach the correlation can give.
        high = twb[index] + _approach_upper_bound_k(twb[index], lg_full[index], tower) + 1e-6
        leaving[index] = _solve_leaving(loop.take(index), lg_full[index], t_probe[index], high, params)
        airflow[index] = 1.0
        speed_cubed[index] = 1.0
    index = np.flatnonzero(free)
    if index.size:
        # Fans off: the water settles between the wet-bulb and the setpoint.
        leaving[index] = _solve_leaving(loop.take(index), lg_free[index], twb[index], t_probe[index], params)
    index = np.flatnonzero(cycling)
    if index.size:
        ratio = np.clip(
            (approach_free[index] - approach_needed[index])
            / np.maximum(approach_free[index] - approach_min[index], _TINY),
            0.0,
            1.0,
        )
        airflow[index] = tower.min_airflow_ratio * ratio
        speed_cubed[index] = tower.min_airflow_ratio**3 * ratio
    index = np.flatnonzero(modulating)
    if index.size:
        speed = tower_airflow_for_approach(
            twb[index], range_probe[index], loop.water_ratio[index], approach_needed[index], tower
        )
        airflow[index] = speed
        speed_cubed[index] = speed**3
    return _TowerState(
        leaving_c=leaving,
        airflow_ratio=airflow,
        fan_kw=cells * tower.cell_fan_design_kw * speed_cubed,
    )


def _violations(
    raw: dict[str, FloatArray],
    running: FloatArray,
    inlet_c: FloatArray,
    downstream: _Downstream,
    params: PlantParams,
) -> npt.NDArray[np.uint8]:
    """Bitwise OR of the :class:`Violation` flags for each element."""
    p = params
    b = p.bounds
    has_chiller = running > 0
    n_safe = np.maximum(running, 1.0)
    tol = 1e-9
    evaporator = raw["chw_flow_ratio"] * p.chw_pump.design_flow_kg_s / n_safe
    condenser = raw["cw_flow_ratio"] * p.cw_pump.design_flow_kg_s / n_safe / p.condenser_design_flow_kg_s
    checks: list[tuple[BoolArray, Violation]] = [
        (inlet_c > p.air_side.inlet_limit_c + tol, Violation.INLET_OVER_LIMIT),
        (has_chiller & (downstream.chiller.plr > 1.0 + tol), Violation.PLR_OVER_ONE),
        (
            has_chiller & (evaporator < b.evaporator_flow_min * p.evaporator_design_flow_kg_s - tol),
            Violation.EVAPORATOR_FLOW_LOW,
        ),
        (
            has_chiller & ((condenser < b.condenser_flow_min - tol) | (condenser > b.condenser_flow_max + tol)),
            Violation.CONDENSER_FLOW_OUT_OF_RANGE,
        ),
        # A millionth of the load is numerical noise, not an unmet load.
        (
            ~has_chiller
            & (downstream.chiller_load_kw > 1e-6 * (downstream.economiser_kw + downstream.chiller_load_kw)),
            Violation.ECONOMISER_SHORT,
        ),
        (
            (raw["chw_supply_c"] < b.chw_supply_min_c - tol)
            | (raw["chw_supply_c"] > b.chw_supply_max_c + tol)
            | (raw["cw_setpoint_c"] > b.cw_setpoint_max_c + tol)
            | (raw["chw_flow_ratio"] < b.chw_flow_ratio_min - tol)
            | (raw["chw_flow_ratio"] > 1.0 + tol)
            | (raw["cw_flow_ratio"] < b.cw_flow_ratio_min - tol)
            | (raw["cw_flow_ratio"] > 1.0 + tol)
            | (raw["chillers_running"] != running),
            Violation.DECISION_OUT_OF_RANGE,
        ),
    ]
    violations = np.zeros(running.shape, dtype=np.uint8)
    for mask, bit in checks:
        violations |= np.where(mask, np.uint8(bit), np.uint8(0))
    return violations


def evaluate(
    decisions: Decisions,
    conditions: Conditions,
    params: PlantParams = DEFAULT_PARAMS,
) -> PlantResult:
    """Steady-state plant for arrays of decisions and conditions.

    Every decision and condition broadcasts; e.g. decisions of shape
    ``(candidates, hours)`` against conditions of shape ``(hours,)``.

    Water paths: chilled-water return → economiser (hot side) → chillers →
    supply; condenser water: tower → economiser (cold side, when on) →
    condensers → tower. The economiser is throttled so that it never cools
    below the supply setpoint. The tower leaving temperature ``T_t`` fixes
    everything downstream (economiser duty, condenser entering temperature,
    chiller power, heat rejected and hence range), and the range in turn sets
    the tower approach; where ``T_t`` is not the setpoint that coupling is
    solved as a bracketed root.

    Tower control (EnergyPlus variable-speed tower logic), judged at the heat
    load the setpoint implies: if full fan speed cannot reach the setpoint,
    the fans run flat out and the water settles warmer. Otherwise, if free
    convection (fans off) already reaches it, the fans stay off and the water
    settles colder; if the minimum fan speed overshoots, the fans cycle
    between off and minimum speed; otherwise the fan speed modulates to hold
    the setpoint.

    Chillers share the load equally; with none running, any load the
    economiser leaves is unmet and flagged (``ECONOMISER_SHORT``).

    Args:
        decisions: Operating decisions.
        conditions: Outdoor wet-bulb and IT load.
        params: Plant parameters.

    Returns:
        A :class:`PlantResult` of arrays with the broadcast shape.

    """
    p = params
    tower = p.tower
    names = (
        "chw_supply_c",
        "cw_setpoint_c",
        "chw_flow_ratio",
        "cw_flow_ratio",
        "economiser_on",
        "chillers_running",
    )
    broadcast = np.broadcast_arrays(
        *(_f64(getattr(decisions, name)) for name in names),
        _f64(conditions.wet_bulb_c),
        _f64(conditions.it_kw),
    )
    shape = broadcast[0].shape
    flat = [a.ravel() for a in broadcast]
    raw = dict(zip(names, flat[:6], strict=True))
    twb, it = flat[6], flat[7]
    t_chws = raw["chw_supply_c"]
    r_chw = raw["chw_flow_ratio"]
    r_cw = raw["cw_flow_ratio"]
    n = np.clip(np.round(raw["chillers_running"]), 0, p.chiller.count)

    q = p.load.chw_load_factor * it
    m_cw = r_cw * p.cw_pump.design_flow_kg_s
    c_chw = np.maximum(r_chw * p.chw_pump.design_flow_kg_s * CP_WATER_KJ_KG_K, _TINY)
    c_cw = np.maximum(m_cw * CP_WATER_KJ_KG_K, _TINY)
    eps_hx, c_min_hx = counterflow_effectiveness(p.economiser.ua_kw_k, c_chw, c_cw)
    cells = tower_cells_in_use(m_cw, tower)
    loop = _Loop(
        wet_bulb_c=twb,
        chw_load_kw=q,
        chw_supply_c=t_chws,
        chw_return_c=t_chws + q / c_chw,
        cw_capacity_kw_k=c_cw,
        hx_conductance_kw_k=np.where(raw["economiser_on"] > 0.5, eps_hx * c_min_hx, 0.0),
        running=n,
        water_ratio=np.clip(
            m_cw / (cells * tower.cell_flow_kg_s),
            tower.water_flow_ratio_min,
            tower.water_flow_ratio_max,
        ),
    )
    state = _operate_tower(loop, raw["cw_setpoint_c"], cells, p)
    ds = _downstream(loop, state.leaving_c, p.chiller)
    chw_pump = pump_kw(r_chw, p.chw_pump)
    cw_pump = pump_kw(r_cw, p.cw_pump)
    plant = ds.chiller.power_kw + state.fan_kw + chw_pump + cw_pump
    inlet = t_chws + it_inlet_offset_k(r_chw, q, p)

    def out(x: FloatArray) -> FloatArray:
        return np.asarray(x, dtype=np.float64).reshape(shape)

    return PlantResult(
        chiller_kw=out(ds.chiller.power_kw),
        tower_fan_kw=out(state.fan_kw),
        chw_pump_kw=out(chw_pump),
        cw_pump_kw=out(cw_pump),
        plant_kw=out(plant),
        it_kw=out(it),
        facility_kw=out(it * (1.0 + p.load.air_handler_fraction + p.load.other_fraction) + plant),
        chw_load_kw=out(q),
        economiser_kw=out(ds.economiser_kw),
        economiser_capacity_kw=out(ds.economiser_capacity_kw),
        chiller_load_kw=out(ds.chiller_load_kw),
        chiller_plr=out(ds.chiller.plr),
        chw_supply_c=out(t_chws),
        chw_return_c=out(loop.chw_return_c),
        cw_entering_chiller_c=out(ds.cw_entering_chiller_c),
        tower_leaving_c=out(state.leaving_c),
        tower_entering_c=out(state.leaving_c + ds.heat_rejected_kw / c_cw),
        heat_rejected_kw=out(ds.heat_rejected_kw),
        tower_airflow_ratio=out(state.airflow_ratio),
        tower_cells=cells.reshape(shape),
        supply_air_c=out(inlet - p.air_side.inlet_offset_k),
        it_inlet_c=out(inlet),
        violations=_violations(raw, n, inlet, ds, p).reshape(shape),
    )
