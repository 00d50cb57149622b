"""Daily weather of the synthetic world and its expansion to ERA5-style hourly fields.

Daily fields carry all randomness: smooth climate gradients (wetter east, warmer south, cooler
uphill), a seasonal cycle, spatially coherent rain events from a thresholded AR(1) noise field, cloud
tied to the same field, top-of-atmosphere radiation from latitude/day of year. Hourly fields are a
deterministic function of the daily ones: instantaneous variables add zero-mean diurnal cycles (so the
mean of stamps D 00..23 is the daily value) and accumulations split the daily total over the 24 hours
of the day with weights summing to one (so stamps D 01:00..D+1 00:00 sum to it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from somocloud.grid import Grid
from somocloud.synthetic.fields import ar1, rng_for, smooth_noise
from somocloud.synthetic.statics import Statics, albedo

SOLAR_CONSTANT = 1361.0  # W m-2
STEFAN_BOLTZMANN_MJ = 4.903e-9  # MJ K-4 m-2 day-1 (FAO-56)
CLEAR_SKY_TRANSMISSIVITY = 0.76


@dataclass(frozen=True)
class DailyWeather:
    """Daily forcing on the run grid, axes (day, lat, lon); accumulations are day totals."""

    dates: np.ndarray
    """(day,) datetime64[D]."""
    lat: np.ndarray
    """(lat,) cell-centre latitudes, ascending."""
    lon: np.ndarray
    """(lon,) cell-centre longitudes, ascending."""
    t2m: np.ndarray
    """2 m temperature, K, daily mean."""
    t_amp: np.ndarray
    """Half the diurnal temperature range, K."""
    d2m: np.ndarray
    """2 m dewpoint, K, daily mean."""
    sp: np.ndarray
    """Surface pressure, Pa, daily mean."""
    tp: np.ndarray
    """Total precipitation, m per day."""
    rain_centre: np.ndarray
    """UTC hour around which the day's rain falls."""
    rain_width: np.ndarray
    """Spread of the day's rain in hours."""
    cloud: np.ndarray
    """Cloud fraction 0-1."""
    transmissivity: np.ndarray
    """Share of top-of-atmosphere radiation reaching the ground."""
    albedo: np.ndarray
    """(lat, lon) surface albedo."""
    ssrd: np.ndarray
    """Surface solar radiation downwards, J m-2 per day."""
    snsr: np.ndarray
    """Surface net solar radiation, J m-2 per day."""
    sntr: np.ndarray
    """Surface net thermal radiation, J m-2 per day (negative: the surface loses energy)."""


def day_of_year(dates: np.ndarray) -> np.ndarray:
    """1-based day of year of datetime64[D] dates."""
    years = dates.astype("datetime64[Y]")
    return np.asarray((dates - years).astype("int64") + 1)


def toa_radiation(doy: np.ndarray, hour_mid: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Top-of-atmosphere solar energy of one hour, J m-2, at the hour's mid-point (sun position).

    Args:
        doy: (n,) day of year of each hour.
        hour_mid: (n,) UTC hour of the hour's mid-point (e.g. 12.5 for 12:00-13:00).
        lat: (lat,) latitudes in degrees.
        lon: (lon,) longitudes in degrees.

    Returns:
        (n, lat, lon) float64, zero when the sun is below the horizon.
    """
    angle = 2.0 * np.pi * doy / 365.0
    decl = (0.409 * np.sin(angle - 1.39))[:, None, None]
    dr = (1.0 + 0.033 * np.cos(angle))[:, None, None]
    phi = np.deg2rad(lat)[None, :, None]
    solar_hour = hour_mid[:, None, None] + lon[None, None, :] / 15.0
    omega = np.pi / 12.0 * (solar_hour - 12.0)
    cosz = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(omega)
    return np.asarray(SOLAR_CONSTANT * 3600.0 * dr * np.maximum(cosz, 0.0))


def daily_toa(dates: np.ndarray, lat: np.ndarray, lon: np.ndarray, block: int = 64) -> np.ndarray:
    """(day, lat, lon) sum of the 24 hourly TOA values of each UTC day, J m-2 (the hourly split sums to it)."""
    doy = day_of_year(dates)
    out = np.empty((len(dates), len(lat), len(lon)))
    hours = np.arange(24) + 0.5
    for a in range(0, len(dates), block):
        d = doy[a : a + block]
        hourly = toa_radiation(np.repeat(d, 24), np.tile(hours, len(d)), lat, lon)
        out[a : a + block] = hourly.reshape(len(d), 24, len(lat), len(lon)).sum(axis=1)
    return out


def _season(doy: np.ndarray, lat: np.ndarray, peak_doy: float) -> np.ndarray:
    """(day, lat, 1) seasonal cycle +1 at `peak_doy` in the northern hemisphere (flipped south)."""
    hemisphere = np.where(lat >= 0, 1.0, -1.0)[None, :, None]
    return np.asarray(np.cos(2.0 * np.pi * (doy - peak_doy) / 365.25)[:, None, None] * hemisphere)


def _regional_plus_local(
    rng: np.random.Generator, n: int, shape: tuple[int, int], sigma: float, rho_reg: float, rho_loc: float
) -> np.ndarray:
    """(n, lat, lon) unit-variance anomalies: a domain-wide AR(1) series plus smooth local AR(1) noise."""
    regional = ar1(rng.standard_normal(n), rho_reg)[:, None, None]
    local = ar1(smooth_noise(rng, (n, *shape), sigma), rho_loc)
    return np.asarray(np.sqrt(0.5) * regional + np.sqrt(0.5) * local)


def saturation_vapour_pressure_kpa(t_kelvin: np.ndarray) -> np.ndarray:
    """Saturation vapour pressure over water, kPa (Tetens, as FAO-56)."""
    tc = t_kelvin - 273.15
    return np.asarray(0.6108 * np.exp(17.27 * tc / (tc + 237.3)))


def make_daily_weather(grid: Grid, statics: Statics, dates: np.ndarray, seed: int) -> DailyWeather:
    """Draw the daily weather of `dates` (datetime64[D]) on `grid` over `statics` from `seed`."""
    rng = rng_for(seed, "weather")
    n = len(dates)
    shape = grid.shape
    lat, lon = grid.lat, grid.lon
    lat2 = lat[:, None] * np.ones(shape)
    elev = np.maximum(statics.elevation, 0.0)
    wet = statics.wetness
    doy = day_of_year(dates).astype("float64")
    sigma = float(np.clip(0.15 * min(shape), 0.8, 3.0))

    # Rain: a thresholded, spatially coherent AR(1) field; wetter east and in early summer.
    u = _regional_plus_local(rng, n, shape, sigma, rho_reg=0.5, rho_loc=0.35)
    season_p = _season(doy, lat, 170.0)
    p_clim = (0.9 + 2.4 * wet) * (1.0 + 0.35 * season_p)  # mm/day
    p_wet = np.clip(0.18 + 0.22 * wet + 0.05 * season_p, 0.05, 0.6)
    q = ndtri(1.0 - p_wet)
    mean_excess = np.exp(-0.5 * q**2) / np.sqrt(2.0 * np.pi) / p_wet - q  # E[u - q | u > q]
    intensity = rng.lognormal(-0.125, 0.5, size=(n, *shape))  # mean 1
    rain_mm = np.where(u > q, p_clim / p_wet * (u - q) / mean_excess * intensity, 0.0)
    rain_mm = np.where(rain_mm >= 0.1, rain_mm, 0.0)
    cloud = ndtr(1.1 * (u - q) + 0.4 + 0.4 * (wet - 0.5))

    # Temperature: warmer south and lower, seasonal cycle, persistent anomalies, cooler when cloudy.
    t_annual = 300.5 - 0.0075 * lat2**2 - 0.0065 * elev
    amplitude = 2.0 + 0.3 * np.abs(lat2)
    t_anom = _regional_plus_local(rng, n, shape, sigma, rho_reg=0.8, rho_loc=0.7)
    t2m = t_annual - amplitude * _season(doy, lat, 20.0) + 2.6 * t_anom - 3.0 * (cloud - 0.5)
    t_amp = 1.5 + 4.0 * (1.0 - cloud) + 1.5 * (1.0 - wet)

    # Dewpoint depression: drier west and on clear days; large enough that hourly Td stays below T.
    dpd = 2.0 + 9.0 * (1.0 - wet) * (0.55 + 0.45 * (1.0 - cloud)) + 0.8 * rng.standard_normal((n, *shape))
    d2m = t2m - np.maximum(dpd, 1.3 * t_amp + 0.5)

    # Surface pressure from elevation, lower on rainy days.
    p_anom = _regional_plus_local(rng, n, shape, sigma, rho_reg=0.7, rho_loc=0.5)
    sp = 101325.0 * np.exp(-elev / 8400.0) * (1.0 + 0.005 * (0.8 * p_anom - 0.6 * u))

    # Radiation: TOA x cloud-dependent transmissivity; FAO-56 net long-wave.
    tau = (CLEAR_SKY_TRANSMISSIVITY + 2e-5 * elev) * (1.0 - 0.7 * cloud)
    ssrd = daily_toa(dates, lat, lon) * tau
    alb = albedo(statics.veg_type)
    snsr = ssrd * (1.0 - alb)
    ea = saturation_vapour_pressure_kpa(d2m)
    rs_rso = np.clip(1.0 - 0.7 * cloud, 0.3, 1.0)
    rnl = STEFAN_BOLTZMANN_MJ * t2m**4 * (0.34 - 0.14 * np.sqrt(ea)) * (1.35 * rs_rso - 0.35)
    sntr = -1e6 * rnl

    # Timing of rain within the day: afternoon convection in local solar time, regionally coherent.
    local_centre = 15.0 + 3.0 * rng.standard_normal(n)[:, None, None] + 2.0 * rng.standard_normal((n, *shape))
    centre = np.mod(local_centre - lon[None, None, :] / 15.0, 24.0)
    width = rng.uniform(1.0, 7.0, size=(n, *shape))

    return DailyWeather(
        dates=dates, lat=lat, lon=lon, t2m=t2m, t_amp=t_amp, d2m=d2m, sp=sp, tp=rain_mm / 1000.0,
        rain_centre=centre, rain_width=width, cloud=cloud, transmissivity=tau, albedo=alb,
        ssrd=ssrd, snsr=snsr, sntr=sntr,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- hourly


@dataclass(frozen=True)
class HourlyDrivers:
    """Everything the hourly expansion needs: the weather plus fields known after the water balance."""

    weather: DailyWeather
    skt: np.ndarray
    """(day, lat, lon) skin temperature, K, daily mean."""
    skt_amp: np.ndarray
    """(day, lat, lon) half the diurnal skin-temperature range, K."""
    swvl: np.ndarray
    """(3, day, lat, lon) reference soil moisture of ERA5 layers 1-3, m3 m-3, daily mean."""


def _diurnal(hour: np.ndarray, lon: np.ndarray, peak_local: float, harmonic: int = 1) -> np.ndarray:
    """(n, 1, lon) cosine of the local solar hour peaking at `peak_local`; sums to 0 over a day's 24 hours."""
    local = hour[:, None, None] + lon[None, None, :] / 15.0
    return np.asarray(np.cos(2.0 * np.pi * harmonic * (local - peak_local) / 24.0))


def _circular_hours(a: np.ndarray) -> np.ndarray:
    """Signed distance in hours on a 24-h circle."""
    return np.asarray(np.mod(a + 12.0, 24.0) - 12.0)


def _rain_weights(w: DailyWeather, days: np.ndarray) -> np.ndarray:
    """(day*24, lat, lon) share of each day's rain falling in each of its 24 hour-intervals (sums to 1)."""
    hours = np.arange(24.0) + 0.5
    c, s = w.rain_centre[days][:, None], w.rain_width[days][:, None]
    shape_ = np.exp(-0.5 * (_circular_hours(hours[None, :, None, None] - c) / s) ** 2)
    shape_ = np.where(shape_ >= 0.02, shape_, 0.0)  # it rains in some hours, not a drizzle in all
    shares = shape_ / shape_.sum(axis=1, keepdims=True)
    return np.asarray(shares.reshape(-1, *shares.shape[2:]))


KEEP_BITS: dict[str, int] = {
    "2m_temperature": 12, "2m_dewpoint_temperature": 12, "surface_pressure": 12, "skin_temperature": 12,
    "total_precipitation": 10, "surface_solar_radiation_downwards": 10, "surface_net_solar_radiation": 10,
    "surface_net_thermal_radiation": 9, "volumetric_soil_water_layer_1": 11,
    "volumetric_soil_water_layer_2": 11, "volumetric_soil_water_layer_3": 11,
}  # fmt: skip
"""float32 mantissa bits kept per hourly variable (like GRIB packing; zeroed bits compress away)."""


def round_mantissa(x: np.ndarray, keepbits: int) -> np.ndarray:
    """float32 values rounded to `keepbits` mantissa bits (round half away from zero)."""
    bits = np.ascontiguousarray(x, dtype="float32").view("uint32")
    drop = 23 - keepbits
    if drop <= 0:
        return bits.view("float32").copy()
    half = np.uint32(1 << (drop - 1))
    mask = np.uint32((0xFFFFFFFF >> drop) << drop)
    return np.asarray(((bits + half) & mask).view("float32"))


def _pack_days(values: np.ndarray, target: np.ndarray, keepbits: int) -> np.ndarray:
    """Quantise (day, 24, lat, lon) hourly values, then let each day's largest hour absorb the rounding
    so that the day's float32 values still sum to `target` (day, lat, lon) up to float32 precision."""
    q = round_mantissa(values, keepbits)
    k = np.argmax(np.abs(values), axis=1)[:, None]
    picked = np.take_along_axis(q, k, axis=1).astype("float64")
    rest = q.astype("float64").sum(axis=1, keepdims=True) - picked
    np.put_along_axis(q, k, (target[:, None] - rest).astype("float32"), axis=1)
    return q


def _instantaneous(drv: HourlyDrivers, days: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(day*24, lat, lon) values at stamps D 00..23 of `days` and their daily means (day, lat, lon)."""
    w = drv.weather
    day = np.repeat(days, 24)
    hour = np.tile(np.arange(24.0), len(days))
    t_cycle = _diurnal(hour, w.lon, 15.0)
    out = {
        "2m_temperature": (w.t2m[day] + w.t_amp[day] * t_cycle, w.t2m[days]),
        "2m_dewpoint_temperature": (w.d2m[day] + 0.3 * w.t_amp[day] * t_cycle, w.d2m[days]),
        "surface_pressure": (w.sp[day] + 80.0 * _diurnal(hour, w.lon, 10.0, harmonic=2), w.sp[days]),
        "skin_temperature": (drv.skt[day] + drv.skt_amp[day] * _diurnal(hour, w.lon, 13.0), drv.skt[days]),
    }
    # Soil water: the daily value plus a zero-mean within-day ramp towards the neighbouring days.
    nxt = np.minimum(day + 1, len(w.dates) - 1)
    prv = np.maximum(day - 1, 0)
    ramp = ((hour - 11.5) / 24.0)[:, None, None]
    for layer in range(3):
        sw = drv.swvl[layer]
        out[f"volumetric_soil_water_layer_{layer + 1}"] = (
            sw[day] + ramp * 0.5 * (sw[nxt] - sw[prv]),
            sw[days],
        )
    return out


def _accumulated(drv: HourlyDrivers, days: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(day*24, lat, lon) totals of the hours (D h, D h+1] of `days` and their daily sums (day, lat, lon)."""
    w = drv.weather
    day = np.repeat(days, 24)
    hour = np.tile(np.arange(24.0), len(days))
    toa = toa_radiation(day_of_year(w.dates[day]).astype("float64"), hour + 0.5, w.lat, w.lon)
    ssrd = toa * w.transmissivity[day]
    lw_share = (1.0 + 0.4 * _diurnal(hour + 0.5, w.lon, 14.0)) / 24.0  # the surface loses most when warm
    return {
        "total_precipitation": (w.tp[day] * _rain_weights(w, days), w.tp[days]),
        "surface_solar_radiation_downwards": (ssrd, w.ssrd[days]),
        "surface_net_solar_radiation": (ssrd * (1.0 - w.albedo), w.snsr[days]),
        "surface_net_thermal_radiation": (w.sntr[day] * lw_share, w.sntr[days]),
    }


def hourly_block(drv: HourlyDrivers, start: int, stop: int, final: bool) -> dict[str, np.ndarray]:
    """Hourly ERA5 variables for the stamps of days [start, stop) (indices into the daily axis).

    Stamps are D 00:00 .. D 23:00 of each day; with `final` one more stamp, (stop) 00:00, is added.
    Instantaneous variables at stamp D hh use day D; an accumulation at stamp S covers the hour
    (S - 1 h, S], i.e. hour 23 of the previous day for S = D 00:00, so day `start - 1` must exist.
    Values are quantised (`KEEP_BITS`) per day such that the day rule of the contract still gives
    the daily value up to float32 precision.

    Returns:
        name → (stamp, lat, lon) float32 arrays in run-grid order, named as in ERA5.
    """
    if start < 1 or stop <= start or stop + (1 if final else 0) > len(drv.weather.dates):
        raise ValueError(f"hourly_block: days [{start}, {stop}) final={final} outside the daily axis")
    n_stamps = (stop - start) * 24 + (1 if final else 0)
    nlat, nlon = drv.skt.shape[1:]
    out: dict[str, np.ndarray] = {}
    inst_days = np.arange(start, stop + (1 if final else 0))
    for name, (values, mean) in _instantaneous(drv, inst_days).items():
        packed = _pack_days(values.reshape(-1, 24, nlat, nlon), 24.0 * mean, KEEP_BITS[name])
        out[name] = packed.reshape(-1, nlat, nlon)[:n_stamps]
    # stamp D 00:00 closes hour 23 of day D-1: start one day early and drop its first 23 hours
    acc_days = np.arange(start - 1, stop)
    for name, (values, total) in _accumulated(drv, acc_days).items():
        packed = _pack_days(values.reshape(-1, 24, nlat, nlon), total, KEEP_BITS[name])
        out[name] = packed.reshape(-1, nlat, nlon)[23 : 23 + n_stamps]
    return out


ERA5_VARIABLES: dict[str, tuple[str, str]] = {
    "2m_temperature": ("K", "2 metre temperature"),
    "2m_dewpoint_temperature": ("K", "2 metre dewpoint temperature"),
    "surface_pressure": ("Pa", "Surface pressure"),
    "skin_temperature": ("K", "Skin temperature"),
    "total_precipitation": ("m", "Total precipitation (accumulated over the hour ending at the stamp)"),
    "surface_solar_radiation_downwards": (
        "J m-2",
        "Surface solar radiation downwards (hour ending at stamp)",
    ),
    "surface_net_solar_radiation": ("J m-2", "Surface net solar radiation (hour ending at stamp)"),
    "surface_net_thermal_radiation": ("J m-2", "Surface net thermal radiation (hour ending at stamp)"),
    "volumetric_soil_water_layer_1": ("m3 m-3", "Volumetric soil water layer 1 (0-7 cm)"),
    "volumetric_soil_water_layer_2": ("m3 m-3", "Volumetric soil water layer 2 (7-28 cm)"),
    "volumetric_soil_water_layer_3": ("m3 m-3", "Volumetric soil water layer 3 (28-100 cm)"),
}
"""ERA5 (ARCO) variable name → (units, long_name)."""
