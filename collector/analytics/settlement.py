"""PUE contract settlement: a penalty above the cap, a bonus below the threshold, in decimal money.

The contract (see the facility metrics reference): the operator guarantees
an annual PUE of at most ``cap`` at a mean IT load of at least
``min_load_fraction`` of capacity. Above the cap the operator pays
``penalty_rate`` of the electricity cost of the excess energy; below the
threshold the customer pays ``bonus_rate`` of the electricity cost saved.

Every comparison and every amount is computed in :class:`decimal.Decimal`
(PUE is compared as ``E_facility`` against ``cap * E_IT``, never as a
rounded float ratio), and money is rounded once, at the end, to the
currency's minor unit. A year that misses the load condition is settled
with ``load_condition_met`` False, for the parties to decide; where the
load is not known it is None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import TYPE_CHECKING, Final

import numpy as np
import numpy.typing as npt

from collector.analytics.energy import NS_PER_S, S_PER_H, as_edges_ns

if TYPE_CHECKING:
    from collections.abc import Sequence

    from collector.analytics.pue import EmissionFactor

Number = Decimal | int | str | float
IntpArray = npt.NDArray[np.intp]

_MINUTES_PER_DAY = 1440
_MONTHS_PER_YEAR = 12
_NS_PER_MIN = 60 * NS_PER_S
_NS_PER_H = S_PER_H * NS_PER_S
_KWH = Decimal("0.001")
_PUE = Decimal("0.0001")
_TONNE = Decimal("0.001")  # CO2 in t to the kg
_KG_PER_T = 1000
# Enough digits for kWh in the hundreds of millions times prices and rates.
_PRECISION = 34


@dataclass(frozen=True, slots=True)
class ContractTerms:
    """Contract parameters; the defaults are the source facility's contract."""

    cap: Decimal = Decimal("1.40")
    threshold: Decimal = Decimal("1.30")
    bonus_rate: Decimal = Decimal("0.10")
    penalty_rate: Decimal = Decimal("0.10")
    min_load_fraction: Decimal = Decimal("0.70")
    currency: str = "CNY"
    minor_unit: int = 2
    rounding: str = ROUND_HALF_UP

    def __post_init__(self) -> None:
        """Check the terms make sense together."""
        if not Decimal(0) < self.threshold <= self.cap:
            msg = "contract terms need 0 < threshold <= cap"
            raise ValueError(msg)
        if self.bonus_rate < 0 or self.penalty_rate < 0 or self.minor_unit < 0:
            msg = "contract rates and minor_unit must not be negative"
            raise ValueError(msg)


SETTLEMENT_KEYS: Final = (
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
)


@dataclass(frozen=True, slots=True)
class Settlement:
    """Settlement of one period; the field names are a public contract (``SETTLEMENT_KEYS``).

    ``pue`` to 4 decimals, energies in kWh to the Wh, money in the
    currency's minor unit, ``co2_t`` (avoided by the saved energy) in tonnes
    to the kg, None when no emission factor was given. ``savings_value`` is
    the electricity cost of the saved energy, of which ``bonus`` is the
    operator's share.
    """

    pue: Decimal
    it_kwh: Decimal
    facility_kwh: Decimal
    excess_kwh: Decimal
    saved_kwh: Decimal
    penalty: Decimal
    bonus: Decimal
    savings_value: Decimal
    co2_t: Decimal | None
    currency: str
    load_condition_met: bool | None

    def as_dict(self) -> dict[str, Decimal | str | bool | None]:
        """Return the settlement as a dict with exactly the public keys, Decimal values kept."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def as_json_dict(self) -> dict[str, float | str | bool | None]:
        """Return the public keys with numbers as floats (exact for these rounded values) for JSON."""
        return {k: float(v) if isinstance(v, Decimal) else v for k, v in self.as_dict().items()}


def to_decimal(value: Number) -> Decimal:
    """Decimal from an input; a float goes through its shortest repr (0.6 stays 0.6)."""
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"not a finite number: {value}"
            raise ValueError(msg)
        return Decimal(repr(value))
    return Decimal(value)


def _load_condition(
    it: Decimal,
    terms: ContractTerms,
    *,
    mean_it_kw: Number | None,
    period_h: Number | None,
    capacity_kw: Number | None,
) -> bool | None:
    """Whether mean IT load reached the contract's share of capacity; None when unknown."""
    if mean_it_kw is not None and period_h is not None:
        msg = "give mean_it_kw or period_h, not both"
        raise ValueError(msg)
    if capacity_kw is None:
        return None
    if mean_it_kw is not None:
        mean = to_decimal(mean_it_kw)
    elif period_h is not None:
        mean = it / to_decimal(period_h)
    else:
        return None
    return mean >= terms.min_load_fraction * to_decimal(capacity_kw)


def _excess_and_saved(it: Decimal, facility: Decimal, terms: ContractTerms) -> tuple[Decimal, Decimal]:
    """Excess above the cap and saving below the threshold, exact (at most one is non-zero)."""
    if it <= 0 or facility < 0:
        msg = "it_kwh must be positive and facility_kwh non-negative"
        raise ValueError(msg)
    allowed = terms.cap * it
    excess = facility - allowed if facility > allowed else Decimal(0)
    expected = terms.threshold * it
    saved = expected - facility if facility < expected else Decimal(0)
    return excess, saved


def _finish(
    it: Decimal,
    facility: Decimal,
    terms: ContractTerms,
    emission_factor: EmissionFactor | None,
    *,
    excess_value: Decimal,
    saved_value: Decimal,
    load_condition_met: bool | None,
) -> Settlement:
    """Apply the rates and round everything once."""
    excess, saved = _excess_and_saved(it, facility, terms)
    money = Decimal(1).scaleb(-terms.minor_unit)

    def rnd(value: Decimal, step: Decimal) -> Decimal:
        return value.quantize(step, rounding=terms.rounding)

    return Settlement(
        pue=rnd(facility / it, _PUE),
        it_kwh=rnd(it, _KWH),
        facility_kwh=rnd(facility, _KWH),
        excess_kwh=rnd(excess, _KWH),
        saved_kwh=rnd(saved, _KWH),
        penalty=rnd(terms.penalty_rate * excess_value, money),
        bonus=rnd(terms.bonus_rate * saved_value, money),
        savings_value=rnd(saved_value, money),
        co2_t=None if emission_factor is None else rnd(saved * emission_factor.kg_per_kwh / _KG_PER_T, _TONNE),
        currency=terms.currency,
        load_condition_met=load_condition_met,
    )


def settle(
    it_kwh: Number,
    facility_kwh: Number,
    *,
    tariff_per_kwh: Number,
    emission_factor: EmissionFactor | None = None,
    terms: ContractTerms | None = None,
    mean_it_kw: Number | None = None,
    period_h: Number | None = None,
    capacity_kw: Number | None = None,
) -> Settlement:
    """Settle a period at a flat tariff.

    The load condition is checked when ``capacity_kw`` and either the mean IT
    load or the period length (hours, from which the mean follows) are given.
    """
    terms = terms or ContractTerms()
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        it, facility, tariff = to_decimal(it_kwh), to_decimal(facility_kwh), to_decimal(tariff_per_kwh)
        excess, saved = _excess_and_saved(it, facility, terms)
        met = _load_condition(it, terms, mean_it_kw=mean_it_kw, period_h=period_h, capacity_kw=capacity_kw)
        return _finish(
            it,
            facility,
            terms,
            emission_factor,
            excess_value=excess * tariff,
            saved_value=saved * tariff,
            load_condition_met=met,
        )


@dataclass(frozen=True, slots=True)
class TouPeriod:
    """A time-of-use price from ``start_minute`` to ``end_minute`` of the local day.

    The end is exclusive and may be smaller than the start for a period
    across midnight. ``months`` (1-12) restricts the period to some months;
    empty means every month.
    """

    name: str
    start_minute: int
    end_minute: int
    price_per_kwh: Decimal
    months: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        """Check the period is a non-empty part of a day."""
        in_day = 0 <= self.start_minute < _MINUTES_PER_DAY and 0 <= self.end_minute <= _MINUTES_PER_DAY
        if not in_day or self.start_minute == self.end_minute:
            msg = f"tariff period {self.name}: minutes must be within a day and not equal"
            raise ValueError(msg)
        if not self.months <= frozenset(range(1, _MONTHS_PER_YEAR + 1)):
            msg = f"tariff period {self.name}: months must be 1-12"
            raise ValueError(msg)


@dataclass(frozen=True, slots=True)
class TouTariff:
    """Time-of-use tariff: the first period that matches an interval's start sets its price.

    Local time is UTC plus ``utc_offset_s`` (UTC+8 by default: Chinese
    tariffs are set on Beijing time, which has no daylight saving).
    """

    periods: tuple[TouPeriod, ...]
    utc_offset_s: int = 8 * 3600

    def period_index(self, start_ns: npt.ArrayLike) -> IntpArray:
        """Index of the period that prices each interval starting at ``start_ns``."""
        local = np.asarray(start_ns, dtype=np.int64) + self.utc_offset_s * NS_PER_S
        minute = (local // _NS_PER_MIN) % _MINUTES_PER_DAY
        month = local.astype("datetime64[ns]").astype("datetime64[M]").astype(np.int64) % _MONTHS_PER_YEAR + 1
        index = np.full(local.shape, -1, dtype=np.intp)
        for j, period in enumerate(self.periods):  # over the table, a few rows
            if period.start_minute < period.end_minute:
                in_time = (minute >= period.start_minute) & (minute < period.end_minute)
            else:
                in_time = (minute >= period.start_minute) | (minute < period.end_minute)
            in_month = np.isin(month, sorted(period.months)) if period.months else True
            index = np.where((index < 0) & in_time & in_month, j, index)
        if np.any(index < 0):
            first = int(np.asarray(start_ns, dtype=np.int64)[np.argmax(index < 0)])
            msg = f"no tariff period covers the interval starting at {first} ns"
            raise ValueError(msg)
        return index


def _valued(deltas_kwh: npt.NDArray[np.float64], index: IntpArray, tariff: TouTariff) -> Decimal:
    """Sum of energy per interval times its price, summing energy per price first."""
    total = Decimal(0)
    for j, period in enumerate(tariff.periods):
        in_period = deltas_kwh[index == j]
        if in_period.size:
            total += to_decimal(math.fsum(in_period)) * period.price_per_kwh
    return total


def settle_intervals(
    edges_ns: npt.ArrayLike,
    it_kwh: Sequence[float] | npt.NDArray[np.float64],
    facility_kwh: Sequence[float] | npt.NDArray[np.float64],
    *,
    tariff: TouTariff,
    emission_factor: EmissionFactor | None = None,
    terms: ContractTerms | None = None,
    capacity_kw: Number | None = None,
) -> Settlement:
    """Settle consecutive intervals (e.g. hours of a year) at a time-of-use tariff.

    Whether a penalty or a bonus is due follows from the period's totals.
    The money values energy where it was used: the saving of interval ``i``
    is ``threshold * it[i] - facility[i]`` (these sum to the period's
    saving) at interval ``i``'s price, and likewise the excess; a total
    value below zero is taken as zero. Intervals should not straddle a
    change of price: each is priced by its start. The load condition uses
    the mean IT load over the whole span.
    """
    terms = terms or ContractTerms()
    edges = as_edges_ns(edges_ns)
    it_arr = np.asarray(it_kwh, dtype=np.float64)
    fac_arr = np.asarray(facility_kwh, dtype=np.float64)
    if it_arr.shape != (edges.size - 1,) or fac_arr.shape != it_arr.shape:
        msg = "it_kwh and facility_kwh need one value per interval"
        raise ValueError(msg)
    if not (np.isfinite(it_arr).all() and np.isfinite(fac_arr).all()):
        msg = "interval energies must be finite: a missing interval cannot be settled"
        raise ValueError(msg)
    index = tariff.period_index(edges[:-1])
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        it, facility = to_decimal(math.fsum(it_arr)), to_decimal(math.fsum(fac_arr))
        excess, saved = _excess_and_saved(it, facility, terms)
        zero = Decimal(0)
        excess_value = max(_valued(fac_arr - float(terms.cap) * it_arr, index, tariff), zero) if excess > 0 else zero
        saved_value = (
            max(_valued(float(terms.threshold) * it_arr - fac_arr, index, tariff), zero) if saved > 0 else zero
        )
        period_h = Decimal(int(edges[-1] - edges[0])) / _NS_PER_H
        met = _load_condition(it, terms, mean_it_kw=None, period_h=period_h, capacity_kw=capacity_kw)
        return _finish(
            it,
            facility,
            terms,
            emission_factor,
            excess_value=excess_value,
            saved_value=saved_value,
            load_condition_met=met,
        )


@dataclass(frozen=True, slots=True)
class YearToDate:
    """Settlement of the year so far and its linear projection to the year end."""

    as_of_ns: int
    elapsed_fraction: Decimal
    to_date: Settlement
    projected: Settlement


def settle_year_to_date(
    it_kwh: Number,
    facility_kwh: Number,
    *,
    year_start_ns: int,
    year_end_ns: int,
    as_of_ns: int,
    tariff_per_kwh: Number,
    emission_factor: EmissionFactor | None = None,
    terms: ContractTerms | None = None,
    capacity_kw: Number | None = None,
) -> YearToDate:
    """Settle the year so far and project it linearly to the year end.

    The projection scales both energies by year length / elapsed time, so the
    projected PUE equals the PUE to date and the amounts scale with energy.
    """
    if not year_start_ns < as_of_ns <= year_end_ns:
        msg = "as_of_ns must be after year_start_ns and not after year_end_ns"
        raise ValueError(msg)
    with localcontext() as ctx:
        ctx.prec = _PRECISION
        elapsed_ns, year_ns = Decimal(as_of_ns - year_start_ns), Decimal(year_end_ns - year_start_ns)
        scale = year_ns / elapsed_ns
        it, facility = to_decimal(it_kwh), to_decimal(facility_kwh)

        def one(it_part: Decimal, facility_part: Decimal, span_ns: Decimal) -> Settlement:
            return settle(
                it_part,
                facility_part,
                tariff_per_kwh=tariff_per_kwh,
                emission_factor=emission_factor,
                terms=terms,
                period_h=span_ns / _NS_PER_H,
                capacity_kw=capacity_kw,
            )

        return YearToDate(
            as_of_ns=as_of_ns,
            elapsed_fraction=elapsed_ns / year_ns,
            to_date=one(it, facility, elapsed_ns),
            projected=one(it * scale, facility * scale, year_ns),
        )
