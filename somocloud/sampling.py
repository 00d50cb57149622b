"""From a source grid to the run grid: which source cells to read and how to turn them into run cells.

A `GridSampler` is made once per source (before any work, so a source that cannot cover the run grid
fails early) and shipped to the tasks: they read `sampler.lat` x `sampler.lon` of the source (outer
indexing, so only the touched chunks are read) and call `sampler.apply` on what they read.

Methods (`sampler_for(..., method="auto")` picks one):

- `index`: the source holds every run-grid cell centre at the run grid's resolution; cells are picked.
- `conservative`: area-weighted mean (`somocloud.regrid.conservative`), for a source as fine as or finer
  than the run grid whose cells do not line up with it (ERA5-Land 0.1°, ERA5's 0.25° points on the
  SoMo.ml grid's half-cell-offset centres, a 1 km raster).
- `bilinear`: `somocloud.regrid.bilinear`, for a coarser source.
- `mode`: the category covering most of the cell (`somocloud.regrid.mode`), for categorical fields
  from any source that does not line up (for a coarser source this is the source cell covering most of
  the run cell).

`auto` takes `index` when it can, else `mode` for categorical fields, else `conservative` when the source
spacing is at most the run grid's resolution, else `bilinear`. NaN source cells (e.g. ERA5-Land over the
sea) are left out and the weights renormalised; a run cell whose valid share (of area, or of
interpolation weight) is below `min_valid_fraction` (default 0.5) is NaN.

Regridding is linear, so the forcing build aggregates hours to days on the source cells first and
regrids the daily values (24 times less work, the same numbers up to rounding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import scipy.sparse as sp

from somocloud import regrid
from somocloud.grid import Grid
from somocloud.stores import StoreError

Method = Literal["auto", "index", "conservative", "bilinear", "mode"]
METHODS: tuple[str, ...] = ("auto", "index", "conservative", "bilinear", "mode")
DEFAULT_MIN_VALID_FRACTION = 0.5
_DECIMALS = 6  # coordinates are compared after rounding, so 0.1-degree grids match exactly
_SPACING_TOL = 2e-6


@dataclass(frozen=True)
class GridSampler:
    """How to make run-grid values from a source: read rows `lat` and columns `lon` of the source (its own
    positions), then `apply`. Small and picklable."""

    method: str
    lat: np.ndarray = field(repr=False)
    """Source rows to read. For `index`: the source row of run row i; otherwise ascending positions."""
    lon: np.ndarray = field(repr=False)
    """Source columns to read (as `lat`)."""
    grid: Grid
    weights: tuple[sp.csr_matrix, sp.csr_matrix] | None = field(default=None, repr=False)
    """Latitude and longitude weights whose columns are the rows/columns read (None for `index`)."""
    min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION

    def select(self, da: Any, **other: Any) -> np.ndarray:
        """`da`'s values at the rows and columns to read (dims `latitude`, `longitude`), in `da`'s dtype;
        `other` indexes further dims (e.g. `time=slice(a, b)`). Contiguous rows/columns are read as slices
        (zarr's fast path) and flipped when the source runs the other way."""
        lat, flip_lat = _indexer(self.lat)
        lon, flip_lon = _indexer(self.lon)
        values = np.asarray(da.isel(latitude=lat, longitude=lon, **other).values)
        axes = list(da.dims)
        if flip_lat:
            values = np.flip(values, axis=axes.index("latitude"))
        if flip_lon:
            values = np.flip(values, axis=axes.index("longitude"))
        return values

    @property
    def cells_read(self) -> int:
        """Source cells read per map."""
        return int(self.lat.size * self.lon.size)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Run-grid values `(..., nlat, nlon)` from the read source cells `(..., lat.size, lon.size)`."""
        if values.shape[-2:] != (self.lat.size, self.lon.size):
            raise ValueError(f"expected (..., {self.lat.size}, {self.lon.size}) values, got {values.shape}")
        if self.weights is None:
            return values
        w_lat, w_lon = self.weights
        if self.method == "conservative":
            return regrid.apply_conservative(w_lat, w_lon, values, self.grid, self.min_valid_fraction)
        if self.method == "bilinear":
            return regrid.apply_bilinear(w_lat, w_lon, values, self.min_valid_fraction)
        out = regrid.apply_mode(w_lat, w_lon, values, self.grid, self.min_valid_fraction)
        return out.astype(values.dtype) if values.dtype.kind == "f" else out


def sampler_for(
    src_lat: np.ndarray,
    src_lon: np.ndarray,
    grid: Grid,
    url: str,
    *,
    method: str = "auto",
    categorical: bool = False,
    min_valid_fraction: float = DEFAULT_MIN_VALID_FRACTION,
) -> GridSampler:
    """The sampler from a source with 1-D cell-centre coordinates `src_lat`, `src_lon` (any order, 0-360
    or ±180 longitudes) onto `grid`; `StoreError` naming `url` when the source cannot cover the grid."""
    if method not in METHODS:
        raise StoreError(f"{url}: unknown regrid method {method!r}; use one of {list(METHODS)}")
    lat = np.round(np.asarray(src_lat, dtype="float64"), _DECIMALS)
    lon = np.round(np.asarray(src_lon, dtype="float64"), _DECIMALS)
    if method in ("auto", "index"):
        exact = _exact_index(lat, lon, grid, url, required=method == "index")
        if exact is not None:
            return GridSampler("index", exact[0], exact[1], grid)
        spacing = min(_spacing(lat), _spacing(lon))
        if categorical:
            method = "mode"
        else:
            method = "conservative" if spacing <= grid.resolution * (1 + 1e-3) else "bilinear"
    try:
        make = regrid.bilinear_weights if method == "bilinear" else regrid.conservative_weights
        w_lat, w_lon = make(lat, lon, grid)
    except regrid.RegridError as err:
        raise StoreError(f"{url}: {err}") from err
    _check_coverage(w_lat, "latitude", grid.lat, url)
    _check_coverage(w_lon, "longitude", grid.lon, url)
    rows, cols = _used(w_lat), _used(w_lon)
    weights = (w_lat[:, rows].tocsr(), w_lon[:, cols].tocsr())
    return GridSampler(method, rows, cols, grid, weights, min_valid_fraction)


def _indexer(index: np.ndarray) -> tuple[slice | np.ndarray, bool]:
    """A slice (and whether to flip what it reads) for a run of consecutive positions, else `index`."""
    if index.size > 1:
        step = np.diff(index)
        if (step == 1).all():
            return slice(int(index[0]), int(index[-1]) + 1), False
        if (step == -1).all():
            return slice(int(index[-1]), int(index[0]) + 1), True
    return index, False


def _spacing(values: np.ndarray) -> float:
    steps = np.abs(np.diff(values))
    positive = steps[steps > 0]
    return float(positive.min()) if positive.size else 0.0


def _exact_index(
    lat: np.ndarray, lon: np.ndarray, grid: Grid, url: str, required: bool
) -> tuple[np.ndarray, np.ndarray] | None:
    """Positions of the run grid's centres in the source when it holds them all at the run resolution."""
    out = []
    for name, have, wanted in (("latitude", lat, grid.lat), ("longitude", lon, grid.lon)):
        spacing = _spacing(have) if have.size > 1 else grid.resolution
        if abs(spacing - grid.resolution) > _SPACING_TOL:
            if required:
                raise StoreError(
                    f"{url}: coordinate {name!r} has spacing {round(spacing, _DECIMALS)} degrees, "
                    f"regrid method 'index' needs the run grid's {grid.resolution}"
                )
            return None
        target = np.asarray(wanted, dtype="float64")
        if name == "longitude" and have.size and have.max() > 180.0:
            target = np.mod(target, 360.0)  # the source uses 0-360 longitudes
        target = np.round(target, _DECIMALS)
        position = {float(v): i for i, v in enumerate(have)}
        index = np.array([position.get(float(v), -1) for v in target], dtype="int64")
        missing = target[index < 0]
        if missing.size:
            if required or missing.size < target.size:
                # same lattice, partly outside: regridding would only fill the gap with NaN
                raise StoreError(
                    f"{url}: coordinate {name!r} lacks {missing.size} of the run grid's {target.size} "
                    f"cell centres (first: {missing[0]})"
                )
            return None
        out.append(index)
    return out[0], out[1]


def _check_coverage(weights: sp.csr_matrix, name: str, centres: np.ndarray, url: str) -> None:
    empty = np.flatnonzero(np.diff(weights.indptr) == 0)
    if empty.size:
        raise StoreError(
            f"{url}: coordinate {name!r} does not reach {empty.size} of the run grid's {centres.size} "
            f"cell centres (first: {centres[empty[0]]})"
        )


def _used(weights: sp.csr_matrix) -> np.ndarray:
    """Source positions carrying a nonzero weight, ascending."""
    data: Any = weights.indices[weights.data != 0]
    return np.unique(data).astype("int64")
