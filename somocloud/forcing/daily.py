"""Daily forcing sources: CF-named daily grids (`cf_daily`) and MSWEP daily precipitation (`mswep_daily`).

Both implement `somocloud.forcing.sources.HourlySource` and are registered in the same registry; their
`read_daily` returns the stored daily values converted to canonical units (no hourly aggregation, so
`min_hours` does not apply: a NaN day in the source stays NaN). The time axis must be strictly daily
(one stamp per day at any fixed time of day, the day being the stamp's UTC date) and cover the build's
days. Dims are `(time, lat, lon)` or `(time, latitude, longitude)`; latitude ascending or descending,
longitude in [0, 360) or [-180, 180).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

import numpy as np

from somocloud.forcing.sources import GriddedSource, LexiconEntry, _add, register_source
from somocloud.sampling import GridSampler

_DAY = np.timedelta64(1, "D")
_SECONDS_PER_DAY = 86400.0
_W_TO_MJ_PER_DAY = _SECONDS_PER_DAY * 1e-6  # a mean flux in W m-2 over a day → MJ m-2 day-1 (0.0864)

_FLUX_UNITS = ("W m-2", "W m**-2", "W/m2", "W/m^2")
CF_UNITS: dict[str, tuple[str, ...]] = {
    "pr": ("kg m-2 s-1", "kg m**-2 s**-1", "kg/m2/s", "kg/m^2/s"),
    "tas": ("K",),
    "ts": ("K",),
    "huss": ("kg kg-1", "kg/kg", "1"),
    "rsds": _FLUX_UNITS,
    "rss": _FLUX_UNITS,
    "rls": _FLUX_UNITS,
}
"""Accepted spellings of the units attribute of each CF daily variable (checked before any work)."""

CF_LEXICON: dict[str, LexiconEntry] = {
    "t2m": LexiconEntry(("tas",), "mean", "K", "2 m air temperature, daily mean"),
    "tp": LexiconEntry(
        ("pr",),
        "mean",
        "mm day-1",
        "total precipitation, daily sum (daily mean flux x 86400 s)",
        scale=_SECONDS_PER_DAY,  # kg m-2 s-1 of water = mm s-1
    ),
    "q": LexiconEntry(("huss",), "mean", "kg kg-1", "2 m specific humidity, daily mean"),
    "snr": LexiconEntry(
        ("rss", "rls"),
        "mean",
        "MJ m-2 day-1",
        "surface net radiation (net shortwave + net longwave), daily sum",
        scale=_W_TO_MJ_PER_DAY,
        combine=_add,
    ),
    "ssrd": LexiconEntry(
        ("rsds",),
        "mean",
        "MJ m-2 day-1",
        "surface solar radiation downwards, daily sum",
        scale=_W_TO_MJ_PER_DAY,
    ),
    "skt": LexiconEntry(("ts",), "mean", "K", "skin (surface) temperature, daily mean"),
}
"""Canonical name → CF daily variable(s) and unit conversion. Daily values are stored as daily means."""

CF_FALLBACKS: dict[str, LexiconEntry] = {
    "skt": LexiconEntry(
        ("tas",), "mean", "K", "skin temperature, daily mean (2 m air temperature: the source has no ts)"
    ),
}
"""Entries used when the primary entry's variables are absent: without `ts`, `skt` is `tas`."""

MSWEP_UNITS: dict[str, tuple[str, ...]] = {"precipitation": ("mm/d", "mm d-1", "mm day-1", "mm/day")}
"""The MSWEP daily product; the 3-hourly product (`mm/3h`) is not supported."""

MSWEP_LEXICON: dict[str, LexiconEntry] = {
    "tp": LexiconEntry(("precipitation",), "mean", "mm day-1", "total precipitation (MSWEP), daily sum"),
}
"""MSWEP provides `tp` only (an alternative to the ERA5 precipitation)."""


class DailyGridSource(GriddedSource):
    """A gridded store of daily values whose lexicon maps canonical names to its variables.

    Subclasses set `name`, `lexicon`, `units` and optionally `fallbacks`."""

    name = "daily"
    units: Mapping[str, tuple[str, ...]] = {}
    fallbacks: Mapping[str, LexiconEntry] = {}

    def entry(self, name: str) -> LexiconEntry:
        """The lexicon entry for `name`: the primary one, or its fallback when only that one is present."""
        primary = super().entry(name)
        fallback = self.fallbacks.get(name)
        have = self.dataset.data_vars
        if (
            fallback is not None
            and not all(v in have for v in primary.sources)
            and all(v in have for v in fallback.sources)
        ):
            return fallback
        return primary

    def validate(self, names: Sequence[str], first_day: dt.date, last_day: dt.date) -> None:
        """See `HourlySource.validate`, for a daily time axis covering `first_day` .. `last_day`."""
        for name in names:
            entry = self.entry(name)
            fallback = self.fallbacks.get(name)
            also = f" (nor its fallback {list(fallback.sources)})" if fallback is not None else ""
            for var in entry.sources:
                self.check_variable(var, name, also)
        self.check_time(_DAY, "daily", np.datetime64(first_day, "D"), np.datetime64(last_day, "D"))

    def read_daily(
        self,
        names: Sequence[str],
        first_day: dt.date,
        n_days: int,
        sampler: GridSampler,
        min_hours: int,
    ) -> dict[str, np.ndarray]:
        """See `HourlySource.read_daily`; `min_hours` is ignored (the values are already daily)."""
        del min_hours
        d0 = self.time_position(np.datetime64(first_day, "D"))
        out: dict[str, np.ndarray] = {}
        for name in names:
            entry = self.entry(name)
            arrays = [
                sampler.select(self.dataset[v], time=slice(d0, d0 + n_days)).astype("float64")
                for v in entry.sources
            ]
            out[name] = sampler.apply(entry.hourly(arrays) * entry.scale).astype("float32")
        return out


@register_source("cf_daily")
class CfDaily(DailyGridSource):
    """CF-named daily means (CMIP/xclim style): `pr`, `tas`, `huss`, `rsds`, `rss`, `rls`, `ts`.

    Precipitation and radiation fluxes are daily means, so the daily sum is the mean times 86400 s
    (`pr` kg m-2 s-1 → mm day-1; W m-2 → MJ m-2 day-1 with 0.0864). `snr` = `rss` + `rls`. `skt` is
    `ts` when present, else `tas` (`CF_FALLBACKS`). The source holds no reference soil moisture."""

    name = "cf_daily"
    lexicon: Mapping[str, LexiconEntry] = CF_LEXICON
    units: Mapping[str, tuple[str, ...]] = CF_UNITS
    fallbacks: Mapping[str, LexiconEntry] = CF_FALLBACKS


@register_source("mswep_daily")
class MswepDaily(DailyGridSource):
    """MSWEP daily precipitation (variable `precipitation`, units `mm/d`, dims (time, lat, lon), lat
    descending, lon −180..180, stamps at 00:00 UTC of each day) as the canonical `tp`.

    Only the daily product is supported; the 3-hourly one (`mm/3h`) fails the units check."""

    name = "mswep_daily"
    lexicon: Mapping[str, LexiconEntry] = MSWEP_LEXICON
    units: Mapping[str, tuple[str, ...]] = MSWEP_UNITS
