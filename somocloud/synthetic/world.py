"""The synthetic world: generate it in memory, write it in the raw-input layouts of the data contract.

`generate_world(cfg)` draws statics, daily weather (with a spin-up before `lookback_start`), runs the
water balance (the truth) and places the stations; `build_world(cfg, ctx)` writes `forcing_source` (hourly ERA5),
`static_inputs`, `dem`, `truth` and `ismn` through `somocloud.stores`, so any store URL works.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from somocloud import provenance, stores
from somocloud.config import RunConfig
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.layers import DEPTH_BOUNDS, DEPTHS
from somocloud.synthetic import ismn
from somocloud.synthetic.statics import Statics, make_statics
from somocloud.synthetic.water_balance import (
    SoilParams,
    memory_days,
    potential_et,
    reference_layers,
    run_bucket,
    skin_temperature,
    soil_params,
)
from somocloud.synthetic.weather import (
    ERA5_VARIABLES,
    DailyWeather,
    HourlyDrivers,
    hourly_block,
    make_daily_weather,
)

log = logging.getLogger(__name__)

STEP = "synthetic"
HOURLY_CELLS_PER_BLOCK = 4_000_000
"""Bound on hourly values (stamps x cells) per variable held in memory while writing."""
MAX_DAILY_VALUES = 100_000_000
"""Largest world (days x cells) built in memory: each daily field is one float64 array."""


@dataclass(frozen=True)
class World:
    """The whole synthetic world in memory; daily axes span spin-up .. `period.end` + 1 day."""

    grid: Grid
    dates: np.ndarray
    """(day,) datetime64[D] of the daily axis (spin-up days first, one day after `period.end` last)."""
    first: int
    """Index of `lookback_start` on the daily axis."""
    n_days: int
    """Days `lookback_start` .. `period.end` (the truth's and the hourly store's days)."""
    statics: Statics
    weather: DailyWeather
    soil: SoilParams
    theta: np.ndarray
    """(day, layer, lat, lon) water-balance soil moisture everywhere (sea included)."""
    drivers: HourlyDrivers
    memory_days: list[float]
    """e-folding memory of each layer, days."""
    stations: list[ismn.Station]

    @property
    def days(self) -> np.ndarray:
        """(n_days,) the output days as datetime64[D]."""
        return self.dates[self.first : self.first + self.n_days]

    @property
    def truth(self) -> np.ndarray:
        """(n_days, layer, lat, lon) true soil moisture, NaN over sea."""
        sm = self.theta[self.first : self.first + self.n_days]
        return np.where(self.statics.land[None, None], sm, np.nan)

    def daily_value(self, name: str) -> np.ndarray:
        """(n_days, lat, lon) the intended daily value of an ERA5 variable (run-grid order), in the
        units of the hourly store: daily mean for instantaneous variables, daily sum for accumulations."""
        w, d = self.weather, self.drivers
        table: dict[str, np.ndarray] = {
            "2m_temperature": w.t2m, "2m_dewpoint_temperature": w.d2m, "surface_pressure": w.sp,
            "skin_temperature": d.skt, "total_precipitation": w.tp, "surface_solar_radiation_downwards": w.ssrd,
            "surface_net_solar_radiation": w.snsr, "surface_net_thermal_radiation": w.sntr,
            "volumetric_soil_water_layer_1": d.swvl[0], "volumetric_soil_water_layer_2": d.swvl[1],
            "volumetric_soil_water_layer_3": d.swvl[2],
        }  # fmt: skip
        return np.asarray(table[name][self.first : self.first + self.n_days])


def _daily_axis(cfg: RunConfig) -> tuple[np.ndarray, int, int]:
    """Dates from spin-up start to `period.end + 1`, the index of `lookback_start`, the output day count."""
    spin = cfg.synthetic.spinup_days
    start = np.datetime64(cfg.lookback_start, "D")
    end = np.datetime64(cfg.period.end, "D")
    dates = np.arange(start - spin, end + 2, dtype="datetime64[D]")
    return dates, spin, int((end - start).astype(int)) + 1


def generate_world(cfg: RunConfig) -> World:
    """Draw the whole world of `cfg` (deterministic in `cfg.synthetic.seed`) in memory."""
    scfg = cfg.synthetic
    grid = Grid.from_config(cfg.grid)
    dates, first, n_days = _daily_axis(cfg)
    size = len(dates) * grid.nlat * grid.nlon
    if size > MAX_DAILY_VALUES:
        raise ValueError(
            f"synthetic world: {len(dates)} days (spin-up included) x {grid.nlat}x{grid.nlon} cells = {size:.2e} "
            f"daily values per field exceeds {MAX_DAILY_VALUES:.0e}; the synthetic world is for demo-sized "
            "grids and periods (shrink grid.* / period.* or synthetic.spinup_days)"
        )
    statics = make_statics(grid, scfg)
    weather = make_daily_weather(grid, statics, dates, scfg.seed)
    soil = soil_params(statics)
    theta = run_bucket(soil, weather.tp * 1000.0, weather.t2m, potential_et(weather))
    skt, skt_amp = skin_temperature(weather, theta[:, 0], soil)
    drivers = HourlyDrivers(weather, skt, skt_amp, reference_layers(theta, grid, scfg.seed))
    memory = memory_days(theta, statics.land, dates)
    obs_first = int((np.datetime64(cfg.period.start, "D") - dates[first]).astype(int))
    stations = ismn.make_stations(grid, statics, scfg, obs_first, n_days - 1)
    return World(grid, dates, first, n_days, statics, weather, soil, theta, drivers, memory, stations)


# ----------------------------------------------------------------------------------------- layouts


def era5_lon_order(lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes mapped to [0, 360) and the column order that makes them ascending."""
    lon360 = np.round(np.mod(lon, 360.0), 6)
    order = np.argsort(lon360, kind="stable")
    return lon360[order], order


def to_era5(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(..., lat asc, lon) → (..., lat desc, lon 0-360 asc)."""
    return np.asarray(values[..., ::-1, :][..., order])


def _era5_coords(lat: np.ndarray, lon: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    lon360, order = era5_lon_order(lon)
    coords = {
        "latitude": ("latitude", lat[::-1].copy(), {"units": "degrees_north", "long_name": "latitude"}),
        "longitude": ("longitude", lon360, {"units": "degrees_east", "long_name": "longitude"}),
    }
    return coords, order


def _compressor() -> list[Any]:
    from zarr.codecs import BloscCodec

    # byte shuffle lets zstd see the slowly varying exponent bytes of smooth float fields
    return [BloscCodec(cname="zstd", clevel=1, shuffle="shuffle")]


# ----------------------------------------------------------------------------------------- writers


def write_era5_hourly(world: World, url: str, attrs: dict[str, Any]) -> None:
    """Hourly store: a template with every variable's metadata first, then day-block region writes."""
    import dask.array as da
    import zarr

    grid = world.grid
    n_stamps = world.n_days * 24 + 1
    start = world.days[0].astype("datetime64[ns]")
    stamps = start + np.arange(n_stamps) * np.timedelta64(3600, "s").astype("timedelta64[ns]")
    coords, order = _era5_coords(grid.lat, grid.lon)
    coords["time"] = ("time", stamps, {"long_name": "time"})
    chunks = (24, grid.nlat, grid.nlon)
    # Chunks of 24 hours as the contract says, stored in shards of `block` days: one object per
    # variable and block keeps the object count (and small-file overhead) low.
    block = max(1, min(64, HOURLY_CELLS_PER_BLOCK // (24 * grid.nlat * grid.nlon)))
    shards = (24 * block, grid.nlat, grid.nlon)
    data_vars = {
        name: (
            ("time", "latitude", "longitude"),
            da.zeros((n_stamps, grid.nlat, grid.nlon), chunks=shards, dtype="float32"),
            {"units": units, "long_name": long_name},
        )
        for name, (units, long_name) in ERA5_VARIABLES.items()
    }
    template = xr.Dataset(data_vars, coords=coords, attrs=attrs)
    encoding = {
        name: {"chunks": chunks, "shards": shards, "compressors": _compressor()} for name in ERA5_VARIABLES
    }
    stores.remove(url)  # deleting a large old store object by object through zarr is slow
    stores.write_zarr(template, url, compute=False, encoding=encoding)

    group = zarr.open_group(stores.zarr_store(url), mode="r+")
    for j0 in range(0, world.n_days, block):
        j1 = min(j0 + block, world.n_days)
        final = j1 == world.n_days
        hourly = hourly_block(world.drivers, world.first + j0, world.first + j1, final)
        for name, values in hourly.items():
            array = group[name]
            if not isinstance(array, zarr.Array):
                raise TypeError(f"{url}: {name} is not a Zarr array after writing the template")
            array[j0 * 24 : j1 * 24 + (1 if final else 0)] = to_era5(values, order)


def write_static_inputs(world: World, url: str, attrs: dict[str, Any]) -> None:
    """Static rasters on the ERA5 layout."""
    s = world.statics
    coords, order = _era5_coords(world.grid.lat, world.grid.lon)
    fields = {
        "land_sea_mask": (s.land_sea_mask, "1", "Land-sea mask (land fraction)"),
        "clay": (s.clay, "1", "Clay fraction"),
        "sand": (s.sand, "1", "Sand fraction"),
        "silt": (s.silt, "1", "Silt fraction"),
        "porosity_top": (s.porosity_top, "1", "Porosity of the top soil (0-10 cm)"),
        "porosity_mid": (s.porosity_mid, "1", "Porosity of the sub soil (10-50 cm)"),
        "veg_type": (s.veg_type, "1", "Dominant vegetation type (IGBP code 1-17)"),
    }
    data_vars = {
        name: (("latitude", "longitude"), to_era5(v, order).astype("float32"), {"units": u, "long_name": ln})
        for name, (v, u, ln) in fields.items()
    }
    stores.write_zarr(xr.Dataset(data_vars, coords=coords, attrs=attrs), url)


def write_dem(world: World, url: str, attrs: dict[str, Any]) -> None:
    """The fine DEM (`dem_factor` x finer than the run grid, covering exactly it) on the ERA5 layout."""
    g = world.grid
    f = world.statics.dem_factor
    res = g.resolution / f
    lat = np.round(g.lat_min + res * (np.arange(g.nlat * f) + 0.5), 6)
    lon = np.round(g.lon_min + res * (np.arange(g.nlon * f) + 0.5), 6)
    coords, order = _era5_coords(lat, lon)
    elev = to_era5(world.statics.elevation_fine, order).astype("float32")
    ds = xr.Dataset(
        {
            "elevation": (
                ("latitude", "longitude"),
                elev,
                {"units": "m", "long_name": "Elevation above sea level"},
            )
        },
        coords=coords,
        attrs=attrs | {"resolution": res},
    )
    stores.write_zarr(ds, url)


def write_truth(world: World, url: str, attrs: dict[str, Any]) -> None:
    """True daily soil moisture on the run grid, (time, depth, lat, lon), NaN over sea."""
    g = world.grid
    coords: dict[str, Any] = dict(g.coords())
    coords["time"] = ("time", world.days.astype("datetime64[ns]"), {"long_name": "time"})
    coords["depth"] = (
        "depth",
        DEPTHS.copy(),
        {"units": "m", "positive": "down", "long_name": "layer mid-depth",
         "layer_bounds": json.dumps(DEPTH_BOUNDS.tolist())},
    )  # fmt: skip
    sm = world.truth.astype("float32")
    ds = xr.Dataset(
        {"soil_moisture": (("time", "depth", "lat", "lon"), sm,
                           {"units": "m3 m-3", "long_name": "true volumetric soil moisture (water-balance model)",
                            "standard_name": "volume_fraction_of_condensed_water_in_soil"})},
        coords=coords,
        attrs=attrs | {"memory_days": json.dumps(world.memory_days)},
    )  # fmt: skip
    chunks = (min(world.n_days, 366), len(DEPTHS), g.nlat, g.nlon)
    stores.write_zarr(ds, url, encoding={"soil_moisture": {"chunks": chunks}})


def write_ismn(world: World, cfg: RunConfig, url: str) -> int:
    """The station files under `url` (replacing what was there); returns the number of files."""
    stores.remove(url)
    day0 = dt.date.fromisoformat(str(world.days[0]))
    truth = world.truth
    n = 0
    for index, station in enumerate(world.stations):
        cell = truth[:, :, station.row, station.col]
        for path, text in ismn.station_files(station, cell, day0, cfg.synthetic, index).items():
            stores.write_text(stores.join(url, *path.split("/")), text)
            n += 1
    return n


def build_world(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """Build the synthetic world of `cfg` and write its raw inputs (CLI verb `synthetic`).

    Args:
        cfg: The run config (grid, period, `model.seq_length`, `synthetic` section, store URLs).
        ctx: Run-time context (unused: the world is small and built in this process).

    Returns:
        The written URLs keyed by store name: forcing_source, static_inputs, dem, truth, ismn.
    """
    del ctx
    t0 = time.perf_counter()
    world = generate_world(cfg)
    log.info(
        "synthetic world generated in %.1f s (memory days %s)", time.perf_counter() - t0, world.memory_days
    )
    attrs = provenance.provenance_attrs(cfg, STEP, {})
    urls = {name: cfg.store(name) for name in ("forcing_source", "static_inputs", "dem", "truth", "ismn")}
    write_static_inputs(world, urls["static_inputs"], attrs)
    write_dem(world, urls["dem"], attrs)
    write_truth(world, urls["truth"], attrs)
    write_era5_hourly(world, urls["forcing_source"], attrs)
    n_files = write_ismn(world, cfg, urls["ismn"])
    if cfg.synthetic.coarse_factor is not None:
        from somocloud.synthetic.satellite import write_satellite

        urls["coarse_targets"] = write_satellite(
            world.truth, world.days, world.statics.land, world.grid, cfg, cfg.store("coarse_targets"), attrs
        )
    log.info(
        "synthetic world written in %.1f s: %d days, %d stations, %d ISMN files",
        time.perf_counter() - t0, world.n_days, len(world.stations), n_files,
    )  # fmt: skip
    return urls
