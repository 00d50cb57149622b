"""Quality control and daily aggregation of sub-daily in-situ soil moisture (SoMo.ml Methods).

A sub-daily value is *valid* when all of these hold:

* its ISMN flag is in `ingest.quality_flags` (default `['G']`). A combined flag such as `C02,D04` is
  kept only if every one of its parts is in the list, so `D03` or `G,D04` never pass with the default;
* it is a number and not ISMN's missing marker -9999 (the reader already turns -9999 into NaN);
* it is physically possible: 0 ≤ value ≤ 1 m3 m-3. Volumetric water content is a volume fraction, so
  values below 0 or above 1 are sensor or processing errors whatever their flag says.

The daily mean of UTC day D is the mean of the valid values stamped D 00:00 .. D 23:59 (ISMN times are
UTC; a value at 00:00 belongs to the day it starts). It is formed only on days with at least
`ingest.min_obs_per_day` valid values; a series with fewer than `ingest.min_days` daily means is
dropped (`DailySeries.kept` is False).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from somocloud.config import IngestConfig
from somocloud.insitu.readers import SensorSeries

VALID_MIN = 0.0
"""Smallest physically possible volumetric soil moisture (m3 m-3)."""
VALID_MAX = 1.0
"""Largest physically possible volumetric soil moisture (m3 m-3): the whole volume is water."""


@dataclass(frozen=True)
class QCCounts:
    """What quality control did to one series' sub-daily values (each value counted once, in order:
    flag, then missing, then range)."""

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
        daily: Daily means (m3 m-3, float64) indexed by UTC day (`datetime64[ns]` at 00:00), only on
            days that had enough valid values; ascending.
        counts: What QC removed.
        kept: Whether the series has at least `min_days` daily means.
    """

    daily: pd.Series
    counts: QCCounts
    kept: bool


def flag_mask(flags: np.ndarray, quality_flags: Iterable[str]) -> np.ndarray:
    """True where a flag (possibly combined, `C02,D04`) consists only of accepted flags."""
    keep = {f.strip() for f in quality_flags}
    if flags.size == 0:
        return np.zeros(0, dtype=bool)
    # Few distinct flag strings per file: decide once per distinct string, then broadcast.
    uniq, inverse = np.unique(np.asarray(flags, dtype=str), return_inverse=True)
    ok = np.array([all(p.strip().strip('"') in keep for p in u.split(",")) for u in uniq], dtype=bool)
    return ok[inverse.ravel()]


def valid_values(series: SensorSeries, cfg: IngestConfig) -> tuple[np.ndarray, QCCounts]:
    """Boolean mask of the valid sub-daily values of `series`, and what was removed."""
    good_flag = flag_mask(series.flags, cfg.quality_flags)
    finite = np.isfinite(series.values)
    with np.errstate(invalid="ignore"):
        in_range = (series.values >= VALID_MIN) & (series.values <= VALID_MAX)
    counts = QCCounts(
        total=int(series.values.size),
        bad_flag=int((~good_flag).sum()),
        missing=int((good_flag & ~finite).sum()),
        out_of_range=int((good_flag & finite & ~in_range).sum()),
    )
    return good_flag & finite & in_range, counts


def daily_means(time: np.ndarray, values: np.ndarray, min_obs_per_day: int) -> pd.Series:
    """Mean per UTC day of `values` (all assumed valid) on days with at least `min_obs_per_day` of them."""
    if values.size == 0:
        return pd.Series([], index=pd.DatetimeIndex([], dtype="datetime64[ns]"), dtype="float64")
    days = np.asarray(time, dtype="datetime64[ns]").astype("datetime64[D]")
    uniq, inverse = np.unique(days, return_inverse=True)
    n = np.bincount(inverse, minlength=uniq.size)
    sums = np.bincount(inverse, weights=values, minlength=uniq.size)
    enough = n >= min_obs_per_day
    return pd.Series(
        sums[enough] / n[enough],
        index=pd.DatetimeIndex(uniq[enough].astype("datetime64[ns]")),
        dtype="float64",
    )


def qc_daily(series: SensorSeries, cfg: IngestConfig) -> DailySeries:
    """Quality control and daily aggregation of one sensor (see the module docstring)."""
    valid, counts = valid_values(series, cfg)
    daily = daily_means(series.time[valid], series.values[valid], cfg.min_obs_per_day)
    return DailySeries(daily=daily, counts=counts, kept=len(daily) >= cfg.min_days)
