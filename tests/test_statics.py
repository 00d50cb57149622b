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


def write_raster(
    url: str, lat: np.ndarray, lon: np.ndarray, fields: dict[str, np.ndarray], **attrs: str
) -> None:
    """(latitude, longitude) float32 fields on the given axes; `attrs` are every variable's attributes."""
    ds = xr.Dataset(
        {k: (("latitude", "longitude"), np.asarray(v, "float32"), dict(attrs)) for k, v in fields.items()},
        coords={"latitude": lat, "longitude": lon},
    )
    stores.write_zarr(ds, url, mode="w")


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

    mean, std = area_block_stats(0.5)
    np.testing.assert_allclose(s.elev_mean.values, mean, rtol=1e-6)
    np.testing.assert_allclose(s.elev_std.values, std, rtol=1e-5)
    # the unweighted block statistics differ by less than 0.4 % (the rows' areas differ by cos(lat))
    i, j = np.meshgrid(np.arange(2), np.arange(3), indexing="ij")
    np.testing.assert_allclose(s.elev_mean.values, 200.0 * i + 20.0 * j + 55.0, rtol=4e-3)
    np.testing.assert_allclose(s.elev_std.values, np.sqrt(2525.0), rtol=4e-3)

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


def area_block_stats(step: float) -> tuple[np.ndarray, np.ndarray]:
    """By hand: the area-weighted mean and std of `write_dem(step)` in each run cell. Fine cells inside a
    run cell weigh sin(upper lat) − sin(lower lat) (their longitude widths are equal)."""
    k = round(1.0 / step)
    mean, std = np.zeros((2, 3)), np.zeros((2, 3))
    for i in range(2):
        edges = 40.0 + i + step * np.arange(k + 1)
        w_row = np.diff(np.sin(np.deg2rad(edges)))
        for j in range(3):
            z = 100.0 * (k * i + np.arange(k))[:, None] + 10.0 * (k * j + np.arange(k))[None, :]
            w = np.broadcast_to(w_row[:, None], z.shape)
            mean[i, j] = np.average(z, weights=w)
            std[i, j] = np.sqrt(np.average((z - mean[i, j]) ** 2, weights=w))
    return mean, std


def test_dem_finer_by_any_factor(cfg: RunConfig) -> None:
    write_dem(cfg.store("dem"), step=0.25)  # the 4 x 4 block of 100·r + 10·c
    build_statics(cfg, Context(show_progress=False))
    s = xr.open_zarr(cfg.store("statics")).load()
    mean, std = area_block_stats(0.25)
    np.testing.assert_allclose(s.elev_mean.values, mean, rtol=1e-6)
    np.testing.assert_allclose(s.elev_std.values, std, rtol=1e-5)


def test_dem_not_an_integer_fraction_is_area_weighted(cfg: RunConfig) -> None:
    """0.4-degree cells straddle run-cell edges: a linear field in longitude keeps its cell-centre value
    where the overlapping pieces are symmetric, and a constant DEM has no spread."""
    lat = np.round(np.arange(42.0 - 0.2, 39.9, -0.4), 6)
    lon = np.round(np.arange(-1.2 + 0.2, 2.2, 0.4), 6)  # -1.0 .. 2.0, straddling every run edge
    elev = np.broadcast_to(1000.0 + 0.0 * lon[None, :], (lat.size, lon.size))
    write_raster(cfg.store("dem"), lat, lon, {"elevation": elev}, units="m")
    build_statics(cfg, Context(show_progress=False))
    s = xr.open_zarr(cfg.store("statics")).load()
    np.testing.assert_allclose(s.elev_mean.values, 1000.0, rtol=1e-6)
    np.testing.assert_allclose(s.elev_std.values, 0.0, atol=0.05)


def test_dem_coarser_than_the_grid_is_rejected(cfg: RunConfig) -> None:
    lat, lon = np.arange(45.0, 36.0, -2.0), np.arange(-5.0, 6.0, 2.0)
    write_raster(cfg.store("dem"), lat, lon, {"elevation": np.ones((lat.size, lon.size))}, units="m")
    with pytest.raises(StoreError, match=r"variable 'elevation' is coarser than the run grid") as err:
        build_statics(cfg, Context(show_progress=False))
    assert cfg.store("dem") in str(err.value)
    assert not stores.exists(cfg.store("statics"))


def test_static_rasters_finer_and_coarser_than_the_grid(cfg: RunConfig) -> None:
    """Texture from a 0.5-degree raster is the area mean, vegetation from it the area mode; from a
    2-degree raster texture is bilinear and vegetation the code of the source cell covering most."""
    url = cfg.store("static_inputs")
    # fine: 0.5 degree over lat 39..43, lon -2..3 (±180 frame)
    lat = np.round(np.arange(42.75, 39.0, -0.5), 6)
    lon = np.round(np.arange(-1.75, 3.0, 0.5), 6)
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    veg = np.where(lon2d < 0.5, 3.0, 5.0)  # run cell 0..1: half its area 3 (0.25), half 5 (0.75): tie → 3
    fields = {"land_sea_mask": np.ones_like(lat2d), "clay": lon2d, "sand": 0.0 * lat2d, "silt": 0.0 * lat2d,
              "porosity_top": 0.0 * lat2d, "porosity_mid": 0.0 * lat2d, "veg_type": veg}  # fmt: skip
    write_raster(url, lat, lon, fields)
    build_statics(cfg, Context(show_progress=False))
    s = xr.open_zarr(cfg.store("statics")).load()
    # fine cells centred -0.75, -0.25 | 0.25, 0.75 | 1.25, 1.75 lie inside run cells -1..0 | 0..1 | 1..2
    np.testing.assert_allclose(s.clay.values, np.broadcast_to([-0.5, 0.5, 1.5], (2, 3)), rtol=1e-6)
    np.testing.assert_array_equal(s.veg_type.values, np.broadcast_to([3.0, 3.0, 5.0], (2, 3)))

    # coarse: 2 degrees, centres 37, 39, ..., 45 and -4, -2, 0, 2, 4
    lat, lon = np.arange(45.0, 36.0, -2.0), np.arange(-4.0, 5.0, 2.0)
    lat2d, lon2d = np.meshgrid(lat, lon, indexing="ij")
    fields = {"land_sea_mask": np.ones_like(lat2d), "clay": lon2d + 10.0 * lat2d, "sand": 0.0 * lat2d,
              "silt": 0.0 * lat2d, "porosity_top": 0.0 * lat2d, "porosity_mid": 0.0 * lat2d,
              "veg_type": np.where(lon2d < 1.0, 1.0, 2.0) + 10.0 * (lat2d > 40.0)}  # fmt: skip
    write_raster(url, lat, lon, fields)
    build_statics(cfg, Context(show_progress=False))
    s = xr.open_zarr(cfg.store("statics")).load()
    run_lat, run_lon = np.array([40.5, 41.5]), np.array([-0.5, 0.5, 1.5])
    np.testing.assert_allclose(  # bilinear reproduces a linear field
        s.clay.values, run_lon[None, :] + 10.0 * run_lat[:, None], rtol=1e-6
    )
    # both run rows lie in the source row 40..42 (code +10); run columns -1..0 and 0..1 in the source
    # column -1..1 (code 1), run column 1..2 in the source column 1..3 (code 2)
    np.testing.assert_array_equal(s.veg_type.values, [[11.0, 11.0, 12.0], [11.0, 11.0, 12.0]])


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
