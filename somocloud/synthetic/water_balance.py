"""The truth: a daily 3-layer bucket model on the product layers (0-10, 10-30, 30-50 cm).

Per day and cell: snow accumulates below freezing and melts by degree-days; rain and melt infiltrate
up to an infiltration capacity, with saturation-excess runoff from a wetness-dependent contributing
area; water filling a layer beyond porosity spills into the next one (out of the bottom layer it runs
off); water above field capacity drains downwards at a texture-dependent rate; a weak diffusion
exchanges water between neighbouring layers; evapotranspiration (Priestley-Taylor potential ET,
reduced below a critical moisture) is drawn mostly from the upper layers and never takes a layer below
its wilting point. Every layer therefore stays within [wilting point, porosity].

The reference ("ERA5") soil moisture is derived from the truth: the product layers mapped onto the
ERA5 layers 0-7, 7-28, 28-100 cm, smoothed in time (more with depth) and biased per cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from somocloud.grid import Grid
from somocloud.layers import DEPTH_BOUNDS
from somocloud.synthetic.fields import exp_smooth, rng_for, smooth_noise
from somocloud.synthetic.statics import Statics, root_fractions
from somocloud.synthetic.weather import DailyWeather, saturation_vapour_pressure_kpa

THICKNESS_MM = (DEPTH_BOUNDS[:, 1] - DEPTH_BOUNDS[:, 0]) * 1000.0
"""Layer thickness in mm (100, 200, 200): volumetric fraction x thickness = water in mm."""
LATENT_HEAT = 2.45  # MJ kg-1
DEGREE_DAY_FACTOR = 3.0  # mm K-1 day-1 of snow melt
BASE_DRAINAGE = np.array([0.45, 0.3, 0.06])
"""Fraction per day of the water above field capacity that drains out of each layer (loam)."""
DIFFUSION = 0.08
"""Daily exchange coefficient between neighbouring layers (fraction of the moisture difference)."""
REFERENCE_SMOOTHING_DAYS = (1.0, 3.0, 12.0)
"""e-folding time of the causal smoothing of each reference layer relative to the truth."""


@dataclass(frozen=True)
class SoilParams:
    """Hydraulic parameters, (layer, lat, lon) unless noted, volumetric fractions."""

    theta_s: np.ndarray
    """Porosity (saturation)."""
    theta_fc: np.ndarray
    """Field capacity."""
    theta_wp: np.ndarray
    """Wilting point."""
    drainage: np.ndarray
    """Fraction per day of the water above field capacity leaving the layer downwards."""
    roots: np.ndarray
    """Share of transpiration demand put on each layer (sums to 1 over layers)."""
    ksat: np.ndarray
    """(lat, lon) infiltration capacity, mm day-1."""


def soil_params(statics: Statics) -> SoilParams:
    """Porosity from the statics, field capacity and wilting point from texture (pedotransfer fits)."""
    sand, clay, silt = statics.sand, statics.clay, statics.silt
    theta_s = np.stack([statics.porosity_top, statics.porosity_mid, statics.porosity_mid])
    fc = 0.12 + 0.35 * clay + 0.18 * silt - 0.04 * sand
    wp = 0.03 + 0.38 * clay + 0.02 * silt
    fc = np.minimum(np.broadcast_to(fc, theta_s.shape), theta_s - 0.06)
    wp = np.minimum(np.broadcast_to(wp, theta_s.shape), fc - 0.05)
    drainage = BASE_DRAINAGE[:, None, None] * (0.5 + sand)[None]
    ksat = 40.0 + 400.0 * sand * (1.0 - clay)
    return SoilParams(theta_s, fc, wp, np.minimum(drainage, 0.9), root_fractions(statics.veg_type), ksat)


def potential_et(weather: DailyWeather) -> np.ndarray:
    """(day, lat, lon) Priestley-Taylor potential evapotranspiration, mm day-1 (>= 0)."""
    rn = (weather.snsr + weather.sntr) / 1e6  # MJ m-2 day-1
    es = saturation_vapour_pressure_kpa(weather.t2m)
    tc = weather.t2m - 273.15
    delta = 4098.0 * es / (tc + 237.3) ** 2
    gamma = 0.000665 * weather.sp / 1000.0
    return np.asarray(np.maximum(1.26 * delta / (delta + gamma) * rn / LATENT_HEAT, 0.0))


def run_bucket(params: SoilParams, precip_mm: np.ndarray, t2m: np.ndarray, pet: np.ndarray) -> np.ndarray:
    """Integrate the bucket model day by day from field capacity.

    Args:
        params: Soil parameters on the grid.
        precip_mm: (day, lat, lon) precipitation, mm day-1.
        t2m: (day, lat, lon) daily mean air temperature, K.
        pet: (day, lat, lon) potential evapotranspiration, mm day-1.

    Returns:
        (day, layer, lat, lon) volumetric soil moisture at the end of each day, m3 m-3.
    """
    n_days = precip_mm.shape[0]
    shape = precip_mm.shape[1:]
    ncell = int(np.prod(shape))
    dz = THICKNESS_MM[:, None]
    cap = params.theta_s.reshape(3, ncell) * dz
    fc = params.theta_fc.reshape(3, ncell) * dz
    wp = params.theta_wp.reshape(3, ncell) * dz
    crit = wp + 0.7 * (fc - wp)  # ET is unstressed above this
    rel_span = cap[0] - wp[0]
    drain = params.drainage.reshape(3, ncell)
    roots = params.roots.reshape(3, ncell)
    ksat = params.ksat.reshape(ncell)
    p_all = precip_mm.reshape(n_days, ncell)
    t_all = t2m.reshape(n_days, ncell)
    e_all = pet.reshape(n_days, ncell)

    water = fc.copy()  # mm per layer
    swe = np.zeros(ncell)
    out = np.empty((n_days, 3, ncell))
    for t in range(n_days):
        p, temp = p_all[t], t_all[t]
        # Snow: solid below ~0 °C, melts by degree-days.
        snow_share = np.clip((274.15 - temp) / 2.0, 0.0, 1.0)
        swe += p * snow_share
        melt = np.minimum(swe, DEGREE_DAY_FACTOR * np.maximum(temp - 273.15, 0.0))
        swe -= melt
        liquid = p * (1.0 - snow_share) + melt
        # Infiltration: the saturated share of the cell runs off, the rest up to the capacity.
        rel = np.clip((water[0] - wp[0]) / rel_span, 0.0, 1.0)
        infiltration = np.minimum(liquid * (1.0 - 0.5 * rel**4), ksat)
        water[0] += infiltration
        for k in range(2):  # saturation excess spills downwards; beyond the bottom it runs off
            spill = np.maximum(water[k] - cap[k], 0.0)
            water[k] -= spill
            water[k + 1] += spill
        water[2] = np.minimum(water[2], cap[2])
        # Gravity drainage above field capacity, limited by the room below.
        for k in range(3):
            d = drain[k] * np.maximum(water[k] - fc[k], 0.0)
            if k < 2:
                d = np.minimum(d, cap[k + 1] - water[k + 1])
                water[k + 1] += d
            water[k] -= d
        # Diffusion between neighbours (capillary exchange), bounded to keep both in range.
        for k in range(2):
            theta_a, theta_b = water[k] / dz[k], water[k + 1] / dz[k + 1]
            flux = DIFFUSION * (theta_a - theta_b) * min(THICKNESS_MM[k], THICKNESS_MM[k + 1]) / 2.0
            up_room = np.maximum(np.minimum(water[k + 1] - wp[k + 1], cap[k] - water[k]), 0.0)
            down_room = np.maximum(np.minimum(water[k] - wp[k], cap[k + 1] - water[k + 1]), 0.0)
            flux = np.clip(flux, -up_room, down_room)
            water[k] -= flux
            water[k + 1] += flux
        # Evapotranspiration: root-weighted demand, stressed below the critical moisture; not under snow.
        demand = e_all[t] * np.where(swe > 1.0, 0.1, 1.0)
        for k in range(3):
            stress = np.clip((water[k] - wp[k]) / (crit[k] - wp[k]), 0.0, 1.0)
            et = np.minimum(demand * roots[k] * stress, np.maximum(water[k] - wp[k], 0.0))
            water[k] -= et
        out[t] = water
    theta = out / dz[None]
    return theta.reshape(n_days, 3, *shape)


def memory_days(theta: np.ndarray, land: np.ndarray, dates: np.ndarray, skip: int = 60) -> list[float]:
    """e-folding memory of each layer: the lag (days) where the autocorrelation of daily anomalies
    (after removing a two-harmonic seasonal cycle per cell) first drops below 1/e; median over land.

    Args:
        theta: (day, layer, lat, lon) soil moisture.
        land: (lat, lon) bool mask.
        dates: (day,) datetime64[D] of `theta`.
        skip: Leading days left out (the model's cold start).
    """
    x = theta[skip:][:, :, land]  # (day, layer, cell)
    n = x.shape[0]
    t = (dates[skip:] - dates[skip]).astype("float64")
    w = 2.0 * np.pi * t / 365.25
    design = np.stack([np.ones(n), np.sin(w), np.cos(w), np.sin(2 * w), np.cos(2 * w)], axis=1)
    memory = []
    for layer in range(x.shape[1]):
        y = x[:, layer, :]
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        anom = y - design @ coef
        spec = np.fft.rfft(anom, n=2 * n, axis=0)
        acf = np.fft.irfft(spec * np.conj(spec), axis=0)[:n]
        acf = acf / np.where(acf[0] > 0, acf[0], 1.0)
        lags = []
        for c in range(acf.shape[1]):
            below = np.flatnonzero(acf[:, c] < np.exp(-1.0))
            if len(below) == 0:
                lags.append(float(n))
                continue
            j = int(below[0])
            a, b = acf[j - 1, c], acf[j, c]
            lags.append(j - 1 + (a - np.exp(-1.0)) / (a - b))  # linear interpolation of the crossing
        memory.append(round(float(np.median(lags)), 1))
    return memory


def skin_temperature(
    weather: DailyWeather, theta_top: np.ndarray, params: SoilParams
) -> tuple[np.ndarray, np.ndarray]:
    """Daily skin temperature and its diurnal half-range: warmer than the air on sunny days, more so
    over dry soil (less evaporative cooling)."""
    rel = np.clip((theta_top - params.theta_wp[0]) / (params.theta_s[0] - params.theta_wp[0]), 0.0, 1.0)
    skt = weather.t2m - 0.8 + 0.12 * weather.snsr / 1e6 * (1.2 - rel)
    amp = weather.t_amp * (1.4 + 0.6 * (1.0 - rel))
    return np.asarray(skt), np.asarray(amp)


def reference_layers(theta: np.ndarray, grid: Grid, seed: int) -> np.ndarray:
    """(3, day, lat, lon) reference soil moisture on the ERA5 layers, derived from the truth.

    Layer 1 (0-7 cm) follows truth layer 1; layer 2 (7-28 cm) mixes layers 1 and 2 by overlap;
    layer 3 (28-100 cm) mixes layers 2 and 3; each is smoothed in time (`REFERENCE_SMOOTHING_DAYS`)
    and gets a per-cell multiplicative and additive bias, so rescaling in-situ data to it matters.
    """
    rng = rng_for(seed, "reference")
    l1, l2, l3 = theta[:, 0], theta[:, 1], theta[:, 2]
    mixed = [l1, (3.0 * l1 + 18.0 * l2) / 21.0, (2.0 * l2 + 20.0 * l3) / 22.0]
    sigma = float(np.clip(0.2 * min(grid.shape), 1.0, 4.0))
    out = np.empty((3, *l1.shape))
    for k, series in enumerate(mixed):
        smooth = exp_smooth(series, REFERENCE_SMOOTHING_DAYS[k])
        scale = 1.0 + 0.12 * smooth_noise(rng, grid.shape, sigma) + 0.03 * rng.standard_normal(grid.shape)
        offset = 0.04 + 0.02 * smooth_noise(rng, grid.shape, sigma) + 0.005 * rng.standard_normal(grid.shape)
        out[k] = np.clip(scale * smooth + offset, 0.02, 0.75)
    return out
