"""Baselines the EA-LSTM is compared with on the same cross-validation folds.

A baseline is fitted on training samples (cell, day) and predicts soil moisture (m3 m-3) for other
samples, possibly at cells it never saw. All of them read one `BaselineData`: the raw (unstandardised)
daily inputs of a set of cells over one run of consecutive days, their statics, the observed target and
the day of year. Samples are index arrays (`cells`, `days`) into that data.

Registry (`make_baseline(name, **options)`):

* `random_forest` — scikit-learn `RandomForestRegressor` in the spirit of GSSM1KM: per sample, the day's
  dynamic inputs, the statics, antecedent precipitation sums over `precip_windows` days and antecedent
  means of `mean_inputs` (temperature, solar radiation) over `mean_windows` days. Deterministic for a
  given `seed` (also with `n_jobs` > 1). Samples with a non-finite feature are not fitted and predict NaN.
* `climatology` — the training mean per (cell, day of year); a seen cell without training data on that
  day of year falls back to its mean over all its training days; a cell not seen in training (the case
  for held-out stations) gets the day-of-year mean over all training cells (the network's mean seasonal
  cycle), and the overall training mean where no training cell has that day of year.
* `persistence` — yesterday's observed value at the same cell (`target[cell, day - 1]`). It uses the
  observations of the predicted cell, which no other method sees, so it is an upper reference for
  day-to-day memory, not a competitor that could run at an unobserved grid cell. Where yesterday is not
  observed (or `day` is the first day) it predicts NaN, and a scorer that pairs only finite values drops
  that day from persistence's score alone: nothing is carried forward across gaps.

Antecedent windows (`window_means`) end on and include the predicted day: the 7-day precipitation sum of
day d covers d-6 .. d, like the EA-LSTM's input window ending on d. A window mean is taken over the valid
days in it and kept only when at least `min_valid_fraction` of the window's days are valid (so a window
reaching before the first day of the data counts those days as missing); a sum is that mean times the
window length. Features are built for every (cell, day) at once from cumulative sums (no loop over days).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

PRECIP_WINDOWS = (3, 7, 30, 90)
"""Default antecedent precipitation windows (days)."""
MEAN_WINDOWS = (7, 30)
"""Default antecedent windows (days) for the means of `MEAN_INPUTS`."""
MEAN_INPUTS = ("t2m", "ssrd")
"""Default dynamic inputs whose antecedent means the random forest sees."""
N_DAYS_OF_YEAR = 366


@dataclass(frozen=True)
class BaselineData:
    """Inputs and observations of a set of cells over consecutive days (numpy only).

    Attributes:
        dynamic: (cells, days, n_dyn) raw daily inputs named by `dynamic_names` (e.g. `log_tp`, `t2m`, ...).
        dynamic_names: Names of the last axis of `dynamic`.
        static: (cells, n_stat) raw statics named by `static_names`.
        static_names: Names of the last axis of `static`.
        target: (cells, days) observed soil moisture (m3 m-3), NaN where missing.
        day_of_year: (days,) day of year of each day, 1..366.
        cell_ids: (cells,) identifiers that name a cell across data sets (station ids, "row,col").
    """

    dynamic: np.ndarray
    dynamic_names: tuple[str, ...]
    static: np.ndarray
    static_names: tuple[str, ...]
    target: np.ndarray
    day_of_year: np.ndarray
    cell_ids: np.ndarray

    def __post_init__(self) -> None:
        n_cells, n_days = self.target.shape
        if self.dynamic.shape != (n_cells, n_days, len(self.dynamic_names)):
            raise ValueError(
                f"dynamic has shape {self.dynamic.shape}, expected {(n_cells, n_days, len(self.dynamic_names))}"
            )
        if self.static.shape != (n_cells, len(self.static_names)):
            raise ValueError(
                f"static has shape {self.static.shape}, expected {(n_cells, len(self.static_names))}"
            )
        if self.day_of_year.shape != (n_days,) or self.cell_ids.shape != (n_cells,):
            raise ValueError("day_of_year must be (days,) and cell_ids (cells,)")
        doy = np.asarray(self.day_of_year)
        if n_days and (doy.min() < 1 or doy.max() > N_DAYS_OF_YEAR):
            raise ValueError("day_of_year must lie in 1..366")

    def dynamic_input(self, name: str) -> np.ndarray:
        """(cells, days) of one dynamic input; `tp` (mm/day) is also derived from `log_tp` = ln(1 + tp)."""
        names = list(self.dynamic_names)
        if name in names:
            return np.asarray(self.dynamic[..., names.index(name)], dtype="float64")
        if name == "tp" and "log_tp" in names:
            return np.expm1(np.asarray(self.dynamic[..., names.index("log_tp")], dtype="float64"))
        raise KeyError(f"dynamic input {name!r} is not among {names}")


@runtime_checkable
class Baseline(Protocol):
    """A model fitted on training samples that predicts samples of any cells of a `BaselineData`."""

    name: str

    def fit(self, data: BaselineData, cells: np.ndarray, days: np.ndarray) -> Baseline:
        """Fit on the samples (cells[i], days[i]); the target is `data.target[cells, days]`. Returns self."""
        ...

    def predict(self, data: BaselineData, cells: np.ndarray, days: np.ndarray) -> np.ndarray:
        """Soil moisture (m3 m-3) of the samples, shape (n,), NaN where the baseline cannot predict."""
        ...


# ----------------------------------------------------------------------------------------------------
# Antecedent features


def window_means(x: np.ndarray, windows: Sequence[int], min_valid_fraction: float = 0.8) -> np.ndarray:
    """Trailing means over `windows` days along the last axis, each window ending on and including the day.

    Args:
        x: (..., days) values, NaN where missing.
        windows: Window lengths in days (each >= 1).
        min_valid_fraction: Share of a window's days that must be valid, else NaN; days before the
            first day of `x` count as missing.

    Returns:
        (..., days, len(windows)) float64.
    """
    a = np.asarray(x, dtype="float64")
    valid = np.isfinite(a)
    zero = np.zeros((*a.shape[:-1], 1))
    total = np.concatenate([zero, np.cumsum(np.where(valid, a, 0.0), axis=-1)], axis=-1)
    count = np.concatenate([zero, np.cumsum(valid, axis=-1, dtype="float64")], axis=-1)
    days = np.arange(a.shape[-1])
    out = []
    for w in windows:  # a handful of window lengths; every day at once
        if w < 1:
            raise ValueError(f"window lengths must be >= 1, got {w}")
        lo = np.clip(days - w + 1, 0, None)
        s = total[..., days + 1] - total[..., lo]
        n = count[..., days + 1] - count[..., lo]
        need = max(math.ceil(min_valid_fraction * w - 1e-9), 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(n >= need, s / np.maximum(n, 1.0), np.nan))
    return np.stack(out, axis=-1) if out else np.zeros((*a.shape, 0))


def window_sums(x: np.ndarray, windows: Sequence[int], min_valid_fraction: float = 0.8) -> np.ndarray:
    """Trailing sums: `window_means` times the window length (gaps filled by the window's mean)."""
    return window_means(x, windows, min_valid_fraction) * np.asarray(windows, dtype="float64")


def antecedent_features(
    data: BaselineData,
    precip_windows: Sequence[int] = PRECIP_WINDOWS,
    mean_inputs: Sequence[str] = MEAN_INPUTS,
    mean_windows: Sequence[int] = MEAN_WINDOWS,
    min_valid_fraction: float = 0.8,
) -> tuple[np.ndarray, list[str]]:
    """The random forest's features of every (cell, day): (cells, days, n_features) and their names.

    Order: the day's dynamic inputs, the statics (repeated over days), precipitation sums
    `tp_sum_<w>d` (mm, from `tp` or `log_tp`), then `<name>_mean_<w>d` for each of `mean_inputs`."""
    n_cells, n_days = data.target.shape
    parts = [np.asarray(data.dynamic, dtype="float64")]
    names = list(data.dynamic_names)
    parts.append(
        np.broadcast_to(
            np.asarray(data.static, dtype="float64")[:, None, :], (n_cells, n_days, len(data.static_names))
        )
    )
    names += list(data.static_names)
    if precip_windows:
        parts.append(window_sums(data.dynamic_input("tp"), precip_windows, min_valid_fraction))
        names += [f"tp_sum_{w}d" for w in precip_windows]
    for name in mean_inputs if mean_windows else ():
        parts.append(window_means(data.dynamic_input(name), mean_windows, min_valid_fraction))
        names += [f"{name}_mean_{w}d" for w in mean_windows]
    return np.concatenate(parts, axis=-1), names


# ----------------------------------------------------------------------------------------------------
# Baselines


def _samples(cells: np.ndarray, days: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(cells, dtype="int64").ravel()
    d = np.asarray(days, dtype="int64").ravel()
    if c.shape != d.shape:
        raise ValueError(f"cells and days must have the same length, got {c.shape} and {d.shape}")
    return c, d


class RandomForestBaseline:
    """Random forest on the day's inputs, statics and antecedent features (see the module docstring)."""

    name = "random_forest"

    def __init__(
        self,
        n_estimators: int = 200,
        min_samples_leaf: int = 5,
        max_features: float | str | None = 0.5,
        seed: int = 0,
        n_jobs: int = 1,
        precip_windows: Sequence[int] = PRECIP_WINDOWS,
        mean_inputs: Sequence[str] = MEAN_INPUTS,
        mean_windows: Sequence[int] = MEAN_WINDOWS,
        min_valid_fraction: float = 0.8,
        max_samples: float | None = None,
    ) -> None:
        self.options: dict[str, Any] = {
            "n_estimators": n_estimators,
            "min_samples_leaf": min_samples_leaf,
            "max_features": max_features,
            "random_state": seed,
            "n_jobs": n_jobs,
            "max_samples": max_samples,
        }
        self.precip_windows = tuple(precip_windows)
        self.mean_inputs = tuple(mean_inputs)
        self.mean_windows = tuple(mean_windows)
        self.min_valid_fraction = min_valid_fraction
        self.model: Any = None
        self.feature_names: list[str] = []

    def features(self, data: BaselineData) -> tuple[np.ndarray, list[str]]:
        return antecedent_features(
            data, self.precip_windows, self.mean_inputs, self.mean_windows, self.min_valid_fraction
        )

    def fit(self, data: BaselineData, cells: np.ndarray, days: np.ndarray) -> RandomForestBaseline:
        from sklearn.ensemble import RandomForestRegressor

        c, d = _samples(cells, days)
        feats, self.feature_names = self.features(data)
        x, y = feats[c, d], np.asarray(data.target, dtype="float64")[c, d]
        ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
        if not ok.any():
            raise ValueError("random_forest: no training sample has a finite target and finite features")
        self.model = RandomForestRegressor(**self.options).fit(x[ok], y[ok])
        return self

    def predict(self, data: BaselineData, cells: np.ndarray, days: np.ndarray) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("random_forest: predict before fit")
        c, d = _samples(cells, days)
        x = self.features(data)[0][c, d]
        ok = np.isfinite(x).all(axis=1)
        out = np.full(len(c), np.nan)
        if ok.any():
            # The trees' mean in tree order: sklearn's threaded predict sums in completion order, which
            # changes the last bits from run to run with n_jobs > 1.
            total = np.zeros(int(ok.sum()))
            for tree in self.model.estimators_:
                total += tree.predict(x[ok])
            out[ok] = total / len(self.model.estimators_)
        return out


class ClimatologyBaseline:
    """Day-of-year mean of the training data, with the fallbacks of the module docstring."""

    name = "climatology"

    def __init__(self) -> None:
        self.ids = np.zeros(0)
        self.cell_doy = np.zeros((0, N_DAYS_OF_YEAR + 1))
        self.cell_mean = np.zeros(0)
        self.doy_mean = np.full(N_DAYS_OF_YEAR + 1, np.nan)
        self.mean = np.nan

    def fit(self, data: BaselineData, cells: np.ndarray, days: np.ndarray) -> ClimatologyBaseline:
        c, d = _samples(cells, days)
        y = np.asarray(data.target, dtype="float64")[c, d]
        ok = np.isfinite(y)
        c, d, y = c[ok], d[ok], y[ok]
        if len(y) == 0:
            raise ValueError("climatology: no finite training target")
        ids, slot = np.unique(np.asarray(data.cell_ids)[c], return_inverse=True)
        doy = np.asarray(data.day_of_year, dtype="int64")[d]
        n_slots = N_DAYS_OF_YEAR + 1
        flat = slot * n_slots + doy
        sums = np.bincount(flat, weights=y, minlength=len(ids) * n_slots).reshape(len(ids), n_slots)
        counts = np.bincount(flat, minlength=len(ids) * n_slots).reshape(len(ids), n_slots)
        with np.errstate(invalid="ignore", divide="ignore"):
            self.cell_doy = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
            self.cell_mean = sums.sum(axis=1) / counts.sum(axis=1)
            self.doy_mean = np.where(
                counts.sum(axis=0) > 0, sums.sum(axis=0) / np.maximum(counts.sum(axis=0), 1), np.nan
            )
        self.mean = float(y.mean())
        self.ids = ids  # sorted by np.unique
        return self

    def predict(self, data: BaselineData, cells: np.ndarray, days: np.ndarray) -> np.ndarray:
        c, d = _samples(cells, days)
        doy = np.asarray(data.day_of_year, dtype="int64")[d]
        ids = np.asarray(data.cell_ids)[c]
        s = np.clip(np.searchsorted(self.ids, ids), 0, max(len(self.ids) - 1, 0))
        seen = (self.ids[s] == ids) if len(self.ids) else np.zeros(len(c), dtype=bool)
        if len(self.cell_mean):
            own = np.where(seen, self.cell_doy[s, doy], np.nan)
            own = np.where(np.isfinite(own), own, np.where(seen, self.cell_mean[s], np.nan))
        else:
            own = np.full(len(c), np.nan)
        network = np.where(np.isfinite(self.doy_mean[doy]), self.doy_mean[doy], self.mean)
        return np.asarray(np.where(seen, own, network), dtype="float64")


class PersistenceBaseline:
    """Yesterday's observation at the same cell; NaN when it is missing (see the module docstring)."""

    name = "persistence"

    def fit(self, data: BaselineData, cells: np.ndarray, days: np.ndarray) -> PersistenceBaseline:
        return self

    def predict(self, data: BaselineData, cells: np.ndarray, days: np.ndarray) -> np.ndarray:
        c, d = _samples(cells, days)
        target = np.asarray(data.target, dtype="float64")
        yesterday = np.maximum(d - 1, 0)
        return np.where(d >= 1, target[c, yesterday], np.nan)


BASELINES: dict[str, Callable[..., Baseline]] = {
    RandomForestBaseline.name: RandomForestBaseline,
    ClimatologyBaseline.name: ClimatologyBaseline,
    PersistenceBaseline.name: PersistenceBaseline,
}
"""Every baseline by name: a factory taking the baseline's keyword options."""


def register_baseline(name: str, factory: Callable[..., Baseline]) -> None:
    """Add a baseline to the registry (an existing name is replaced)."""
    BASELINES[name] = factory


def make_baseline(name: str, **options: Any) -> Baseline:
    """A fresh baseline by registry name."""
    try:
        factory = BASELINES[name]
    except KeyError:
        raise KeyError(f"unknown baseline {name!r}; known: {sorted(BASELINES)}") from None
    return factory(**options)
