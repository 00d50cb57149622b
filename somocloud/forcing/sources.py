"""Hourly forcing sources: a small protocol, a registry and the ERA5 (ARCO Zarr layout) source.

A source knows its own layout and names; the build only speaks canonical names. Each source carries a
lexicon: canonical name → source variable(s), how hours are combined and aggregated to a day, and the
unit conversion of the daily value. Adding MSWEP or ERA5-Land means adding a source with its own lexicon,
never new canonical names.

Daily values follow the contract's UTC day boundaries: instantaneous variables average the stamps
D 00:00 .. D 23:00, accumulations (each stamp holds the hour *ending* at it) sum the stamps
D 01:00 .. D+1 00:00, i.e. exactly the 24 hours of day D.

Missing hours (NaN in the source) are allowed per cell: a day with fewer than `min_hours` valid hours
is NaN. On days with enough valid hours a mean is the mean of the valid hours, and a sum is that mean
times 24 (so a day missing one hour of rain is not biased low). A stamp that is absent from the time
axis is an error (the source must be regular hourly), not a missing hour.
"""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import xarray as xr

from somocloud import stores
from somocloud.grid import Grid
from somocloud.sampling import GridSampler, sampler_for
from somocloud.stores import StoreError

Aggregation = Literal["mean", "sum"]

HOURS_PER_DAY = 24
_DECIMALS = 6  # same rounding as somocloud.grid, so 0.1-degree coordinates compare exactly
_HOUR = np.timedelta64(1, "h")
_READ_BUDGET_BYTES = 2**27  # hourly values (float32) of one variable held per read (two reads in flight)


class SourceError(StoreError):
    """A source store that cannot be used; the message names the store and the variable or coordinate."""


@dataclass(frozen=True)
class LexiconEntry:
    """How one canonical daily variable is made from a source's hourly variables."""

    sources: tuple[str, ...]
    """Source variable names, in the order `combine` takes them."""
    aggregation: Aggregation
    """`mean` for instantaneous variables, `sum` for accumulations over the hour ending at the stamp."""
    units: str
    """Units of the canonical daily value."""
    long_name: str
    """Description stored as the variable's `long_name`."""
    scale: float = 1.0
    """Factor applied to the daily aggregate to reach `units` (e.g. 1000 for m → mm)."""
    combine: Callable[..., np.ndarray] | None = None
    """Hourly combination of several source variables into one (None: the single source as is)."""

    def hourly(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """The hourly canonical quantity (before aggregation and scaling) from the source arrays."""
        if self.combine is None:
            if len(arrays) != 1:
                raise ValueError(f"lexicon entry with sources {self.sources} needs a combine function")
            return arrays[0]
        return self.combine(*arrays)


class HourlySource(Protocol):
    """An hourly gridded store the forcing build can turn into daily values on the run grid."""

    name: str
    url: str
    lexicon: Mapping[str, LexiconEntry]

    def validate(self, names: Sequence[str], first_day: dt.date, last_day: dt.date) -> None:
        """Raise `SourceError` unless every variable behind `names` is present with the expected units and
        the time axis is monotonic, hourly and covers `first_day` 00:00 .. `last_day + 1` 00:00."""
        ...

    def entry(self, name: str) -> LexiconEntry:
        """How canonical `name` is made from this source (`KeyError` if it is not provided)."""
        ...

    def sampler(self, grid: Grid, method: str = "auto") -> GridSampler:
        """Which source cells to read and how they make the run grid's cells (`somocloud.sampling`);
        `SourceError` if the source cannot cover the run grid."""
        ...

    def read_daily(
        self,
        names: Sequence[str],
        first_day: dt.date,
        n_days: int,
        sampler: GridSampler,
        min_hours: int,
    ) -> dict[str, np.ndarray]:
        """Daily values `(n_days, nlat, nlon)` float32 of each canonical name on the run grid, in canonical
        units: aggregated on the source cells `sampler` reads, then `sampler.apply`-ed."""
        ...


SourceFactory = Callable[[str], HourlySource]
SOURCES: dict[str, SourceFactory] = {}


def register_source(name: str) -> Callable[[SourceFactory], SourceFactory]:
    """Class decorator adding a source to the registry under `name` (the `forcing.source` value)."""

    def deco(factory: SourceFactory) -> SourceFactory:
        SOURCES[name] = factory
        return factory

    return deco


def get_source(name: str, url: str) -> HourlySource:
    """The registered source `name` reading the store at `url`."""
    try:
        factory = SOURCES[name]
    except KeyError:
        raise KeyError(f"unknown forcing source {name!r}; known: {sorted(SOURCES)}") from None
    return factory(url)


# --- physics and aggregation -------------------------------------------------------------------------


def specific_humidity(dewpoint_k: np.ndarray, pressure_pa: np.ndarray) -> np.ndarray:
    """Specific humidity (kg kg-1) from dewpoint (K) and surface pressure (Pa), float64.

    e = 611.2·exp(17.67·Td/(Td + 243.5)) Pa with Td in °C (Bolton 1980), q = 0.622·e/(p − 0.378·e)."""
    # in place: hourly global maps are large, and fresh temporaries cost more than the arithmetic
    td_c = np.asarray(dewpoint_k, dtype="float64") - 273.15
    e = td_c + 243.5
    np.divide(td_c, e, out=e)
    e *= 17.67
    np.exp(e, out=e)
    e *= 611.2
    denominator = np.multiply(e, -0.378, out=td_c)
    denominator += np.asarray(pressure_pa, dtype="float64")
    np.divide(e, denominator, out=e)
    e *= 0.622
    return e


def _add(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    total = np.asarray(a, dtype="float64").copy()
    total += b
    return total


def aggregate_day(hours: np.ndarray, aggregation: Aggregation, min_hours: int) -> np.ndarray:
    """One day's value from its 24 hourly values `(24, ...)`: NaN where fewer than `min_hours` are valid.

    Means average the valid hours; sums are the mean of the valid hours times 24. Sums are accumulated in
    float64 whatever the input's dtype; float32 input is not copied when every hour is valid."""
    if hours.shape[0] != HOURS_PER_DAY:
        raise ValueError(f"a day has {HOURS_PER_DAY} hours, got {hours.shape[0]}")
    total = np.sum(hours, axis=0, dtype="float64")
    if np.isfinite(total).all():  # the common case: no missing hour (one pass, no masks)
        return total if aggregation == "sum" else total / HOURS_PER_DAY
    valid = np.isfinite(hours)
    count = valid.sum(axis=0)
    total = np.where(valid, hours, 0.0).sum(axis=0, dtype="float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
    out = mean * HOURS_PER_DAY if aggregation == "sum" else mean
    return np.where(count >= min_hours, out, np.nan)


# --- ERA5 in the analysis-ready (ARCO) Zarr layout -----------------------------------------------------

ERA5_UNITS: dict[str, str] = {
    "2m_temperature": "K",
    "2m_dewpoint_temperature": "K",
    "surface_pressure": "Pa",
    "skin_temperature": "K",
    "total_precipitation": "m",
    "surface_solar_radiation_downwards": "J m-2",
    "surface_net_solar_radiation": "J m-2",
    "surface_net_thermal_radiation": "J m-2",
    "volumetric_soil_water_layer_1": "m3 m-3",
    "volumetric_soil_water_layer_2": "m3 m-3",
    "volumetric_soil_water_layer_3": "m3 m-3",
}
"""Units attribute every ERA5 variable must carry (checked before any work)."""

_J_TO_MJ = 1e-6  # a daily sum of J m-2 is J m-2 day-1; MJ for the canonical unit

ERA5_LEXICON: dict[str, LexiconEntry] = {
    "t2m": LexiconEntry(("2m_temperature",), "mean", "K", "2 m air temperature, daily mean"),
    "tp": LexiconEntry(
        ("total_precipitation",), "sum", "mm day-1", "total precipitation, daily sum", scale=1000.0
    ),
    "q": LexiconEntry(
        ("2m_dewpoint_temperature", "surface_pressure"),
        "mean",
        "kg kg-1",
        "2 m specific humidity (from dewpoint and surface pressure), daily mean of hourly values",
        combine=specific_humidity,
    ),
    "snr": LexiconEntry(
        ("surface_net_solar_radiation", "surface_net_thermal_radiation"),
        "sum",
        "MJ m-2 day-1",
        "surface net radiation (net solar + net thermal), daily sum",
        scale=_J_TO_MJ,
        combine=_add,
    ),
    "ssrd": LexiconEntry(
        ("surface_solar_radiation_downwards",),
        "sum",
        "MJ m-2 day-1",
        "surface solar radiation downwards, daily sum",
        scale=_J_TO_MJ,
    ),
    "skt": LexiconEntry(("skin_temperature",), "mean", "K", "skin temperature, daily mean"),
    "swvl1": LexiconEntry(
        ("volumetric_soil_water_layer_1",), "mean", "m3 m-3", "ERA5 volumetric soil water 0-7 cm, daily mean"
    ),
    "swvl2": LexiconEntry(
        ("volumetric_soil_water_layer_2",), "mean", "m3 m-3", "ERA5 volumetric soil water 7-28 cm, daily mean"
    ),
    "swvl3": LexiconEntry(
        ("volumetric_soil_water_layer_3",),
        "mean",
        "m3 m-3",
        "ERA5 volumetric soil water 28-100 cm, daily mean",
    ),
}
"""Canonical name → ERA5 source variable(s), aggregation and unit conversion."""


class GriddedSource:
    """What every gridded source shares: the store, opened once without Dask (tasks index it directly;
    no graph inside a task) with `lat`/`lon` dims renamed to `latitude`/`longitude`; where the run grid's
    cells lie in it; and the checks of its variables and time axis, each naming store and variable.

    Subclasses set `name`, `lexicon` and `units` (source variable → accepted units string or strings)."""

    name = "gridded"
    lexicon: Mapping[str, LexiconEntry] = {}
    units: Mapping[str, str | tuple[str, ...]] = {}

    def __init__(self, url: str) -> None:
        self.url = url
        self._ds: xr.Dataset | None = None

    @property
    def dataset(self) -> xr.Dataset:
        if self._ds is None:
            ds = stores.open_zarr(self.url, chunks=None)
            rename = {
                short: long for short, long in (("lat", "latitude"), ("lon", "longitude")) if short in ds.dims
            }
            self._ds = ds.rename(rename)
        return self._ds

    def entry(self, name: str) -> LexiconEntry:
        """See `HourlySource.entry`."""
        if name not in self.lexicon:
            raise KeyError(f"source {self.name!r} ({self.url}) has no lexicon entry for {name!r}")
        return self.lexicon[name]

    def sampler(self, grid: Grid, method: str = "auto") -> GridSampler:
        """See `HourlySource.sampler`."""
        ds = self.dataset
        for coord in ("latitude", "longitude"):
            if coord not in ds.coords:
                raise SourceError(f"{self.url}: coordinate {coord!r} is missing")
        try:
            return sampler_for(ds["latitude"].values, ds["longitude"].values, grid, self.url, method=method)
        except StoreError as err:
            raise SourceError(str(err)) from err

    def check_variable(self, var: str, for_name: str | None = None, note: str = "") -> None:
        """`var` (read for canonical `for_name`) must exist with dims (time, latitude, longitude) and one
        of its accepted units; `note` is added to the message of a missing variable."""
        ds = self.dataset
        if var not in ds.data_vars:
            what = f" for {for_name!r}" if for_name else ""
            raise SourceError(f"{self.url}: variable {var!r}{what} is missing{note}")
        if ds[var].dims != ("time", "latitude", "longitude"):
            raise SourceError(
                f"{self.url}: variable {var!r} has dims {ds[var].dims}, "
                "expected (time, lat|latitude, lon|longitude)"
            )
        accepted = self.units[var]
        allowed = (accepted,) if isinstance(accepted, str) else tuple(accepted)
        units = ds[var].attrs.get("units")
        if units not in allowed:
            expected = repr(allowed[0]) if len(allowed) == 1 else f"one of {list(allowed)}"
            raise SourceError(f"{self.url}: variable {var!r} has units {units!r}, expected {expected}")

    def check_time(self, step: np.timedelta64, label: str, first: np.datetime64, last: np.datetime64) -> None:
        """The time axis must increase by exactly `step` (`label` says which, e.g. "hourly") and cover
        `first` .. `last` (shown in their own units)."""
        ds = self.dataset
        if "time" not in ds.coords:
            raise SourceError(f"{self.url}: coordinate 'time' is missing")
        times = ds["time"].values.astype("datetime64[ns]")
        steps = np.diff(times)
        if steps.size and (steps <= np.timedelta64(0, "ns")).any():
            i = int(np.argmax(steps <= np.timedelta64(0, "ns")))
            raise SourceError(
                f"{self.url}: coordinate 'time' is not strictly increasing at index {i + 1} ({times[i + 1]})"
            )
        if steps.size and (steps != step).any():
            i = int(np.argmax(steps != step))
            raise SourceError(
                f"{self.url}: coordinate 'time' is not {label}: {times[i]} is followed by {times[i + 1]}"
            )
        shown = times.astype(first.dtype)
        if shown.size == 0 or shown[0] > first or shown[-1] < last:
            span = f"{shown[0]} .. {shown[-1]}" if shown.size else "nothing"
            raise SourceError(
                f"{self.url}: coordinate 'time' covers {span}, the build needs {first} .. {last}"
            )

    def time_position(self, stamp: np.datetime64) -> int:
        """Index of `stamp` on the time axis (compared in the stamp's own units)."""
        times = self.dataset["time"].values.astype(stamp.dtype)
        pos = int(np.searchsorted(times, stamp))
        if pos >= times.size or times[pos] != stamp:
            raise SourceError(f"{self.url}: coordinate 'time' has no stamp {stamp}")
        return pos


@register_source("era5")
class Era5Hourly(GriddedSource):
    """Hourly ERA5 in the analysis-ready Zarr layout: dims (time, latitude, longitude), long names."""

    name = "era5"
    lexicon: Mapping[str, LexiconEntry] = ERA5_LEXICON
    units: Mapping[str, str] = ERA5_UNITS

    def source_variables(self, names: Sequence[str]) -> list[str]:
        """The source variables behind canonical `names`, in first-use order."""
        out: list[str] = []
        for name in names:
            if name not in self.lexicon:
                raise KeyError(f"source {self.name!r} has no lexicon entry for {name!r}")
            out.extend(v for v in self.lexicon[name].sources if v not in out)
        return out

    def validate(self, names: Sequence[str], first_day: dt.date, last_day: dt.date) -> None:
        """See `HourlySource.validate`; reads metadata and the time coordinate only."""
        for var in self.source_variables(names):
            self.check_variable(var)
        first = np.datetime64(first_day, "ns")
        self.check_time(_HOUR, "hourly", first, np.datetime64(last_day + dt.timedelta(days=1), "ns"))

    def _read(self, var: str, start: int, stop: int, sampler: GridSampler) -> np.ndarray:
        """Hours [start, stop) of `var` on the source cells `sampler` reads, (hours, rows, cols), in the
        store's dtype (float32 for ERA5; aggregation accumulates in float64)."""
        return sampler.select(self.dataset[var], time=slice(start, stop))

    def read_daily(
        self,
        names: Sequence[str],
        first_day: dt.date,
        n_days: int,
        sampler: GridSampler,
        min_hours: int,
    ) -> dict[str, np.ndarray]:
        """See `HourlySource.read_daily`: each source variable's hours are read once, in day blocks."""
        h0 = self.time_position(np.datetime64(first_day, "ns"))
        out: dict[str, np.ndarray] = {}
        for name in names:
            entry = self.lexicon[name]

            def block(start: int, stop: int, entry: LexiconEntry = entry) -> np.ndarray:
                return entry.hourly([self._read(v, h0 + start, h0 + stop, sampler) for v in entry.sources])

            cells_per_hour = sampler.cells_read * len(entry.sources)
            days_per_read = _READ_BUDGET_BYTES // (HOURS_PER_DAY * cells_per_hour * 4)
            out[name] = sampler.apply(daily_series(block, entry, n_days, min_hours, days_per_read))
        return out


def daily_series(
    read_hours: Callable[[int, int], np.ndarray],
    entry: LexiconEntry,
    n_days: int,
    min_hours: int,
    days_per_read: int = 1,
) -> np.ndarray:
    """Daily values `(n_days, ...)` float32 of one lexicon entry.

    `read_hours(a, b)` gives the hourly canonical quantity for stamps [a, b), counted from the first
    day's 00:00. Hours are read in day-aligned blocks of `days_per_read` days, so every stamp is read once
    (map-chunked sources hold whole days or single hours per chunk) and memory stays at two blocks. For
    accumulations the first stamp of the next block closes the block's last day."""
    h = HOURS_PER_DAY
    step = max(1, days_per_read)
    blocks = [(a, min(a + step, n_days)) for a in range(0, n_days, step)]
    results: list[np.ndarray] = []
    current = read_hours(h * blocks[0][0], h * blocks[0][1])
    for k, (a, b) in enumerate(blocks):
        following: np.ndarray | None = None
        if k + 1 < len(blocks):
            following = read_hours(h * blocks[k + 1][0], h * blocks[k + 1][1])
        elif entry.aggregation == "sum":
            following = read_hours(h * n_days, h * n_days + 1)  # the stamp closing the last day
        if entry.aggregation == "sum" and following is not None:
            hours = np.concatenate([current[1:], following[:1]], axis=0)
        else:
            hours = current
        per_day = np.moveaxis(hours.reshape(b - a, h, *hours.shape[1:]), 1, 0)  # (24, days, ...)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            results.append(aggregate_day(per_day, entry.aggregation, min_hours) * entry.scale)
        if following is not None:
            current = following
    return np.concatenate(results, axis=0).astype("float32")


# --- ERA5-Land hourly, same long names as ERA5 -----------------------------------------------------------

ERA5_LAND_ACCUMULATED: frozenset[str] = frozenset(
    {
        "total_precipitation",
        "surface_solar_radiation_downwards",
        "surface_net_solar_radiation",
        "surface_net_thermal_radiation",
    }
)
"""ERA5-Land variables accumulated since 00 UTC of the day (the stamp D 01:00 holds the first hour, the
stamp D+1 00:00 the whole of day D); ERA5 stores these per hour instead."""


@register_source("era5_land")
class Era5LandHourly(Era5Hourly):
    """Hourly ERA5-Land (0.1°) with the ERA5 long names and lexicon.

    Differences to ERA5: the accumulations in `ERA5_LAND_ACCUMULATED` (`tp`, `ssrd`, `snr`) run from
    00 UTC and are de-accumulated here (hour ending at stamp t = acc[t] − acc[t−1], except at 01:00 where
    it is acc[t]); a missing accumulation stamp therefore makes two hours missing. Everything else
    (instantaneous `t2m`, `skt`, dewpoint and surface pressure for `q`, `swvl1..3`, units, dims) is
    read exactly as ERA5; ERA5-Land has no values over the ocean (NaN there)."""

    name = "era5_land"

    def _read(self, var: str, start: int, stop: int, sampler: GridSampler) -> np.ndarray:
        """As ERA5, with accumulations turned into the amount of the hour ending at each stamp."""
        if var not in ERA5_LAND_ACCUMULATED:
            return super()._read(var, start, stop, sampler)
        lead = 1 if start > 0 else 0  # the stamp before `start` (absent only at the store's first stamp)
        acc = super()._read(var, start - lead, stop, sampler).astype("float64")  # differences of totals
        hours = self.dataset["time"].values[start:stop].astype("datetime64[h]")
        hour_of_day = (hours - hours.astype("datetime64[D]")).astype("int64")
        previous = acc[:-1] if lead else np.concatenate([np.full_like(acc[:1], np.nan), acc[:-1]], axis=0)
        current = acc[lead:]
        first_hour = (hour_of_day == 1).reshape(-1, *([1] * (current.ndim - 1)))
        return np.where(first_hour, current, current - previous)
