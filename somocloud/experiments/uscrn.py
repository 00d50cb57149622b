"""Real stations: USCRN 2020, EA-LSTM vs random forest, climatology and persistence at held-out stations.

`python -m somocloud.experiments.uscrn --parquet crn_2020.parquet --out results.json` runs the whole
experiment (`run_uscrn_experiment`), writes the results JSON and prints a table. The rules, in order
(docs/uscrn-experiment.md has the figures):

* **Data.** The USCRN daily01 table of one year (`wban`, `lst_date`, ...; column meanings in
  `shared/data/uscrn/attrs.yml`), one row per station and local-standard-time day. It is laid out as
  (station, day) arrays over every day from the first to the last date in the file.
* **Forcing from the station's own sensors** (the model's canonical names and units):
  `t2m` = `t_daily_avg` (mean of the hourly values; `t_daily_mean` = (max + min) / 2 where it is missing)
  + 273.15 K; `tp` = `p_daily_calc` (mm day-1; the model sees ln(1 + tp)); `ssrd` = `solarad_daily`
  (MJ m-2 day-1); `skt` = `sur_temp_daily_avg` (infrared surface temperature, corrected or raw as NOAA
  gives it) + 273.15 K; `q` (kg kg-1) from `rh_daily_avg` and the daily mean temperature:
  e = RH/100 · 611.2·exp(17.67·T/(T + 243.5)) Pa (Bolton 1980, the constants of the forcing build) and
  q = 0.622·e/(p − 0.378·e), p the standard-atmosphere pressure at the station's elevation when one is
  given (101325·(1 − 2.25577e-5·z)^5.25588 Pa), else 101325 Pa (q is then up to ~20 % low at 1.5-2 km,
  a per-station factor that the global standardisation does not remove but the statics can absorb).
  Daily means of RH and T give a daily q that is not the mean of hourly q. `snr` (surface net radiation)
  is not measured: with `snr="fao56"` (default) it is the FAO-56 estimate (Allen et al. 1998, eqs. 21,
  37, 38, 39): Rn = 0.77·Rs − σ·(Tmax⁴ + Tmin⁴)/2·(0.34 − 0.14·√ea)·(1.35·Rs/Rso − 0.35), with
  Rso = (0.75 + 2e-5·z)·Ra from latitude and day of year, ea from RH max/min and T min/max, Rs/Rso
  clipped to [0.33, 1] (0.33 where Rso is 0, polar night); with `snr="none"` the input is dropped.
* **Short forcing gaps** of at most `max_gap_fill` days are filled per station and variable: linearly
  between the neighbouring values, precipitation with 0 mm. Longer gaps stay missing, and every input
  window that touches one is not used (as in `train`).
* **Statics.** Of SoMo.ml's ten only two can be formed from station data: `p_mean` (mm yr-1, the
  year's mean daily precipitation × 365.25) and `aridity` (FAO-56 net radiation in mm, /2.45 MJ kg-1,
  over precipitation; only with `snr="fao56"`), plus `elev_mean` when elevations are given. Unavailable,
  and left out rather than filled with a constant (a constant standardises to 0 and tells the model
  nothing): `elev_std`, `clay`, `sand`, `silt`, `porosity_top`, `porosity_mid`, `veg_type` (and
  `elev_mean` without elevations; the parquet has none). Added instead: `lat`, `lon` and the year's
  means of `t2m`, `ssrd`, `q`, `skt`. All are forcing or location, never soil moisture. Options:
  `drop_statics` leaves some out; `gldas_statics` (a GLDAS-2.1 Noah file) adds that land-surface model's
  soil moisture at 0-10 and 10-40 cm at the station's cell, a proxy for the soil the table lacks (both
  models get it).
* **Targets** (m3 m-3, the station's own values, not rescaled: there is no reference grid here). USCRN
  probes sit at 5, 10, 20, 50, 100 cm. With `targets.py`'s layer rules (a layer holds its lower
  boundary; one sensor per station and layer, mid-depth first) layer 1 (0-10 cm) is the 5 cm probe,
  or the 10 cm probe for a station whose 5 cm series has fewer than `min_target_days` values; layer 2
  (10-30 cm) is the 20 cm probe (the 10 cm probe belongs to layer 1); layer 3 (30-50 cm) is the 50 cm
  probe (the only one in the layer; 100 cm is in none). `targets.py` weights by depth only the
  reference layers, so the probes are selected, not averaged.
* **Stations**: those with at least `min_target_days` target values in every layer and at least
  `min_forcing_days` days on which every dynamic input is finite after the gap fill.
* **Folds**: stations are shuffled with `seed` and dealt into `n_folds` folds; each fold is held out once.
  Everything fitted (input scalers, target mean/std, NSE* cell stds, EA-LSTM weights, random forest,
  climatology) sees the training stations only.
* **EA-LSTM**: `train.train_member` per fold and layer (`n_members` seeds, predictions averaged, negative
  values clipped to 0), windows of `seq_length` days inside the year, each layer from the forcing alone
  (with `cascade`, layers 2 and 3 also take the simulations of the layers above: out-of-fold at the
  test stations, in-sample at the training stations, as the product's `train` step does). Options that
  regularise the members: `static_noise_std` (Gaussian noise on the standardised statics of each
  training window), `member_station_fraction` (each member fits a seeded share of the training stations),
  `learning_rate_schedule`. With `predict_last_n` = 1 (SoMo.ml) a day
  is predicted by the last output of its `seq_length` window. With n > 1 the loss covers the last n days
  of each window, and a day is predicted from up to `seq_length` days of history after a warm-up of
  `seq_length - n` days (`_predict_ealstm`). With `validation_fraction` > 0 that share of the training
  stations is not fitted but gives a validation loss per epoch; with `early_stopping_patience` a member
  stops when it has not improved for that many epochs and keeps its best epoch's weights.
* **Scoring**: at held-out stations, on the days that have an observation and at least
  `seq_length - predict_last_n + 1` days of complete inputs up to the day (so from day 60 of the year on
  at the defaults); every method is scored on those same days (persistence loses, in addition, the days
  after a missing observation). Per station: r, anomaly r (35-day moving-window anomalies,
  `metrics.anomaly_r`) and ubRMSD from `somocloud.metrics`, with at
  least `min_pairs` paired days; then the median over stations, per layer and method.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import math
import sys
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from somocloud import metrics, stores
from somocloud.baselines import BaselineData, make_baseline
from somocloud.layers import DEPTH_BOUNDS, N_LAYERS
from somocloud.model.features import Scaler, stack_inputs
from somocloud.train import (
    LayerData,
    MemberSpec,
    Settings,
    any_target_in_last_n,
    gather_windows,
    train_member,
    valid_window_ends,
)

log = logging.getLogger(__name__)

KELVIN = 273.15
STANDARD_PRESSURE = 101325.0
"""Pa, used when a station's elevation is not given."""
SIGMA_MJ = 4.903e-9
"""Stefan-Boltzmann constant in MJ K-4 m-2 day-1 (FAO-56)."""
LATENT_HEAT = 2.45
"""MJ kg-1: converts net radiation (MJ m-2) to evaporable water (mm) for the aridity index."""
DAYS_PER_YEAR = 365.25

PROBES_CM = (5, 10, 20, 50, 100)
LAYER_PROBES_CM: tuple[tuple[int, ...], ...] = ((5, 10), (20,), (50,))
"""Candidate probes (cm) of each target layer, best first (targets.py's layer rules)."""
DYNAMIC_NAMES = ("log_tp", "t2m", "snr", "ssrd", "q", "skt")
"""The model's dynamic inputs (SoMo.ml order); `snr` is dropped with `snr="none"`."""
UNAVAILABLE_STATICS = ("elev_std", "clay", "sand", "silt", "porosity_top", "porosity_mid", "veg_type")
"""SoMo.ml statics that USCRN's table cannot give (and `elev_mean` unless elevations are passed)."""
METHODS = ("ealstm", "random_forest", "climatology", "persistence")
SCORES = ("r", "anomaly_r", "ubrmsd")
HIGHER_IS_BETTER = {"r": True, "anomaly_r": True, "ubrmsd": False}


def _schedule_item(text: str) -> tuple[int, float]:
    epoch, _, rate = text.partition(":")
    try:
        return int(epoch), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--learning-rate-schedule: expected EPOCH:RATE, e.g. 6:1e-3, got {text!r}"
        ) from None


LIST_SETTINGS: dict[str, Any] = {
    "methods": str,
    "drop_statics": str,
    "learning_rate_schedule": _schedule_item,
}
"""Settings given on the command line as comma-separated lists, with the parser of one item."""
SEED_FOLD_STRIDE = 100
SEED_LAYER_STRIDE = 1000

COLUMNS = (
    "t_daily_avg", "t_daily_mean", "t_daily_max", "t_daily_min", "p_daily_calc", "solarad_daily",
    "sur_temp_daily_avg", "rh_daily_avg", "rh_daily_max", "rh_daily_min",
    *(f"soil_moisture_{d}_daily" for d in PROBES_CM),
)  # fmt: skip
"""USCRN daily01 columns the experiment reads (besides wban, lst_date, latitude, longitude)."""


@dataclass(frozen=True)
class ExperimentSettings:
    """Everything that defines one run of the experiment (stored in the results JSON)."""

    n_folds: int = 5
    seed: int = 0
    methods: tuple[str, ...] = METHODS
    # stations and inputs
    min_target_days: int = 180
    min_forcing_days: int = 300
    max_gap_fill: int = 5
    snr: str = "fao56"
    max_stations: int | None = None
    # EA-LSTM (train.train_member)
    seq_length: int = 60
    hidden_size: int = 32
    dropout: float = 0.25
    initial_forget_bias: float = 3.0
    epochs: int = 8
    batch_size: int = 128
    learning_rate: float = 1e-2
    learning_rate_schedule: tuple[tuple[int, float], ...] = ()
    max_windows_per_epoch: int | None = None
    grad_clip: float = 1.0
    nse_epsilon: float = 0.05
    predict_last_n: int = 1
    validation_fraction: float = 0.0
    early_stopping_patience: int | None = None
    cascade: bool = False
    static_noise_std: float = 0.0
    drop_statics: tuple[str, ...] = ()
    gldas_statics: str = ""
    n_members: int = 1
    member_station_fraction: float = 1.0
    threads: int = 1
    # random forest
    rf_trees: int = 100
    rf_min_samples_leaf: int = 5
    rf_max_features: float = 0.5
    rf_min_valid_fraction: float = 0.6
    n_jobs: int = 1
    # scoring
    min_pairs: int = 30

    def __post_init__(self) -> None:
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {list(METHODS)}")
        if self.snr not in ("fao56", "none"):
            raise ValueError(f"snr must be 'fao56' or 'none', got {self.snr!r}")
        if self.n_folds < 2:
            raise ValueError("n_folds must be at least 2")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if self.early_stopping_patience is not None and self.validation_fraction == 0:
            raise ValueError("early_stopping_patience needs validation_fraction > 0")
        if not 0 < self.member_station_fraction <= 1:
            raise ValueError(f"member_station_fraction must be in (0, 1], got {self.member_station_fraction}")
        if not 1 <= self.predict_last_n < self.seq_length:
            raise ValueError(f"predict_last_n must be in 1..seq_length-1, got {self.predict_last_n}")

    @property
    def warm_up(self) -> int:
        """Days of complete inputs before the first predicted day: seq_length - predict_last_n."""
        return self.seq_length - self.predict_last_n


# ----------------------------------------------------------------------------------------------------
# Reading the table


@dataclass
class StationTable:
    """USCRN daily columns as (station, day) arrays over every day from the first to the last date."""

    wban: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    days: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def day_of_year(self) -> np.ndarray:
        return np.asarray(pd.DatetimeIndex(self.days).day_of_year, dtype="int64")

    def subset(self, keep: np.ndarray) -> StationTable:
        return StationTable(
            self.wban[keep],
            self.lat[keep],
            self.lon[keep],
            self.days,
            {k: v[keep] for k, v in self.columns.items()},
        )


def read_uscrn(url: str) -> pd.DataFrame:
    """The daily table at `url` (any store URL) as a DataFrame."""
    return pd.read_parquet(io.BytesIO(stores.read_bytes(url)))


def station_table(df: pd.DataFrame) -> StationTable:
    """Lay the rows out as (station, day) arrays; a repeated (station, day) keeps its first row and a
    missing column is all NaN. Stations are sorted by WBAN number; coordinates are each station's first."""
    for name in ("wban", "lst_date", "latitude", "longitude"):
        if name not in df.columns:
            raise ValueError(f"not a USCRN daily table: column {name!r} missing")
    df = df.assign(lst_date=pd.to_datetime(df["lst_date"]).dt.floor("D"), wban=df["wban"].astype(str))
    df = df.drop_duplicates(subset=["wban", "lst_date"], keep="first")
    day = df["lst_date"].to_numpy("datetime64[D]")
    first, last = day.min(), day.max()
    days = np.arange(first, last + np.timedelta64(1, "D"))
    codes, wban = pd.factorize(df["wban"], sort=True)
    d = (day - first).astype("int64")
    n, t = len(wban), len(days)
    columns = {}
    for name in COLUMNS:
        arr = np.full((n, t), np.nan)
        if name in df.columns:
            arr[codes, d] = pd.to_numeric(df[name], errors="coerce").to_numpy("float64")
        columns[name] = arr
    first_row = np.unique(codes, return_index=True)[1]
    lat = df["latitude"].to_numpy("float64")[first_row]
    lon = df["longitude"].to_numpy("float64")[first_row]
    return StationTable(np.asarray(wban, dtype=str), lat, lon, days, columns)


# ----------------------------------------------------------------------------------------------------
# Physics of the column mapping


def standard_pressure(elevation_m: ArrayLike | None) -> np.ndarray:
    """Standard-atmosphere surface pressure (Pa) at an elevation (m); 101325 Pa where it is unknown."""
    z = np.asarray(np.nan if elevation_m is None else elevation_m, dtype="float64")
    p = STANDARD_PRESSURE * (1.0 - 2.25577e-5 * z) ** 5.25588
    return np.asarray(np.where(np.isfinite(p), p, STANDARD_PRESSURE))


def saturation_vapour_pressure(t_c: ArrayLike) -> np.ndarray:
    """Pa, over water, Bolton (1980), T in °C (as `forcing.sources.specific_humidity`)."""
    t = np.asarray(t_c, dtype="float64")
    return np.asarray(611.2 * np.exp(17.67 * t / (t + 243.5)))


def specific_humidity_from_rh(t_c: ArrayLike, rh_percent: ArrayLike, pressure_pa: ArrayLike) -> np.ndarray:
    """Specific humidity (kg kg-1) from air temperature (°C), relative humidity (%) and pressure (Pa)."""
    e = np.asarray(rh_percent, dtype="float64") / 100.0 * saturation_vapour_pressure(t_c)
    return np.asarray(0.622 * e / (np.asarray(pressure_pa, dtype="float64") - 0.378 * e))


def extraterrestrial_radiation(lat_deg: ArrayLike, day_of_year: ArrayLike) -> np.ndarray:
    """Daily extraterrestrial radiation Ra (MJ m-2 day-1), FAO-56 eq. 21; broadcasts lat against days."""
    phi = np.radians(np.asarray(lat_deg, dtype="float64"))
    j = np.asarray(day_of_year, dtype="float64")
    dr = 1.0 + 0.033 * np.cos(2.0 * np.pi * j / 365.0)
    delta = 0.409 * np.sin(2.0 * np.pi * j / 365.0 - 1.39)
    ws = np.arccos(np.clip(-np.tan(phi) * np.tan(delta), -1.0, 1.0))
    ra = (
        24.0
        * 60.0
        / np.pi
        * 0.0820
        * dr
        * (ws * np.sin(phi) * np.sin(delta) + np.cos(phi) * np.cos(delta) * np.sin(ws))
    )
    return np.asarray(np.maximum(ra, 0.0))


def actual_vapour_pressure(
    tmax_c: ArrayLike, tmin_c: ArrayLike, rh_max: ArrayLike, rh_min: ArrayLike
) -> np.ndarray:
    """ea (kPa) from the daily temperature and humidity extremes, FAO-56 eq. 17."""

    def e0(t: ArrayLike) -> np.ndarray:
        t = np.asarray(t, dtype="float64")
        return np.asarray(0.6108 * np.exp(17.27 * t / (t + 237.3)))

    return np.asarray(
        (e0(tmin_c) * np.asarray(rh_max) / 100.0 + e0(tmax_c) * np.asarray(rh_min) / 100.0) / 2.0
    )


def fao56_net_radiation(
    rs: ArrayLike,
    tmax_c: ArrayLike,
    tmin_c: ArrayLike,
    ea_kpa: ArrayLike,
    ra: ArrayLike,
    elevation_m: ArrayLike = 0.0,
    albedo: float = 0.23,
) -> np.ndarray:
    """Net radiation (MJ m-2 day-1), FAO-56 eqs. 37-40, with Rs/Rso clipped to [0.33, 1]."""
    rs = np.asarray(rs, dtype="float64")
    rso = (0.75 + 2e-5 * np.nan_to_num(np.asarray(elevation_m, dtype="float64"))) * np.asarray(ra)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(rso > 0, rs / np.where(rso > 0, rso, 1.0), 0.33)
    ratio = np.where(np.isnan(ratio), np.nan, np.clip(ratio, 0.33, 1.0))
    t4 = ((np.asarray(tmax_c) + KELVIN) ** 4 + (np.asarray(tmin_c) + KELVIN) ** 4) / 2.0
    with np.errstate(invalid="ignore"):
        rnl = (
            SIGMA_MJ
            * t4
            * (0.34 - 0.14 * np.sqrt(np.asarray(ea_kpa, dtype="float64")))
            * (1.35 * ratio - 0.35)
        )
    return np.asarray((1.0 - albedo) * rs - rnl)


def fill_short_gaps(x: np.ndarray, max_gap: int, constant: float | None = None) -> np.ndarray:
    """Fill runs of at most `max_gap` missing days between two valid days along the last axis: linearly,
    or with `constant`. Gaps at the start or end of the series stay missing."""
    a = np.asarray(x, dtype="float64")
    if max_gap < 1 or a.shape[-1] == 0:
        return a.copy()
    t = a.shape[-1]
    valid = np.isfinite(a)
    idx = np.broadcast_to(np.arange(t), a.shape)
    prev = np.maximum.accumulate(np.where(valid, idx, -1), axis=-1)
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(valid, idx, t), axis=-1), axis=-1), axis=-1)
    fill = ~valid & (prev >= 0) & (nxt < t) & (nxt - prev - 1 <= max_gap)
    if constant is not None:
        return np.where(fill, constant, a)
    lo = np.take_along_axis(a, np.clip(prev, 0, t - 1), axis=-1)
    hi = np.take_along_axis(a, np.clip(nxt, 0, t - 1), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = (idx - prev) / np.maximum(nxt - prev, 1)
    return np.where(fill, lo + w * (hi - lo), a)


def _elevations(table: StationTable, elevation: Mapping[str, float] | None) -> np.ndarray:
    if not elevation:
        return np.full(len(table.wban), np.nan)
    return np.array([float(elevation.get(str(w), np.nan)) for w in table.wban])


def uscrn_forcing(
    table: StationTable,
    elevation: Mapping[str, float] | None = None,
    snr: str = "fao56",
    max_gap_fill: int = 0,
) -> dict[str, np.ndarray]:
    """The canonical forcing (`t2m`, `tp`, `ssrd`, `q`, `skt`, and `snr` unless `snr="none"`) of every
    station and day, in the canonical units, short gaps filled (module docstring)."""
    c = table.columns
    z = _elevations(table, elevation)
    t_c = np.where(np.isfinite(c["t_daily_avg"]), c["t_daily_avg"], c["t_daily_mean"])
    out = {
        "t2m": t_c + KELVIN,
        "tp": np.where(c["p_daily_calc"] >= 0, c["p_daily_calc"], np.nan),
        "ssrd": np.where(c["solarad_daily"] >= 0, c["solarad_daily"], np.nan),
        "q": specific_humidity_from_rh(t_c, c["rh_daily_avg"], standard_pressure(z)[:, None]),
        "skt": c["sur_temp_daily_avg"] + KELVIN,
    }
    if snr == "fao56":
        ra = extraterrestrial_radiation(table.lat[:, None], table.day_of_year[None, :])
        ea = actual_vapour_pressure(c["t_daily_max"], c["t_daily_min"], c["rh_daily_max"], c["rh_daily_min"])
        out["snr"] = fao56_net_radiation(
            out["ssrd"], c["t_daily_max"], c["t_daily_min"], ea, ra, np.nan_to_num(z)[:, None]
        )
    elif snr != "none":
        raise ValueError(f"snr must be 'fao56' or 'none', got {snr!r}")
    for name in list(out):
        out[name] = fill_short_gaps(out[name], max_gap_fill, 0.0 if name == "tp" else None)
    return out


def uscrn_targets(table: StationTable, min_days: int) -> tuple[np.ndarray, np.ndarray]:
    """Targets (stations, days, 3 layers) in m3 m-3 and the probe depth (cm) used per station and layer
    (0 where no probe has `min_days` values; that layer is then all NaN)."""
    n, t = len(table.wban), len(table.days)
    y = np.full((n, t, N_LAYERS), np.nan)
    probe = np.zeros((n, N_LAYERS), dtype="int64")
    for k, candidates in enumerate(LAYER_PROBES_CM):
        for depth in reversed(candidates):  # the best candidate with enough data is written last
            values = table.columns[f"soil_moisture_{depth}_daily"]
            values = np.where((values >= 0) & (values <= 1), values, np.nan)
            ok = np.isfinite(values).sum(axis=1) >= min_days
            y[ok, :, k] = values[ok]
            probe[ok, k] = depth
    return y, probe


def uscrn_statics(
    forcing: Mapping[str, np.ndarray], table: StationTable, elevation: Mapping[str, float] | None = None
) -> dict[str, np.ndarray]:
    """Per-station statics from location and the year's forcing (module docstring)."""
    with np.errstate(invalid="ignore", divide="ignore"), _quiet():
        tp_mean = np.nanmean(forcing["tp"], axis=1)
        out = {"lat": table.lat.copy(), "lon": table.lon.copy()}
        z = _elevations(table, elevation)
        if np.isfinite(z).all():
            out["elev_mean"] = z
        out["p_mean"] = tp_mean * DAYS_PER_YEAR
        if "snr" in forcing:
            out["aridity"] = np.nanmean(forcing["snr"], axis=1) / LATENT_HEAT / tp_mean
        for name in ("t2m", "ssrd", "q", "skt"):
            out[f"{name}_mean"] = np.nanmean(forcing[name], axis=1)
    return out


GLDAS_LAYERS = {"SoilMoi0_10cm_inst": ("gldas_sm_0_10", 0.1), "SoilMoi10_40cm_inst": ("gldas_sm_10_40", 0.3)}
"""GLDAS-2.1 Noah soil moisture variables (kg m-2) → static name and layer thickness (m)."""


def gldas_statics(
    path: str, lat: np.ndarray, lon: np.ndarray, max_distance: float = 1.0
) -> dict[str, np.ndarray]:
    """Soil moisture (m3 m-3) of a GLDAS-2.1 Noah file (a local NetCDF path; `shared/data/gldas` has one
    3-hourly field) at each station: the nearest cell with a value within `max_distance` degrees (NaN
    beyond, and the station is then not selected). A land-surface model's state, not the station's
    observations: it carries the model's soil texture and climate, the soil information the USCRN table
    lacks.

    Raises:
        ValueError: The file lacks one of the `GLDAS_LAYERS` variables (named with the file)."""
    import xarray as xr

    with xr.open_dataset(path) as ds:
        missing = sorted(set(GLDAS_LAYERS) - set(ds.data_vars))
        if missing:
            raise ValueError(f"{path}: GLDAS variables {missing} are missing; need {list(GLDAS_LAYERS)}")
        glat, glon = np.meshgrid(ds["lat"].values, ds["lon"].values, indexing="ij")
        out = {}
        for var, (name, thickness) in GLDAS_LAYERS.items():
            field = ds[var].isel(time=0).values
            valid = np.isfinite(field)
            vlat, vlon, vval = glat[valid], glon[valid], field[valid]
            values = np.full(len(lat), np.nan)
            for i, (a, b) in enumerate(zip(lat, lon, strict=True)):
                d2 = (vlat - a) ** 2 + ((vlon - b) * np.cos(np.radians(a))) ** 2
                j = int(np.argmin(d2))
                if d2[j] <= max_distance**2:
                    values[i] = vval[j] / (1000.0 * thickness)
            out[name] = values
    return out


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's all-NaN RuntimeWarnings (stations without data give NaN, handled by the callers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def station_folds(n: int, n_folds: int, seed: int) -> np.ndarray:
    """Fold (0..n_folds-1) of each of `n` stations: a seeded shuffle dealt round-robin (sizes differ by <= 1)."""
    fold = np.empty(n, dtype="int64")
    fold[np.random.default_rng(seed).permutation(n)] = np.arange(n) % n_folds
    return fold


# ----------------------------------------------------------------------------------------------------
# The experiment


@dataclass
class Inputs:
    """Everything the folds need: the selected stations' raw inputs and targets."""

    table: StationTable
    dynamic_names: tuple[str, ...]
    static_names: tuple[str, ...]
    dyn_raw: np.ndarray
    stat_raw: np.ndarray
    targets: np.ndarray
    probes: np.ndarray
    n_candidates: int


def prepare_inputs(
    df: pd.DataFrame, settings: ExperimentSettings, elevation: Mapping[str, float] | None = None
) -> Inputs:
    """Map the columns, build statics and targets, and keep the stations with good coverage."""
    table = station_table(df)
    forcing = uscrn_forcing(table, elevation, settings.snr, settings.max_gap_fill)
    dynamic_names = tuple(n for n in DYNAMIC_NAMES if n != "snr" or "snr" in forcing)
    dyn_raw = stack_inputs(forcing, dynamic_names)
    statics = uscrn_statics(forcing, table, elevation)
    if settings.gldas_statics:
        statics |= gldas_statics(settings.gldas_statics, table.lat, table.lon)
        far = table.wban[~np.isfinite(statics["gldas_sm_0_10"]) | ~np.isfinite(statics["gldas_sm_10_40"])]
        if len(far):
            log.warning(
                "%s: no GLDAS value within 1° of stations %s; they are not selected",
                settings.gldas_statics,
                far.tolist(),
            )
    unknown = sorted(set(settings.drop_statics) - set(statics))
    if unknown:
        raise ValueError(f"drop_statics: unknown statics {unknown}; the statics are {list(statics)}")
    statics = {k: v for k, v in statics.items() if k not in settings.drop_statics}
    static_names = tuple(statics)
    stat_raw = np.stack([statics[n] for n in static_names], axis=1).astype("float32")
    targets, probes = uscrn_targets(table, settings.min_target_days)
    keep = (
        (probes > 0).all(axis=1)
        & (np.isfinite(dyn_raw).all(axis=2).sum(axis=1) >= settings.min_forcing_days)
        & np.isfinite(stat_raw).all(axis=1)
    )
    idx = np.flatnonzero(keep)
    if settings.max_stations is not None:
        idx = idx[: settings.max_stations]
    if len(idx) < settings.n_folds:
        raise ValueError(
            f"only {len(idx)} stations have good coverage; need at least n_folds={settings.n_folds}"
        )
    return Inputs(
        table.subset(idx), dynamic_names, static_names, dyn_raw[idx], stat_raw[idx], targets[idx].astype("float32"),
        probes[idx], len(table.wban),
    )  # fmt: skip


def _settings(s: ExperimentSettings, n_dynamic: int, n_static: int) -> Settings:
    """`train.Settings` from the experiment's settings (only the fields that `Settings` has)."""
    values: dict[str, Any] = {
        "n_dynamic": n_dynamic,
        "n_static": n_static,
        "hidden_size": s.hidden_size,
        "dropout": s.dropout,
        "initial_forget_bias": s.initial_forget_bias,
        "seq_length": s.seq_length,
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "learning_rate": s.learning_rate,
        "learning_rate_schedule": s.learning_rate_schedule,
        "max_windows_per_epoch": s.max_windows_per_epoch,
        "grad_clip": s.grad_clip,
        "nse_epsilon": s.nse_epsilon,
        "threads": s.threads,
        "predict_last_n": s.predict_last_n,
        "early_stopping_patience": s.early_stopping_patience,
        "static_noise_std": s.static_noise_std,
    }
    names = {f.name for f in dataclasses.fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if k in names})


def history_length(finite: np.ndarray) -> np.ndarray:
    """(cells, days): how many consecutive days up to and including each day have every input finite."""
    out = np.zeros(finite.shape, dtype="int64")
    run = np.zeros(finite.shape[0], dtype="int64")
    for d in range(finite.shape[1]):
        run = np.where(finite[:, d], run + 1, 0)
        out[:, d] = run
    return out


def _predict_ealstm(
    states: Sequence[Mapping[str, Any]],
    s: ExperimentSettings,
    x_dyn: np.ndarray,
    x_stat: np.ndarray,
    history: np.ndarray,
    mean: float,
    std: float,
    batch: int = 4096,
) -> np.ndarray:
    """Ensemble-mean prediction (m3 m-3, clipped at 0): (cells, days), NaN where fewer than `warm_up + 1`
    days of complete inputs lead up to the day.

    A day's window is its last min(seq_length, history) days, and its prediction the window's last output.
    With predict_last_n = 1 that is always the full seq_length window (the exact method). With n > 1 the
    model was trained on outputs `warm_up`..seq_length-1 of its windows, and a shorter window's last output
    is one of those (days early in a run of complete inputs, from the start of the run)."""
    import torch

    from somocloud.model.ealstm import EALSTM, for_inference

    seq = s.seq_length
    total = np.zeros(x_dyn.shape[:2], dtype="float64")
    nets: list[Any] = []
    for state in states:
        net = EALSTM(x_dyn.shape[-1], x_stat.shape[-1], s.hidden_size, s.dropout, s.initial_forget_bias)
        net.load_state_dict(dict(state))
        nets.append(for_inference(net, "cpu"))
    full_cells, full_days = np.nonzero(history >= seq)
    short = (history > s.warm_up) & (history < seq)
    runs = sorted({(c, d - history[c, d] + 1) for c, d in zip(*np.nonzero(short), strict=True)})
    with torch.no_grad():
        for net in nets:
            for i0 in range(0, len(full_cells), batch):
                c, d = full_cells[i0 : i0 + batch], full_days[i0 : i0 + batch]
                xd, xs = gather_windows(x_dyn, x_stat, c, d - seq + 1, seq)
                total[c, d] += net(torch.from_numpy(xd), torch.from_numpy(xs)).numpy()
            for c0, start in runs:  # one pass from the run's start gives every short window's last output
                days = np.flatnonzero(short[c0] & (np.arange(len(short[c0])) - history[c0] + 1 == start))
                n = int(days[-1] - start + 1)
                xd, xs = gather_windows(x_dyn, x_stat, np.array([c0]), np.array([start]), n)
                out = net(torch.from_numpy(xd), torch.from_numpy(xs), last_n=n).numpy().reshape(-1)
                total[c0, days] += out[days - start]
    pred = np.maximum(total / len(nets) * std + mean, 0.0)
    return np.where(history > s.warm_up, pred, np.nan)


def _member_share(data: LayerData, s: ExperimentSettings, seed: int) -> LayerData:
    """The member's training windows: those of a seeded `member_station_fraction` of the fitted stations
    (every one at 1), so that members differ in their stations as a forest's trees do."""
    if s.member_station_fraction >= 1:
        return data
    stations = np.unique(data.fit_cells)
    n = max(1, round(s.member_station_fraction * len(stations)))
    keep = np.isin(data.fit_cells, np.random.default_rng(seed).permutation(stations)[:n])
    return dataclasses.replace(data, fit_cells=data.fit_cells[keep], fit_days=data.fit_days[keep])


def _fit_ealstm_fold(
    inp: Inputs, s: ExperimentSettings, train: np.ndarray, test: np.ndarray, fold: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train the EA-LSTM per layer on the training stations; predictions at the test stations
    (test, days, layers) and a training summary.

    Training windows are the complete seq_length windows, with the loss on their last predict_last_n days
    (`train.train_member`). Training day j is day j + warm_up of the year; the inputs get predict_last_n - 1
    leading NaN days so that window j (ending on day j + warm_up) reads rows j .. j + seq_length - 1.

    With `cascade`, layer k's inputs end with the simulations of layers 1..k-1 (standardised with their
    training-station mean and std): at the test stations their out-of-fold predictions, at the training
    stations the in-sample simulation of the upper layer's members, as the product's `train` step does.
    Observed soil moisture is never an input."""
    seq, last_n, warm = s.seq_length, s.predict_last_n, s.warm_up
    with _quiet():
        scaler = Scaler.fit(
            {n: inp.dyn_raw[train][..., i] for i, n in enumerate(inp.dynamic_names)}
            | {n: inp.stat_raw[train, i] for i, n in enumerate(inp.static_names)}
        )
    x_layer = scaler.apply(inp.dyn_raw, inp.dynamic_names)  # (stations, days, inputs of this layer)
    x_stat = scaler.apply(inp.stat_raw, inp.static_names)
    # validation stations (early stopping): a seeded share of the training stations, never fitted
    validation = np.zeros(len(train), dtype=bool)
    n_val = round(s.validation_fraction * len(train))
    validation[np.random.default_rng([s.seed, fold]).permutation(len(train))[:n_val]] = True
    settings = _settings(s, len(inp.dynamic_names), len(inp.static_names))
    pred = np.full((len(test), inp.targets.shape[1], N_LAYERS), np.nan)
    summary: dict[str, Any] = {}
    for k in range(N_LAYERS):
        finite = np.isfinite(x_layer).all(axis=2)
        pad = np.full((len(train), last_n - 1, x_layer.shape[2]), np.nan, dtype=x_layer.dtype)
        x_train = np.concatenate([pad, x_layer[train]], axis=1)
        ok_window = valid_window_ends(np.isfinite(x_train).all(axis=2), seq)
        raw = inp.targets[train, :, k].astype("float64")
        with _quiet():
            mean, std = float(np.nanmean(raw)), float(np.nanstd(raw))
            cell_std = np.nan_to_num(np.nanstd(raw, axis=1), nan=0.0).astype("float32")
        std = std if std > 0 and np.isfinite(std) else 1.0
        y = ((raw[:, warm:] - mean) / std).astype("float32")
        cells, days = np.nonzero(any_target_in_last_n(np.isfinite(y), last_n) & ok_window)
        is_val = validation[cells]
        data = LayerData(
            y=y,
            cell_std=cell_std,
            fit_cells=cells[~is_val],
            fit_days=days[~is_val],
            val_cells=cells[is_val],
            val_days=days[is_val],
        )
        results = []
        for m in range(s.n_members):
            spec = MemberSpec(k + 1, m, s.seed + SEED_LAYER_STRIDE * (k + 1) + SEED_FOLD_STRIDE * fold + m)
            t0 = time.perf_counter()
            share = _member_share(data, s, spec.seed)
            results.append(train_member(spec, share, x_train, x_stat[train], settings))
            r = results[-1]
            log.info(
                "fold %d layer %d member %d: %d windows, NSE* %s, validation %s, best epoch %s, %.0f s",
                fold, k + 1, m, len(share.fit_cells), [round(v, 2) for v in r.train_loss],
                [None if v is None else round(v, 2) for v in r.val_loss], r.best_epoch, time.perf_counter() - t0,
            )  # fmt: skip
        states = [r.state for r in results]

        sim = np.empty(x_layer.shape[:2])
        for idx in (test, train) if s.cascade and k < N_LAYERS - 1 else (test,):
            hist = history_length(finite[idx])
            sim[idx] = _predict_ealstm(states, s, x_layer[idx], x_stat[idx], hist, mean, std)
        pred[:, :, k] = sim[test]
        if s.cascade and k < N_LAYERS - 1:
            with _quiet():
                mu, sd = float(np.nanmean(sim[train])), float(np.nanstd(sim[train]))
            x_layer = np.concatenate([x_layer, ((sim - mu) / sd).astype(x_layer.dtype)[..., None]], axis=2)
        summary[str(k + 1)] = {
            "fit_windows": len(data.fit_cells),
            "val_windows": len(data.val_cells),
            "train_loss": [r.train_loss for r in results],
            "val_loss": [r.val_loss for r in results],
            "best_epoch": [r.best_epoch for r in results],
            "target_mean": mean,
            "target_std": std,
        }
    return pred, summary


def _baseline_options(name: str, s: ExperimentSettings, fold: int) -> dict[str, Any]:
    if name == "random_forest":
        return {
            "n_estimators": s.rf_trees,
            "min_samples_leaf": s.rf_min_samples_leaf,
            "max_features": s.rf_max_features,
            "seed": s.seed + SEED_FOLD_STRIDE * fold,
            "n_jobs": s.n_jobs,
            "min_valid_fraction": s.rf_min_valid_fraction,
        }
    return {}


def _fit_baseline_fold(
    name: str, inp: Inputs, s: ExperimentSettings, train: np.ndarray, test: np.ndarray, fold: int
) -> np.ndarray:
    """Fit a baseline per layer on every observed day of the training stations; predict every day of the
    test stations: (test, days, layers)."""
    n_days = inp.targets.shape[1]
    pred = np.full((len(test), n_days, N_LAYERS), np.nan)
    for k in range(N_LAYERS):
        data = BaselineData(
            dynamic=inp.dyn_raw,
            dynamic_names=inp.dynamic_names,
            static=inp.stat_raw,
            static_names=inp.static_names,
            target=inp.targets[:, :, k],
            day_of_year=inp.table.day_of_year,
            cell_ids=inp.table.wban,
        )
        rows, days = np.nonzero(np.isfinite(inp.targets[train, :, k]))
        model = make_baseline(name, **_baseline_options(name, s, fold)).fit(data, train[rows], days)
        cells = np.repeat(test, n_days)
        pred[:, :, k] = model.predict(data, cells, np.tile(np.arange(n_days), len(test))).reshape(
            len(test), n_days
        )
    return pred


def score(pred: np.ndarray, obs: np.ndarray, mask: np.ndarray, min_pairs: int) -> dict[str, np.ndarray]:
    """Per-station r, anomaly r, ubRMSD and pair count of (stations, days) series on the days in `mask`."""
    sim = np.where(mask, pred, np.nan)
    ref = np.where(mask, obs, np.nan)
    return {
        "r": metrics.pearson_r(sim, ref, min_pairs),
        "anomaly_r": metrics.anomaly_r(sim, ref, min_pairs),
        "ubrmsd": metrics.ubrmsd(sim, ref, min_pairs),
        "n": metrics.n_pairs(sim, ref),
    }


def _median(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if len(x) else None


def _clean(x: Any) -> Any:
    """JSON-safe values: NaN/inf → None, numpy → Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    if isinstance(x, np.ndarray):
        return _clean(x.tolist())
    if isinstance(x, np.generic):
        return _clean(x.item())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def run_uscrn_experiment(
    parquet: str,
    out: str | None = None,
    settings: ExperimentSettings | None = None,
    elevation: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Run the experiment of the module docstring on a USCRN daily table; write the results JSON to `out`.

    Args:
        parquet: URL of the USCRN daily01 parquet table (one year).
        out: Where to write the results JSON (any store URL); not written when None.
        settings: Experiment settings (defaults: `ExperimentSettings()`).
        elevation: Station elevation (m) by WBAN number; used for pressure, Rso and `elev_mean`.

    Returns:
        The results (what the JSON holds): settings, inputs, stations and folds, per-layer medians per
        method (`summary`), whether the EA-LSTM beats each baseline (`ealstm_beats`), per-station scores.
    """
    s = settings or ExperimentSettings()
    t_start = time.perf_counter()
    inp = prepare_inputs(read_uscrn(parquet), s, elevation)
    n, n_days = len(inp.table.wban), len(inp.table.days)
    fold = station_folds(n, s.n_folds, s.seed)
    log.info("uscrn: %d of %d stations, %d folds, %d days", n, inp.n_candidates, s.n_folds, n_days)

    preds = {m: np.full(inp.targets.shape, np.nan) for m in s.methods}
    runtime: dict[str, float] = dict.fromkeys(s.methods, 0.0)
    training: dict[str, Any] = {}
    for f in range(s.n_folds):
        train, test = np.flatnonzero(fold != f), np.flatnonzero(fold == f)
        for m in s.methods:
            t0 = time.perf_counter()
            if m == "ealstm":
                preds[m][test], training[str(f)] = _fit_ealstm_fold(inp, s, train, test, f)
            else:
                preds[m][test] = _fit_baseline_fold(m, inp, s, train, test, f)
            runtime[m] += time.perf_counter() - t0
        log.info("uscrn: fold %d done (%d test stations)", f, len(test))

    # Scored days: observed, and the EA-LSTM has its warm-up of complete inputs (the same days for every
    # method; with predict_last_n = 1 that is a complete seq_length window). With the cascade a deeper
    # layer's warm-up also needs the upper layers' simulations: its days are those the EA-LSTM predicted.
    scorable = history_length(np.isfinite(inp.dyn_raw).all(axis=2)) > s.warm_up
    summary: dict[str, Any] = {}
    per_station: dict[str, Any] = {}
    for m in s.methods:
        summary[m], per_station[m] = {}, {}
        for k in range(N_LAYERS):
            obs = inp.targets[:, :, k].astype("float64")
            days = scorable & np.isfinite(obs)
            if "ealstm" in preds:
                days &= np.isfinite(preds["ealstm"][:, :, k])
            sc = score(preds[m][:, :, k], obs, days, s.min_pairs)
            summary[m][str(k + 1)] = {name: _median(sc[name]) for name in SCORES} | {
                "n_stations": int(np.isfinite(sc["r"]).sum()),
                "n_pairs": int(sc["n"].sum()),
            }
            per_station[m][str(k + 1)] = {name: sc[name] for name in (*SCORES, "n")}
    results = {
        "experiment": "uscrn-daily-station-holdout",
        "parquet": parquet,
        "settings": dataclasses.asdict(s),
        "inputs": {
            "dynamic": list(inp.dynamic_names),
            "static": list(inp.static_names),
            "somoml_statics_unavailable": [
                *(() if "elev_mean" in inp.static_names else ("elev_mean",)),
                *UNAVAILABLE_STATICS,
            ],
            "days": [str(inp.table.days[0]), str(inp.table.days[-1])],
        },
        "stations": {
            "candidates": inp.n_candidates,
            "selected": n,
            "wban": inp.table.wban.tolist(),
            "fold": fold.tolist(),
            "probe_cm": inp.probes.tolist(),
        },
        "layers": {str(k + 1): {"bounds_m": DEPTH_BOUNDS[k].tolist()} for k in range(N_LAYERS)},
        "summary": summary,
        "ealstm_beats": _beats(summary),
        "per_station": per_station,
        "training": training,
        "runtime_s": runtime | {"total": time.perf_counter() - t_start},
    }
    results = _clean(results)
    if out is not None:
        stores.write_text(out, json.dumps(results, indent=1) + "\n")
    return dict(results)


def _beats(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Per layer, baseline and score: whether the EA-LSTM's median is better (None if either is missing)."""
    if "ealstm" not in summary:
        return {}
    out: dict[str, Any] = {}
    for layer, ours in summary["ealstm"].items():
        out[layer] = {}
        for m, per_layer in summary.items():
            if m == "ealstm":
                continue
            theirs = per_layer[layer]
            out[layer][m] = {
                k: None
                if ours[k] is None or theirs[k] is None
                else bool(ours[k] > theirs[k] if HIGHER_IS_BETTER[k] else ours[k] < theirs[k])
                for k in SCORES
            }
    return out


def format_table(results: Mapping[str, Any]) -> str:
    """The per-layer medians as a plain-text table."""
    lines = [f"{'layer':<10} {'method':<14} {'r':>6} {'anom r':>7} {'ubRMSD':>7} {'stations':>8}"]
    for k in range(1, N_LAYERS + 1):
        a, b = DEPTH_BOUNDS[k - 1] * 100
        for m, per_layer in results["summary"].items():
            row = per_layer[str(k)]
            cells = [f"{row[n]:.3f}" if row[n] is not None else "-" for n in SCORES]
            lines.append(
                f"{f'{a:.0f}-{b:.0f} cm':<10} {m:<14} {cells[0]:>6} {cells[1]:>7} {cells[2]:>7} {row['n_stations']:>8}"
            )
    return "\n".join(lines)


def _elevation_csv(url: str) -> dict[str, float]:
    table = pd.read_csv(io.BytesIO(stores.read_bytes(url)), dtype={"wban": str})
    return dict(zip(table["wban"], table["elevation"].astype(float), strict=True))


def _flag(text: str) -> bool:
    """A boolean option's value: true/false, yes/no, on/off or 1/0."""
    value = {
        "true": True,
        "yes": True,
        "on": True,
        "1": True,
        "false": False,
        "no": False,
        "off": False,
        "0": False,
    }
    try:
        return value[text.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m somocloud.experiments.uscrn --parquet ... --out results.json [options]`."""
    defaults = ExperimentSettings()
    p = argparse.ArgumentParser(
        prog="python -m somocloud.experiments.uscrn", description=__doc__.split("\n")[0]
    )
    p.add_argument("--parquet", required=True, help="USCRN daily01 table (one year), any store URL")
    p.add_argument("--out", default=None, help="results JSON to write")
    p.add_argument("--elevation", default=None, help="CSV with columns wban, elevation (m)")
    p.add_argument(
        "--methods", default=",".join(defaults.methods), help="comma-separated subset of " + ",".join(METHODS)
    )
    p.add_argument("--drop-statics", default="", help="comma-separated statics to leave out (default none)")
    p.add_argument(
        "--learning-rate-schedule", default="", help="EPOCH:RATE,... the rate from that 1-based epoch on"
    )
    for f in dataclasses.fields(ExperimentSettings):
        if f.name in LIST_SETTINGS:
            continue
        default = getattr(defaults, f.name)
        kind: Any = type(default) if default is not None else int
        if kind is bool:
            kind = _flag
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=default, help=f"default {default}")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    values: dict[str, Any] = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(ExperimentSettings)
        if f.name not in LIST_SETTINGS
    }
    try:
        values |= {
            name: tuple(item(v) for v in getattr(args, name).split(",") if v)
            for name, item in LIST_SETTINGS.items()
        }
    except argparse.ArgumentTypeError as err:
        p.error(str(err))
    settings = ExperimentSettings(**values)
    elevation = _elevation_csv(args.elevation) if args.elevation else None
    results = run_uscrn_experiment(args.parquet, args.out, settings, elevation)
    st = results["stations"]
    print(f"USCRN {results['inputs']['days'][0]}..{results['inputs']['days'][1]}: {st['selected']} of {st['candidates']} stations, "
          f"{settings.n_folds}-fold station-grouped CV; medians over held-out stations")  # fmt: skip
    print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
