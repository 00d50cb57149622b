"""Quality control and daily aggregation of in-situ soil moisture (SoMo.ml Methods).

A value is *valid* when all of these hold:

* its quality flag is in `ingest.quality_flags` (default `['G']`). A combined flag such as `C02,D04`
  is kept only if every one of its parts is in the list, so `D03` or `G,D04` never pass with the
  default. Flags outside ISMN's vocabulary (`G`, `M`, `U`, `C01`-`C03`, `D01`-`D10`) and not in the
  list are unknown: their values are not valid, and the quarantine report names each unknown flag
  once per file (count, first line). Sources without flags (USCRN) skip this rule;
* it is a number and not a missing marker (the readers already turn -9999/-999.99/-99 into NaN);
* it is physically possible: 0 ≤ value ≤ 1 m3 m-3. Volumetric water content is a volume fraction, so
  values below 0 or above 1 are sensor or processing errors whatever their flag says.

Sub-daily sources (ISMN): the daily mean of UTC day D is the mean of the valid values stamped
D 00:00 .. D 23:59 (ISMN times are UTC; a value at 00:00 belongs to the day it starts). It is formed
only on days with at least `ingest.min_obs_per_day` valid values. Daily sources (USCRN): each valid
value is the day's mean as it is (`min_obs_per_day` does not apply: the value is already a daily
mean). Either way a series with fewer than `ingest.min_days` daily means is dropped
(`DailySeries.kept` is False).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from somocloud.config import IngestConfig
from somocloud.insitu.model import Rejection, SensorMeta, SensorSeries

VALID_MIN = 0.0
"""Smallest physically possible volumetric soil moisture (m3 m-3)."""
VALID_MAX = 1.0
"""Largest physically possible volumetric soil moisture (m3 m-3): the whole volume is water."""
ISMN_FLAG = re.compile(r"^(G|M|U|C0[1-3]|D0[1-9]|D10)$")
"""One part of an ISMN quality flag (ISMN flag documentation)."""


@dataclass(frozen=True)
class QCCounts:
    """What quality control did to one series' values (each value counted once, in order: flag,
    then missing, then range)."""

    total: int
    bad_flag: int
    missing: int
    out_of_range: int

    @property
    def valid(self) -> int:
        return self.total - self.bad_flag - self.missing - self.out_of_range


@dataclass(frozen=True)
class DailySeries:
    """One sensor's daily means after QC.

    Attributes:
        meta: Station and sensor metadata (site properties for its depth included).
        daily: Daily means (m3 m-3, float64) indexed by day (`datetime64[ns]` at 00:00), only on days
            that had enough valid values; ascending.
        counts: What QC removed.
        kept: Whether the series has at least `min_days` daily means.
    """

    meta: SensorMeta
    daily: pd.Series
    counts: QCCounts
    kept: bool


def _flag_parts(flag: str) -> list[str]:
    return [p.strip().strip('"') for p in flag.split(",")]


def _accepted(flag: str, keep: set[str]) -> bool:
    return all(p in keep for p in _flag_parts(flag))


FlagCodes = tuple[np.ndarray, np.ndarray]
"""A series' flags factorised: each value's code, and the distinct flags in order of first appearance."""


def flag_codes(series: SensorSeries) -> FlagCodes:
    """`series.flags` factorised; computed once per series and given to `qc_daily` and `unknown_flags`."""
    return _factorize(series.flags)


def _factorize(flags: np.ndarray) -> FlagCodes:
    flat = np.asarray(flags, dtype=object).ravel()
    if flat.size == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=object)
    # Flags come in long runs (mostly `G`): hash only the first value of each run (fewer string hashes).
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    run_codes, uniq = pd.factorize(flat[starts])
    codes = np.repeat(run_codes, np.diff(np.append(starts, flat.size)))
    return codes, np.asarray(uniq, dtype=object)


def flag_mask(flags: np.ndarray, quality_flags: Iterable[str], codes: FlagCodes | None = None) -> np.ndarray:
    """True where a flag (possibly combined, `C02,D04`) consists only of accepted flags (`codes`:
    the flags already factorised, if at hand)."""
    if flags.size == 0:
        return np.zeros(0, dtype=bool)
    keep = {f.strip() for f in quality_flags}
    # Few distinct flag strings per file: decide once per distinct string (hashing, no sort).
    index, uniq = codes if codes is not None else _factorize(flags)
    return np.array([_accepted(str(u), keep) for u in uniq], dtype=bool)[index]


def unknown_flags(
    series: SensorSeries, quality_flags: Iterable[str], codes: FlagCodes | None = None
) -> list[Rejection]:
    """One report entry per distinct flag that is neither ISMN's nor accepted by the config (`codes`:
    `flag_codes(series)`, if at hand)."""
    if not series.has_flags or series.flags.size == 0:
        return []
    accepted = {f.strip() for f in quality_flags}
    index, uniq = codes if codes is not None else _factorize(series.flags)
    out = []
    for k, flag in enumerate(uniq.tolist()):
        if all(ISMN_FLAG.match(p) or p in accepted for p in _flag_parts(str(flag))):
            continue
        where = np.flatnonzero(index == k)
        line = int(series.lines[where].min())
        reason = f"unknown quality flag {str(flag)!r} on {where.size} values (first on this line); not good"
        out.append(Rejection(series.meta.source_file, line, reason))
    return out


def valid_values(
    series: SensorSeries, cfg: IngestConfig, codes: FlagCodes | None = None
) -> tuple[np.ndarray, QCCounts]:
    """Boolean mask of the valid values of `series`, and what was removed (`codes`:
    `flag_codes(series)`, if at hand)."""
    n = series.values.size
    if series.has_flags:
        good_flag = flag_mask(series.flags, cfg.quality_flags, codes)
    else:
        good_flag = np.ones(n, dtype=bool)
    finite = np.isfinite(series.values)
    with np.errstate(invalid="ignore"):
        in_range = (series.values >= VALID_MIN) & (series.values <= VALID_MAX)
    counts = QCCounts(
        total=n,
        bad_flag=int((~good_flag).sum()),
        missing=int((good_flag & ~finite).sum()),
        out_of_range=int((good_flag & finite & ~in_range).sum()),
    )
    return good_flag & finite & in_range, counts


def daily_means(time: np.ndarray, values: np.ndarray, min_obs_per_day: int) -> pd.Series:
    """Mean per UTC day of `values` (all assumed valid) on days with at least `min_obs_per_day` of them.

    `time` must be ascending (readers guarantee it), so days are runs and no sort is needed."""
    if values.size == 0:
        return pd.Series([], index=pd.DatetimeIndex([], dtype="datetime64[ns]"), dtype="float64")
    days = np.asarray(time, dtype="datetime64[ns]").astype("datetime64[D]")
    starts = np.flatnonzero(np.concatenate(([True], days[1:] != days[:-1])))
    n = np.diff(np.append(starts, days.size))
    sums = np.add.reduceat(np.asarray(values, dtype=np.float64), starts)
    enough = n >= min_obs_per_day
    # No dtype= (the means are float64 already): pandas' dtype handling costs more than the rest here.
    return pd.Series(
        sums[enough] / n[enough], index=pd.DatetimeIndex(days[starts][enough].astype("datetime64[ns]"))
    )


def qc_daily(
    series: SensorSeries, cfg: IngestConfig, meta: SensorMeta | None = None, codes: FlagCodes | None = None
) -> DailySeries:
    """Quality control and daily aggregation of one sensor (see the module docstring).

    `meta` replaces the series' own metadata in the result (e.g. with site properties added);
    `codes` is `flag_codes(series)` if at hand (shared with `unknown_flags`)."""
    valid, counts = valid_values(series, cfg, codes)
    if series.daily:
        days = series.time[valid].astype("datetime64[D]").astype("datetime64[ns]")
        daily = pd.Series(series.values[valid], index=pd.DatetimeIndex(days), dtype="float64")
    else:
        daily = daily_means(series.time[valid], series.values[valid], cfg.min_obs_per_day)
    return DailySeries(meta or series.meta, daily, counts, len(daily) >= cfg.min_days)
