"""Skill metrics of simulated against observed series, vectorised over cells and NaN-aware.

Every metric takes `sim` and `obs` shaped `(..., time)` (broadcast against each other) and returns an
array shaped `(...)` (0-d for 1-d input). Only days where both series are finite are paired. Fewer than
`min_n` pairs, or a degenerate denominator (a constant series, a zero observed mean), give NaN, never an
exception or a runtime warning. Used by `train` (validation skill) and `evaluate`.

Definitions follow SoMo.ml (O & Orth 2021, Sci. Data 8, 170): NRMSE = RMSE / mean of the observations;
anomalies = value minus the mean of the 35-day window [d-17, d+17], only where that window holds at least
10 valid values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

ANOMALY_HALF_WINDOW = 17
"""Half width in days of the SoMo.ml anomaly window [d-17, d+17] (35 days)."""
ANOMALY_MIN_COUNT = 10
"""Valid values the anomaly window needs, else the anomaly is NaN."""
DEFAULT_MIN_N = 2
"""Fewest paired days any metric is computed from unless the caller asks for more."""


class _Pairs(NamedTuple):
    """Paired series in float64 with 0 where a pair is incomplete, the pair mask and the pair count."""

    sim: np.ndarray
    obs: np.ndarray
    mask: np.ndarray
    n: np.ndarray


def _pairs(sim: np.ndarray, obs: np.ndarray) -> _Pairs:
    s, o = np.broadcast_arrays(np.asarray(sim, dtype="float64"), np.asarray(obs, dtype="float64"))
    mask = np.isfinite(s) & np.isfinite(o)
    # Zeros instead of NaN let plain sums stand in for nan-reductions (no all-NaN-slice warnings).
    return _Pairs(np.where(mask, s, 0.0), np.where(mask, o, 0.0), mask, np.asarray(mask.sum(axis=-1)))


def _masked_mean(x: np.ndarray, mask: np.ndarray, n: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, np.where(mask, x, 0.0).sum(axis=-1) / np.maximum(n, 1), np.nan)


def _is_constant(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    # Exact test (max == min) rather than a variance threshold, which rounding makes unreliable.
    hi = np.where(mask, x, -np.inf).max(axis=-1, initial=-np.inf)
    lo = np.where(mask, x, np.inf).min(axis=-1, initial=np.inf)
    return np.asarray(hi <= lo)


def _centred(p: _Pairs) -> tuple[np.ndarray, np.ndarray]:
    """Deviations of each series from its mean over the paired days (0 outside the pairs)."""
    ms = _masked_mean(p.sim, p.mask, p.n)[..., None]
    mo = _masked_mean(p.obs, p.mask, p.n)[..., None]
    return np.where(p.mask, p.sim - ms, 0.0), np.where(p.mask, p.obs - mo, 0.0)


def _finish(value: np.ndarray, valid: np.ndarray) -> np.ndarray:
    return np.asarray(np.where(valid, value, np.nan), dtype="float64")


# Why a metric is NaN: each check flags the cells it makes undefined. A metric's requirements (`NEEDS`)
# decide both its NaN cells and the reason `nan_reasons` gives for them, so the two cannot disagree.
_CHECKS: dict[str, Callable[[_Pairs], np.ndarray]] = {
    "constant simulation": lambda p: _is_constant(p.sim, p.mask),
    "constant observations": lambda p: _is_constant(p.obs, p.mask),
    "observed mean is 0": lambda p: _masked_mean(p.obs, p.mask, p.n) == 0,
}
NEEDS: dict[str, tuple[int, tuple[str, ...]]] = {
    "r": (2, ("constant simulation", "constant observations")),
    "anomaly_r": (2, ("constant simulation", "constant observations")),
    "ubrmsd": (1, ()),
    "rmse": (1, ()),
    "nrmse": (1, ("observed mean is 0",)),
    "bias_rel": (1, ("observed mean is 0",)),
    "nse": (2, ("constant observations",)),
    "kge": (2, ("constant simulation", "constant observations", "observed mean is 0")),
}
"""Per metric: the fewest paired days it can ever use (`min_n` may ask for more) and the checks it needs."""


def _reasons(p: _Pairs, metric: str, min_n: int, days: str = "paired days") -> np.ndarray:
    """Per cell, why `metric` is undefined ('' where it is defined); the first failing check wins."""
    fewest, checks = NEEDS[metric]
    need = max(min_n, fewest)
    out = np.full(np.shape(p.n), "", dtype=object)
    for reason, failed in reversed(
        [(f"no {days}", p.n == 0), (f"fewer than {need} {days}", p.n < need)]
        + [(name, _CHECKS[name](p)) for name in checks]
    ):  # reversed, so that earlier (more basic) reasons overwrite later ones
        out[np.asarray(failed)] = reason
    return out


def _valid(p: _Pairs, metric: str, min_n: int) -> np.ndarray:
    return np.asarray(_reasons(p, metric, min_n) == "")


def n_pairs(sim: np.ndarray, obs: np.ndarray) -> np.ndarray:
    """Number of days where both series are finite."""
    return _pairs(sim, obs).n


def pearson_r(sim: np.ndarray, obs: np.ndarray, min_n: int = DEFAULT_MIN_N) -> np.ndarray:
    """Pearson correlation over the paired days; NaN for fewer than `min_n` pairs or a constant series."""
    p = _pairs(sim, obs)
    ds, do = _centred(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ds * do).sum(axis=-1) / np.sqrt((ds * ds).sum(axis=-1) * (do * do).sum(axis=-1))
    return _finish(np.clip(r, -1.0, 1.0), _valid(p, "r", min_n))


def rmse(sim: np.ndarray, obs: np.ndarray, min_n: int = DEFAULT_MIN_N) -> np.ndarray:
    """Root-mean-square error over the paired days."""
    p = _pairs(sim, obs)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.sqrt(((p.sim - p.obs) ** 2).sum(axis=-1) / np.maximum(p.n, 1))
    return _finish(value, _valid(p, "rmse", min_n))


def ubrmsd(sim: np.ndarray, obs: np.ndarray, min_n: int = DEFAULT_MIN_N) -> np.ndarray:
    """Unbiased RMSD: the RMSD after removing each series' mean over the paired days."""
    p = _pairs(sim, obs)
    ds, do = _centred(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.sqrt(((ds - do) ** 2).sum(axis=-1) / np.maximum(p.n, 1))
    return _finish(value, _valid(p, "ubrmsd", min_n))


def nrmse(sim: np.ndarray, obs: np.ndarray, min_n: int = DEFAULT_MIN_N) -> np.ndarray:
    """RMSE divided by the mean of the observations over the paired days (SoMo.ml); NaN if that mean is 0."""
    p = _pairs(sim, obs)
    mo = _masked_mean(p.obs, p.mask, p.n)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = rmse(sim, obs, min_n) / mo
    return _finish(value, _valid(p, "nrmse", min_n))


def bias_rel(sim: np.ndarray, obs: np.ndarray, min_n: int = DEFAULT_MIN_N) -> np.ndarray:
    """Relative bias (mean(sim) - mean(obs)) / mean(obs) over the paired days; NaN if mean(obs) is 0."""
    p = _pairs(sim, obs)
    ms = _masked_mean(p.sim, p.mask, p.n)
    mo = _masked_mean(p.obs, p.mask, p.n)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (ms - mo) / mo
    return _finish(value, _valid(p, "bias_rel", min_n))


def nse(sim: np.ndarray, obs: np.ndarray, min_n: int = DEFAULT_MIN_N) -> np.ndarray:
    """Nash-Sutcliffe efficiency 1 - SSE / sum((obs - mean(obs))^2); NaN for constant observations."""
    p = _pairs(sim, obs)
    _, do = _centred(p)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = 1.0 - ((p.sim - p.obs) ** 2).sum(axis=-1) / (do * do).sum(axis=-1)
    return _finish(value, _valid(p, "nse", min_n))


def kge(sim: np.ndarray, obs: np.ndarray, min_n: int = DEFAULT_MIN_N) -> np.ndarray:
    """Kling-Gupta efficiency (Gupta et al. 2009): 1 - sqrt((r-1)^2 + (alpha-1)^2 + (beta-1)^2), with
    alpha = std(sim)/std(obs) and beta = mean(sim)/mean(obs); NaN where r is NaN or mean(obs) is 0."""
    p = _pairs(sim, obs)
    ds, do = _centred(p)
    r = pearson_r(sim, obs, min_n)
    ms = _masked_mean(p.sim, p.mask, p.n)
    mo = _masked_mean(p.obs, p.mask, p.n)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.sqrt((ds * ds).sum(axis=-1) / (do * do).sum(axis=-1))
        beta = ms / mo
        value = 1.0 - np.sqrt((r - 1.0) ** 2 + (alpha - 1.0) ** 2 + (beta - 1.0) ** 2)
    return _finish(value, _valid(p, "kge", min_n))


def anomalies(
    x: np.ndarray, half_window: int = ANOMALY_HALF_WINDOW, min_count: int = ANOMALY_MIN_COUNT
) -> np.ndarray:
    """Short-term anomalies along the last axis: x[d] minus the mean of the valid values in
    [d - half_window, d + half_window] (cut at the series ends), NaN where that window holds fewer than
    `min_count` valid values or x[d] is missing (SoMo.ml)."""
    a = np.asarray(x, dtype="float64")
    valid = np.isfinite(a)
    if a.shape[-1] == 0:
        return a.copy()
    # Anomalies do not depend on an offset; removing each series' first valid value keeps the cumulative
    # sums small and makes a constant series give exact zeros (so its anomaly correlation is NaN).
    first = np.take_along_axis(a, valid.argmax(axis=-1)[..., None], axis=-1)
    a = a - np.where(np.isfinite(first), first, 0.0)
    # Window sums from cumulative sums with a leading zero: sum[d] = cs[hi + 1] - cs[lo].
    zero = np.zeros((*a.shape[:-1], 1))
    cs_val = np.concatenate([zero, np.cumsum(np.where(valid, a, 0.0), axis=-1)], axis=-1)
    cs_cnt = np.concatenate([zero, np.cumsum(valid, axis=-1, dtype="float64")], axis=-1)
    t = a.shape[-1]
    days = np.arange(t)
    lo = np.clip(days - half_window, 0, t)
    hi = np.clip(days + half_window + 1, 0, t)
    total = cs_val[..., hi] - cs_val[..., lo]
    count = cs_cnt[..., hi] - cs_cnt[..., lo]
    ok = valid & (count >= max(min_count, 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, a - total / np.maximum(count, 1.0), np.nan)


def anomaly_r(
    sim: np.ndarray,
    obs: np.ndarray,
    min_n: int = DEFAULT_MIN_N,
    half_window: int = ANOMALY_HALF_WINDOW,
    min_count: int = ANOMALY_MIN_COUNT,
) -> np.ndarray:
    """Correlation of the short-term anomalies (`anomalies`) of each series, each computed from its own
    valid values as SoMo.ml does per station and per grid pixel, then paired where both are finite."""
    return pearson_r(anomalies(sim, half_window, min_count), anomalies(obs, half_window, min_count), min_n)


METRICS: dict[str, Callable[..., np.ndarray]] = {
    "r": pearson_r,
    "anomaly_r": anomaly_r,
    "ubrmsd": ubrmsd,
    "rmse": rmse,
    "nrmse": nrmse,
    "bias_rel": bias_rel,
    "nse": nse,
    "kge": kge,
}
"""Every metric by its column name in evaluation tables; each is `f(sim, obs, min_n)`."""


def nan_reasons(sim: np.ndarray, obs: np.ndarray, min_n: int = DEFAULT_MIN_N) -> dict[str, np.ndarray]:
    """Per metric of `METRICS`, why each cell's value is NaN (an object array of strings, '' where the
    value is defined): no or too few paired days, a constant series, a zero observed mean. Anomaly r
    counts paired *anomaly* days (an anomaly needs `ANOMALY_MIN_COUNT` valid values within ±17 days)."""
    p = _pairs(sim, obs)
    out = {name: _reasons(p, name, min_n) for name in METRICS if name != "anomaly_r"}
    anomaly_pairs = _pairs(anomalies(sim), anomalies(obs))
    out["anomaly_r"] = _reasons(anomaly_pairs, "anomaly_r", min_n, days="paired anomaly days")
    return {name: out[name] for name in METRICS}


def skill(sim: np.ndarray, obs: np.ndarray, min_n: int = DEFAULT_MIN_N) -> dict[str, np.ndarray]:
    """All `METRICS` plus `n` (paired days) for the same pair of arrays, keyed by column name."""
    out = {"n": n_pairs(sim, obs)}
    out.update({name: fn(sim, obs, min_n) for name, fn in METRICS.items()})
    return out
