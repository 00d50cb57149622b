"""Regridding operators: hand-computed conservative means near the pole, conservation, NaN masks, axis
orders and longitude frames, bilinear exactness and dateline wrap, categorical mode with area ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import xarray as xr

from somocloud.grid import Grid
from somocloud.regrid import (
    REGRIDDERS,
    RegridError,
    bilinear,
    conservative,
    conservative_weights,
    mode,
    regrid,
)

# One 2-degree target cell next to the pole, lat 88..90, lon 10..12; the source is 1 degree.
POLE = Grid(2.0, 88.0, 90.0, 10.0, 12.0)
POLE_LAT = np.array([88.5, 89.5])
POLE_LON = np.array([10.5, 11.5])
# Relative areas of the two source rows: sin(89) - sin(88) and sin(90) - sin(89).
A_SOUTH = math.sin(math.radians(89)) - math.sin(math.radians(88))
A_NORTH = 1.0 - math.sin(math.radians(89))


def areas(lat: np.ndarray, step: float) -> np.ndarray:
    """Relative areas (Δsin(lat) · Δlon in degrees) of cells of a regular grid centred at `lat`."""
    lo = np.clip(lat - step / 2, -90, 90)
    hi = np.clip(lat + step / 2, -90, 90)
    return (np.sin(np.deg2rad(hi)) - np.sin(np.deg2rad(lo))) * step


def grid_areas(grid: Grid) -> np.ndarray:
    return np.repeat(areas(grid.lat, grid.resolution)[:, None], grid.nlon, axis=1)


def test_two_by_two_near_the_pole_by_hand() -> None:
    values = np.array([[1.0, 2.0], [3.0, 4.0]])  # rows: lat 88.5, 89.5
    out = conservative(POLE_LAT, POLE_LON, values, POLE)
    expected = (A_SOUTH * 1.5 + A_NORTH * 3.5) / (A_SOUTH + A_NORTH)
    assert out.shape == (1, 1)
    assert out[0, 0] == pytest.approx(expected, rel=1e-12)
    # By hand: areas 4.568681e-4 and 1.523048e-4 (the southern row is 75% of the cell) → 2.0000381.
    assert out[0, 0] == pytest.approx(2.0000381, abs=1e-7)


def test_weights_are_separable_overlaps() -> None:
    w_lat, w_lon = conservative_weights(POLE_LAT[::-1], POLE_LON, POLE)
    np.testing.assert_allclose(w_lat.toarray(), [[A_NORTH, A_SOUTH]], rtol=1e-12)  # source order kept
    np.testing.assert_allclose(w_lon.toarray(), [[1.0, 1.0]])


def test_nan_cells_renormalise_and_respect_the_valid_fraction() -> None:
    one_nan = np.array([[np.nan, 2.0], [3.0, 4.0]])
    expected = (A_SOUTH / 2 * 2.0 + A_NORTH * 3.5) / (A_SOUTH / 2 + A_NORTH)
    assert conservative(POLE_LAT, POLE_LON, one_nan, POLE)[0, 0] == pytest.approx(expected, rel=1e-12)
    # The valid part is the northern row only: a quarter of the cell's area.
    south_missing = np.array([[np.nan, np.nan], [3.0, 4.0]])
    assert np.isnan(conservative(POLE_LAT, POLE_LON, south_missing, POLE)[0, 0])
    loose = conservative(POLE_LAT, POLE_LON, south_missing, POLE, min_valid_fraction=0.2)
    assert loose[0, 0] == pytest.approx(3.5)
    assert np.isnan(
        conservative(POLE_LAT, POLE_LON, np.full((2, 2), np.nan), POLE, min_valid_fraction=0)[0, 0]
    )
    # Masks may differ along leading dims.
    stack = np.stack([one_nan, south_missing, np.ones((2, 2))])
    out = conservative(POLE_LAT, POLE_LON, stack, POLE)
    assert out.shape == (3, 1, 1)
    np.testing.assert_allclose(out[:, 0, 0], [expected, np.nan, 1.0])


def test_constant_stays_constant_for_unaligned_grids() -> None:
    grid = Grid(0.25, -60.0, -50.0, 100.0, 110.0)
    lat = np.round(np.arange(-61.05, -48.9, 0.1), 6)  # source cells straddle the target edges
    lon = np.round(np.arange(99.05, 111.0, 0.1), 6)
    out = conservative(lat, lon, np.full((2, lat.size, lon.size), 7.5, dtype="float32"), grid)
    assert out.dtype == np.float32
    assert out.shape == (2, 40, 40)
    np.testing.assert_allclose(out, 7.5, rtol=1e-6)


def test_area_integral_is_conserved_globally() -> None:
    grid = Grid(2.5, -90.0, 90.0, -180.0, 180.0)
    lat = np.arange(-89.75, 90.0, 0.5)
    lon = np.arange(0.25, 360.0, 0.5)  # 0-360 source onto a -180..180 grid
    values = np.random.default_rng(1).normal(size=(lat.size, lon.size))
    out = conservative(lat, lon, values, grid)
    source_integral = (values * areas(lat, 0.5)[:, None]).sum()
    target_integral = (out * grid_areas(grid)).sum()
    assert target_integral == pytest.approx(source_integral, rel=1e-10, abs=1e-10)


def test_global_tenth_degree_to_quarter_degree() -> None:
    grid = Grid(0.25, -90.0, 90.0, -180.0, 180.0)
    lat = np.round(np.arange(89.95, -90.0, -0.1), 6)  # descending, ERA5-like
    lon = np.round(np.arange(0.05, 360.0, 0.1), 6)
    # Half-degree latitude bands (their edges are edges of both grids) keep their value exactly; a random
    # longitude pattern on top is split between target cells, but the global integral is conserved.
    band = np.floor(lat / 0.5)
    rng = np.random.default_rng(3)
    values = band[:, None] + rng.random((1, lon.size))
    out = conservative(lat, lon, values, grid)
    assert out.shape == (720, 1440)
    target_band = np.floor(grid.lat / 0.5)
    np.testing.assert_allclose(out.mean(axis=1) - target_band, values[0, :].mean() - band[0], atol=1e-9)
    source_integral = (values * areas(lat, 0.1)[:, None]).sum()
    assert (out * grid_areas(grid)).sum() == pytest.approx(source_integral, rel=1e-12)
    constant = conservative(lat, lon, np.broadcast_to(band[:, None], values.shape), grid)
    np.testing.assert_array_equal(np.round(constant, 9), np.broadcast_to(target_band[:, None], out.shape))


@pytest.mark.parametrize("op", [conservative, bilinear, mode])
def test_descending_lat_and_0_360_lon_give_the_same_result(op) -> None:
    grid = (
        Grid(1.0, -30.0, 30.0, -180.0, 180.0) if op is not bilinear else Grid(0.5, -30.0, 30.0, -180.0, 180.0)
    )
    lat = np.arange(-44.75, 45.0, 0.5) if op is not bilinear else np.arange(-44.0, 45.0, 2.0)
    step = lat[1] - lat[0]
    lon_east = np.arange(-180.0 + step / 2, 180.0, step)  # -180..180 ascending
    rng = np.random.default_rng(2)
    values = rng.integers(0, 5, size=(lat.size, lon_east.size)).astype("float64")
    values[rng.random(values.shape) < 0.1] = np.nan
    reference = op(lat, lon_east, values, grid, min_valid_fraction=0.3)
    # The same field with latitudes descending and longitudes 0-360 (columns rolled).
    lon_360 = np.mod(lon_east, 360.0)
    order = np.argsort(lon_360)
    flipped = op(lat[::-1], lon_360[order], values[::-1][:, order], grid, min_valid_fraction=0.3)
    np.testing.assert_allclose(flipped, reference, rtol=1e-12, equal_nan=True)
    assert np.isfinite(reference).mean() > 0.5


def test_conservative_across_the_dateline_and_a_duplicated_meridian() -> None:
    grid = Grid(1.0, 0.0, 2.0, 178.0, 182.0)  # a regional grid across the dateline
    lon = np.arange(-180.0, 180.01, 0.5)  # both -180 and 180 present: one meridian, used once
    lat = np.arange(-0.5, 3.0, 0.5)
    values = np.broadcast_to(np.mod(lon, 360.0), (lat.size, lon.size))  # cell value = its 0-360 longitude
    out = conservative(lat, lon, values, grid)
    # Cells centred on the meridian (±0.25 around 180) average to 180 in the 0-360 sense.
    np.testing.assert_allclose(out[0], [178.5, 179.5, 180.5, 181.5 - 360 + 360], atol=1e-12)


def test_bilinear_reproduces_a_linear_function() -> None:
    grid = Grid(0.25, 10.0, 14.0, 20.0, 24.0)
    lat = np.arange(16.0, 7.0, -2.0)  # descending, coarser
    lon = np.arange(18.0, 27.0, 2.0)
    values = 3.0 * lat[:, None] - 0.5 * lon[None, :] + 1.0
    out = bilinear(lat, lon, np.stack([values, 2 * values]), grid)
    exact = 3.0 * grid.lat[:, None] - 0.5 * grid.lon[None, :] + 1.0
    np.testing.assert_allclose(out[0], exact, rtol=1e-12)
    np.testing.assert_allclose(out[1], 2 * exact, rtol=1e-12)


def test_bilinear_wraps_at_the_dateline_and_the_meridian() -> None:
    lat = np.array([0.0, 2.0])
    lon = np.arange(-179.0, 180.0, 2.0)  # global 2-degree, no column at ±180
    col = np.arange(lon.size, dtype="float64")
    values = np.broadcast_to(col, (2, lon.size))
    # Between 179 (last column, 179) and -179 (first column, 0) at 179.25 ... 180.75.
    out = bilinear(lat, lon, values, Grid(0.5, 0.0, 1.0, 179.0, 181.0))
    t = np.array([179.25, 179.75, 180.25, 180.75])
    np.testing.assert_allclose(out[0], 179 + (t - 179) / 2 * (0 - 179), rtol=1e-12)
    # The same source in 0-360 onto a grid around lon 0: between 359 (col 179 of -1) and 1.
    lon360 = np.mod(lon, 360.0)
    order = np.argsort(lon360)
    out0 = bilinear(lat, lon360[order], values[:, order], Grid(0.5, 0.0, 1.0, -1.0, 1.0))
    u = np.array([-0.75, -0.25, 0.25, 0.75])
    left, right = 89.0, 90.0  # the columns at -1 (359) and 1
    np.testing.assert_allclose(out0[0], left + (u + 1) / 2 * (right - left), rtol=1e-12)


def test_bilinear_nan_and_extent() -> None:
    lat = np.array([0.0, 1.0])
    lon = np.array([0.0, 1.0])
    values = np.array([[1.0, 2.0], [3.0, np.nan]])
    grid = Grid(0.5, 0.0, 1.0, 0.0, 1.0)  # centres 0.25, 0.75
    out = bilinear(lat, lon, values, grid)
    assert np.isnan(out).all()  # every target has the NaN corner with non-zero weight
    renorm = bilinear(lat, lon, values, grid, min_valid_fraction=0.5)
    # At (0.25, 0.25) weights 9/16, 3/16, 3/16, 1/16 (NaN): (9 + 6 + 9) / 16 / (15 / 16).
    assert renorm[0, 0] == pytest.approx(24 / 15)
    assert np.isnan(renorm[1, 1])  # 9/16 of the weight is the NaN corner
    # An exact hit on a valid node ignores the NaN neighbour; beyond half a cell outside is NaN.
    hit = bilinear(lat, lon, values, Grid(1.0, -0.5, 1.5, -0.5, 0.5))  # centres lat 0, 1; lon 0
    np.testing.assert_allclose(hit[:, 0], [1.0, 3.0])
    far = bilinear(lat, lon, np.ones((2, 2)), Grid(0.5, 1.0, 2.0, 0.0, 1.0))  # lat 1.25 (edge), 1.75 (out)
    np.testing.assert_allclose(far[:, 0], [1.0, np.nan])


def test_mode_majority_ties_and_nan() -> None:
    grid = Grid(2.0, 0.0, 2.0, 0.0, 4.0)  # two target cells
    lat = np.array([0.5, 1.5])
    lon = np.array([0.5, 1.5, 2.5, 3.5])
    values = np.array([[5.0, 3.0, 7.0, 2.0], [5.0, 5.0, 2.0, np.nan]])
    out = mode(lat, lon, values, grid)
    assert out[0, 0] == 5.0  # three of four cells
    # Right: one 7 and two 2s (the NaN cell is ignored).
    assert out[0, 1] == 2.0
    ties = np.array([[9.0, 4.0, 8.0, 6.0], [4.0, 9.0, 8.0, 6.0]])  # each code one cell per row
    tied = mode(lat, lon, ties, grid)
    np.testing.assert_array_equal(tied, [[4.0, 6.0]])  # equal areas → smallest code
    assert np.isnan(mode(lat, lon, np.full((2, 4), np.nan), grid)).all()


def test_mode_uses_area_not_counts_near_the_pole() -> None:
    values = np.array([[2.0, 2.0], [1.0, 1.0]])  # two cells each, the southern row is 3 times larger
    assert mode(POLE_LAT, POLE_LON, values, POLE)[0, 0] == 2.0
    values = np.array([[1.0, 2.0], [1.0, 2.0]])  # a true tie → the smaller code
    assert mode(POLE_LAT, POLE_LON, values, POLE)[0, 0] == 1.0


def test_regrid_dataarray() -> None:
    grid = Grid(1.0, 40.0, 42.0, -1.0, 2.0)
    lat = np.arange(43.75, 38.0, -0.5)  # ERA5 layout: latitude descending, longitude 0-360
    lon = np.arange(0.25, 360.0, 0.5)
    data = np.ones((3, lat.size, lon.size), dtype="float32")
    da = xr.DataArray(
        data,
        dims=("time", "latitude", "longitude"),
        coords={"time": [1, 2, 3], "latitude": lat, "longitude": lon},
        name="t2m",
        attrs={"units": "K"},
    )
    out = regrid(da, grid, "conservative")
    assert out.dims == ("time", "lat", "lon")
    assert out.name == "t2m" and out.attrs == {"units": "K"}
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out["lat"].values, grid.lat)
    np.testing.assert_array_equal(out["lon"].values, grid.lon)
    np.testing.assert_allclose(out.values, 1.0)
    lazy = regrid(da.chunk({"time": 1}), grid, "bilinear")
    assert lazy.chunks is not None
    np.testing.assert_allclose(lazy.compute().values, 1.0)
    assert set(REGRIDDERS) == {"conservative", "bilinear", "mode"}


def test_bad_input_is_named() -> None:
    da = xr.DataArray(
        np.ones((3, 2)), dims=("lat", "lon"), coords={"lat": [0.0, 1.0, 3.0], "lon": [0.0, 1.0]}, name="veg"
    )
    with pytest.raises(RegridError, match=r"'veg'.*not a regular grid"):
        regrid(da, POLE, "mode")
    with pytest.raises(RegridError, match="unknown regrid method 'nearest'"):
        regrid(da, POLE, "nearest")
    with pytest.raises(RegridError, match="no lat / latitude dimension"):
        regrid(da.rename(lat="y"), POLE)
    with pytest.raises(RegridError, match="last two axes"):
        conservative(POLE_LAT, POLE_LON, np.ones((3, 2)), POLE)
