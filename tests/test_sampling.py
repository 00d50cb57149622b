"""The sampler from a source grid onto the run grid: which method `auto` picks, that reading only the
sampler's rows/columns and applying it equals regridding the whole source, and coverage errors."""

from __future__ import annotations

import numpy as np
import pytest

from somocloud import regrid
from somocloud.grid import Grid
from somocloud.sampling import sampler_for
from somocloud.stores import StoreError

GRID = Grid(1.0, 10.0, 13.0, -2.0, 2.0)  # 3 x 4 cells straddling the meridian


def lattice(
    step: float, offset: float = 0.0, lat: tuple[float, float] = (5.0, 18.0)
) -> tuple[np.ndarray, ...]:
    """Descending latitudes and 0-360 longitudes (the ERA5 layout) with spacing `step`."""
    src_lat = np.arange(lat[1] - step / 2 + offset, lat[0], -step)
    src_lon = np.mod(np.arange(0.0, 360.0, step) + step / 2 + offset, 360.0)
    return np.round(src_lat, 6), np.round(src_lon, 6)


def field(src_lat: np.ndarray, src_lon: np.ndarray, days: int = 2) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(days, src_lat.size, src_lon.size)).astype("float32")


@pytest.mark.parametrize(
    ("step", "offset", "categorical", "method"),
    [
        (1.0, 0.0, False, "index"),  # the run grid's own centres
        (1.0, 0.0, True, "index"),
        (1.0, 0.5, False, "conservative"),  # same spacing, half-cell offset (ERA5 points on SoMo.ml's grid)
        (0.25, 0.0, False, "conservative"),  # finer
        (0.25, 0.0, True, "mode"),
        (2.0, 0.0, False, "bilinear"),  # coarser
        (2.0, 0.0, True, "mode"),
    ],
)
def test_auto_picks_the_method_and_equals_regridding_the_whole_source(
    step: float, offset: float, categorical: bool, method: str
) -> None:
    src_lat, src_lon = lattice(step, offset)
    sampler = sampler_for(src_lat, src_lon, GRID, "mem://src", categorical=categorical)
    assert sampler.method == method
    values = field(src_lat, src_lon)
    if categorical:
        values = np.floor(np.abs(values) * 3)
    # what a task does: read only the sampler's rows and columns (outer indexing), then apply
    got = sampler.apply(values[:, sampler.lat][:, :, sampler.lon])
    assert got.shape == (2, *GRID.shape)
    if method == "index":
        rows = [int(np.flatnonzero(src_lat == v)[0]) for v in GRID.lat]
        cols = [int(np.flatnonzero(src_lon == np.mod(v, 360.0))[0]) for v in GRID.lon]
        np.testing.assert_array_equal(got, values[:, rows][:, :, cols])
    else:
        whole = regrid.REGRIDDERS[method](src_lat, src_lon, values, GRID, min_valid_fraction=0.5)
        np.testing.assert_allclose(got, whole, rtol=1e-6, atol=1e-7)
        # only the cells near the run grid are read, not the whole globe
        assert sampler.lat.size < src_lat.size and sampler.lon.size < src_lon.size / 10


def test_nan_source_cells_are_left_out_down_to_the_valid_fraction() -> None:
    src_lat, src_lon = lattice(0.5)
    sampler = sampler_for(src_lat, src_lon, GRID, "mem://src")
    values = np.ones((1, src_lat.size, src_lon.size))
    values[0, :, np.abs(src_lon - 359.75) < 1e-6] = 5.0
    values[0, np.abs(src_lat - 10.25) < 1e-6] = np.nan  # the southern half of the first run row is sea
    got = sampler.apply(values[:, sampler.lat][:, :, sampler.lon])[0]
    # run column 1 (lon -1..0) holds source columns 359.25 (1) and 359.75 (5): equal widths, mean 3
    np.testing.assert_allclose(got[1:], np.broadcast_to([1.0, 3.0, 1.0, 1.0], (2, 4)), rtol=1e-12)
    # the valid northern half of the first row is a little under half the cell's area (cos(lat) falls)
    assert np.isnan(got[0]).all()
    lenient = sampler_for(src_lat, src_lon, GRID, "mem://src", min_valid_fraction=0.45)
    kept = lenient.apply(values[:, lenient.lat][:, :, lenient.lon])[0]
    np.testing.assert_allclose(kept[0], [1.0, 3.0, 1.0, 1.0], rtol=1e-12)


def test_a_source_that_does_not_reach_the_run_grid_is_named() -> None:
    src_lat, src_lon = lattice(0.5, lat=(11.0, 18.0))  # misses the first run row
    with pytest.raises(StoreError, match=r"s3://b/src.zarr: coordinate 'latitude' does not reach 1 of"):
        sampler_for(src_lat, src_lon, GRID, "s3://b/src.zarr")
    with pytest.raises(StoreError, match=r"coordinate 'latitude' lacks 1 of the run grid's 3 cell centres"):
        sampler_for(*lattice(1.0, lat=(11.0, 18.0)), GRID, "s3://b/src.zarr")  # same lattice, partly outside
    with pytest.raises(StoreError, match=r"spacing 0.5 degrees, regrid method 'index' needs"):
        sampler_for(*lattice(0.5), GRID, "s3://b/src.zarr", method="index")
    with pytest.raises(StoreError, match=r"unknown regrid method 'nearest'"):
        sampler_for(*lattice(0.5), GRID, "s3://b/src.zarr", method="nearest")
