"""The statics build: layout change of the static rasters, DEM block statistics, climate indices, land mask.

Inputs are written here: `static_inputs` and `dem` in the ERA5 layout (latitude descending, longitude
0-360) and a small daily `forcing` cube, all with values whose statics are known by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somocloud import stores
from somocloud.config import RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.statics import build_statics
from somocloud.stores import StoreError

# Run grid: 2 x 3 cells of 1 degree, lat 40..42, lon -1..2 (ERA5 longitudes 359.5, 0.5, 1.5).
GRID = {"resolution": 1.0, "lat_min": 40.0, "lat_max": 42.0, "lon_min": -1.0, "lon_max": 2.0}
SRC_LAT = np.arange(43.5, 38.0, -1.0)  # descending, 6 rows
SRC_LON = np.arange(360) + 0.5


def make_cfg(root: Path) -> RunConfig:
    return config_from_dict({"grid": GRID, "stores": {"root": str(root)}})


def write_static_inputs(url: str, drop: str | None = None) -> None:
    lat2d, lon2d = np.meshgrid(SRC_LAT, SRC_LON, indexing="ij")
    clay = (lat2d - 38.0) / 10.0 + lon2d / 10000.0  # every cell distinct: catches flips and wraps
    mask = np.ones_like(lat2d)
    mask[SRC_LAT == 40.5, SRC_LON == 359.5] = 0.5  # exactly 0.5 is land
    mask[SRC_LAT == 40.5, SRC_LON == 0.5] = 0.49  # sea
    mask[SRC_LAT == 41.5, SRC_LON == 1.5] = np.nan  # missing counts as sea
    veg = np.full_like(lat2d, 7.0)
    veg[SRC_LAT == 40.5, SRC_LON == 0.5] = np.nan
    fields = {
        "land_sea_mask": mask, "clay": clay, "sand": 1.0 - clay - 0.2, "silt": np.full_like(lat2d, 0.2),
        "porosity_top": np.full_like(lat2d, 0.45), "porosity_mid": np.full_like(lat2d, 0.40), "veg_type": veg,
    }  # fmt: skip
    ds = xr.Dataset(
        {k: (("latitude", "longitude"), v.astype("float32")) for k, v in fields.items() if k != drop},
        coords={"latitude": SRC_LAT, "longitude": SRC_LON},
    )
    stores.write_zarr(ds, url)


def write_dem(url: str, step: float = 0.5) -> None:
    """DEM at `step` degrees over exactly the run grid, latitude descending, longitude 0-360.

    Fine cell (row r, column c) counted in run order (lat ascending, lon from -1) has elevation 100·r + 10·c,
    so the 2 x 2 block under run cell (i, j) holds base + {0, 10, 100, 110} with base = 200·i + 20·j:
    mean base + 55, std sqrt((55² + 45² + 45² + 55²)/4) = sqrt(2525)."""
    lat_asc = np.round(np.arange(40.0 + step / 2, 42.0, step), 6)
    lon_run = np.round(np.arange(-1.0 + step / 2, 2.0, step), 6)
    elev = 100.0 * np.arange(lat_asc.size)[:, None] + 10.0 * np.arange(lon_run.size)[None, :]
    lon360 = np.mod(lon_run, 360.0)
    order = np.argsort(lon360)  # ERA5 layout: longitude ascending in 0-360
    ds = xr.Dataset(
        {"elevation": (("latitude", "longitude"), elev[::-1][:, order].astype("float32"), {"units": "m"})},
        coords={"latitude": lat_asc[::-1], "longitude": lon360[order]},
    )
    stores.write_zarr(ds, url)


def write_forcing(url: str, lat: np.ndarray | None = None) -> None:
    """Four days; tp and snr per run cell (i, j) chosen so p_mean and aridity are round numbers."""
    grid = Grid.from_config(make_cfg(Path(".")).grid)
    tp = np.zeros((4, 2, 3))
    snr = np.zeros((4, 2, 3))
    tp[:, 0, 0] = [1.0, 2.0, 3.0, np.nan]  # mean 2 (the NaN day is left out) → 730.5 mm/yr
    snr[:, 0, 0] = 4.9  # 4.9 / 2.45 = 2 mm/day → aridity 1
    tp[:, 0, 1] = 4.0  # → 1461 mm/yr
    snr[:, 0, 1] = -2.45  # -1 mm/day → aridity -0.25
    tp[:, 1, 2] = 0.0  # no rain: aridity NaN
    snr[:, 1, 2] = 10.0
    tp[:, 1, :2] = 1.0
    snr[:, 1, :2] = 2.45
    coords = {"time": pd.date_range("2020-01-01", periods=4).values, "lat": grid.lat, "lon": grid.lon}
    if lat is not None:
        coords["lat"] = lat
    ds = xr.Dataset(
        {
            "tp": (("time", "lat", "lon"), tp.astype("float32"), {"units": "mm day-1"}),
            "snr": (("time", "lat", "lon"), snr.astype("float32"), {"units": "MJ m-2 day-1"}),
        },
        coords=coords,
    )
    stores.write_zarr(ds, url)


@pytest.fixture
def cfg(tmp_path: Path) -> RunConfig:
    cfg = make_cfg(tmp_path)
    write_static_inputs(cfg.store("static_inputs"))
    write_dem(cfg.store("dem"))
    write_forcing(cfg.store("forcing"))
    return cfg


def test_statics_values_and_layout(cfg: RunConfig) -> None:
    urls = build_statics(cfg, Context(show_progress=False))
    assert urls == {"statics": cfg.store("statics")}
    s = xr.open_zarr(urls["statics"]).load()
    np.testing.assert_array_equal(s.lat.values, [40.5, 41.5])
    np.testing.assert_array_equal(s.lon.values, [-0.5, 0.5, 1.5])
    for name in ("elev_mean", "elev_std", "p_mean", "aridity", "clay", "sand", "silt", "porosity_top",
                 "porosity_mid", "veg_type"):  # fmt: skip
        assert s[name].dims == ("lat", "lon") and s[name].dtype == np.float32, name
    assert s.land_mask.dtype == bool

    i, j = np.meshgrid(np.arange(2), np.arange(3), indexing="ij")
    np.testing.assert_allclose(s.elev_mean.values, 200.0 * i + 20.0 * j + 55.0, rtol=1e-6)
    np.testing.assert_allclose(s.elev_std.values, np.sqrt(2525.0), rtol=1e-6)

    lon360 = np.array([359.5, 0.5, 1.5])
    expected_clay = (s.lat.values[:, None] - 38.0) / 10.0 + lon360[None, :] / 10000.0
    np.testing.assert_allclose(s.clay.values, expected_clay, rtol=1e-6)
    np.testing.assert_allclose(s.silt.values, 0.2, rtol=1e-6)
    np.testing.assert_allclose(s.porosity_top.values, 0.45, rtol=1e-6)
    assert np.isnan(s.veg_type.values[0, 1]) and s.veg_type.values[1, 1] == 7.0

    np.testing.assert_array_equal(s.land_mask.values, [[True, False, True], [True, True, False]])

    np.testing.assert_allclose(s.p_mean.values[0], [730.5, 1461.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(s.p_mean.values[1], [365.25, 365.25, 0.0], rtol=1e-6)
    np.testing.assert_allclose(s.aridity.values[0, :2], [1.0, -0.25], rtol=1e-6)
    np.testing.assert_allclose(s.aridity.values[1, :2], [1.0, 1.0], rtol=1e-6)
    assert np.isnan(s.aridity.values[0, 2]) and np.isnan(s.aridity.values[1, 2])  # tp == 0

    attrs = stores.zarr_attrs(urls["statics"])
    assert attrs["somocloud_step"] == "statics"
    assert set(json.loads(attrs["somocloud_inputs"])) == {"static_inputs", "dem", "forcing"}


def test_dem_not_an_integer_fraction_is_rejected(cfg: RunConfig) -> None:
    write_dem(cfg.store("dem"), step=0.4)
    with pytest.raises(StoreError, match=r"coordinate 'latitude' has resolution 0.4 degrees, not an integer"):
        build_statics(cfg, Context(show_progress=False))
    assert not stores.exists(cfg.store("statics"))


def test_dem_with_a_finer_integer_factor(cfg: RunConfig) -> None:
    write_dem(cfg.store("dem"), step=0.25)  # factor 4: the 4 x 4 block of 100·r + 10·c
    build_statics(cfg, Context(show_progress=False))
    s = xr.open_zarr(cfg.store("statics")).load()
    offsets = 100.0 * np.arange(4)[:, None] + 10.0 * np.arange(4)[None, :]
    i, j = np.meshgrid(np.arange(2), np.arange(3), indexing="ij")
    np.testing.assert_allclose(s.elev_mean.values, 400.0 * i + 40.0 * j + offsets.mean(), rtol=1e-6)
    np.testing.assert_allclose(s.elev_std.values, offsets.std(), rtol=1e-6)


def test_missing_static_variable_names_store_and_variable(cfg: RunConfig) -> None:
    write_static_inputs(cfg.store("static_inputs"), drop="porosity_mid")
    with pytest.raises(StoreError, match=r"variable 'porosity_mid' is missing") as err:
        build_statics(cfg, Context(show_progress=False))
    assert cfg.store("static_inputs") in str(err.value)


def test_forcing_on_another_grid_is_rejected(cfg: RunConfig) -> None:
    write_forcing(cfg.store("forcing"), lat=np.array([40.25, 41.25]))
    with pytest.raises(StoreError, match=r"coordinate 'lat' does not match the run grid") as err:
        build_statics(cfg, Context(show_progress=False))
    assert cfg.store("forcing") in str(err.value)
