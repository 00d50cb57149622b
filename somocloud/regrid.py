"""Regridding of regular latitude/longitude fields onto the run grid.

Three operators, each built from two sparse 1-D weight matrices (one for latitude, one for longitude):
on a regular grid every 2-D weight factorises, `W[(i, j), (k, l)] = Wlat[i, k] * Wlon[j, l]`, so a field
`V` of shape `(..., nlat_src, nlon_src)` maps to `Wlat @ V @ Wlon.T` without ever forming the 2-D matrix.

- `conservative`: area-weighted mean of a finer source (exact overlap areas on the sphere);
- `bilinear`: separable linear interpolation of a coarser source, wrapping at the dateline;
- `mode`: most frequent category by area, for categorical fields from a finer source.

Common conventions:

- Sources are regular grids given by 1-D cell-centre coordinates. Latitudes may be ascending or descending;
  longitudes may be in [0, 360) or [-180, 180) (or any frame) and a duplicated meridian (both -180 and 180)
  is used once. Cell edges lie halfway between centres; latitude edges are clipped to +-90.
- `values` has shape `(..., nlat_src, nlon_src)`; leading dimensions (time, ...) broadcast.
- NaN marks missing source cells. Each operator reports a *valid fraction* per target cell and returns NaN
  where it is below `min_valid_fraction` (see each function); otherwise missing source cells are left out
  and the weights of the valid ones renormalised.
- Results are float64, or float32 when `values` is float32 (the arithmetic is always float64).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import xarray as xr

from somocloud.grid import Grid

_REL_TOL = 1e-3
"""Relative tolerance (of the cell size) for coordinates sitting on a regular lattice."""
_FRACTION_SLACK = 1e-9
"""Floating-point slack when comparing a valid fraction with its threshold."""


class RegridError(ValueError):
    """A source grid or field that cannot be regridded (not regular, wrong shape, unknown method)."""


@dataclass(frozen=True)
class _Axis:
    """A source axis as regular cells: sorted centres, their positions in the source and the spacing."""

    centres: np.ndarray = field(repr=False)
    index: np.ndarray = field(repr=False)
    step: float

    @property
    def lower(self) -> np.ndarray:
        return self.centres - self.step / 2

    @property
    def upper(self) -> np.ndarray:
        return self.centres + self.step / 2


def _regular_axis(coord: np.ndarray, name: str) -> _Axis:
    """Sort `coord`, drop duplicates and snap the centres onto one regular lattice.

    Gaps (whole missing cells) are allowed, so a regional 0-360 source straddling the target frame's seam
    still qualifies; spacings that are not multiples of the cell size are not."""
    values = np.asarray(coord, dtype="float64")
    if values.ndim != 1 or values.size < 2:
        raise RegridError(
            f"source coordinate {name!r} must be 1-D with at least 2 values, got {values.shape}"
        )
    if not np.isfinite(values).all():
        raise RegridError(f"source coordinate {name!r} holds NaN or infinite values")
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    steps = np.diff(ordered)
    positive = steps[steps > 0]
    if positive.size == 0:
        raise RegridError(f"source coordinate {name!r} has a single distinct value")
    step0 = float(np.median(positive))
    keep = np.concatenate([[True], steps > _REL_TOL * step0])  # a repeated centre (e.g. -180 and 180) once
    order, ordered = order[keep], ordered[keep]
    k = np.round((ordered - ordered[0]) / step0)
    step = float((ordered[-1] - ordered[0]) / k[-1])
    off = np.abs(ordered - (ordered[0] + k * step))
    if (off > _REL_TOL * step).any():
        bad = float(ordered[int(np.argmax(off))])
        raise RegridError(
            f"source coordinate {name!r} is not a regular grid (spacing {step:g}; value {bad:g})"
        )
    return _Axis(centres=ordered[0] + k * step, index=order, step=step)


def _lat_axis(src_lat: np.ndarray) -> _Axis:
    axis = _regular_axis(src_lat, "lat")
    if axis.centres[0] < -90 - _REL_TOL * axis.step or axis.centres[-1] > 90 + _REL_TOL * axis.step:
        raise RegridError("source coordinate 'lat' lies outside [-90, 90]")
    return axis


def _lon_axis(src_lon: np.ndarray, lon_min: float) -> _Axis:
    """Longitudes moved into the frame [lon_min, lon_min + 360) of the target grid, then regularised."""
    raw = np.asarray(src_lon, dtype="float64")
    offset = np.round(np.mod(raw - lon_min, 360.0), 6)  # rounding: 359.9999999 must become 0, not stay
    axis = _regular_axis(np.where(offset >= 360.0, 0.0, offset) + lon_min, "lon")
    if axis.upper[-1] - axis.lower[0] > 360.0 + _REL_TOL * axis.step:
        raise RegridError(f"source coordinate 'lon' spans more than 360 degrees at spacing {axis.step:g}")
    return axis


def _periodic(axis: _Axis) -> _Axis:
    """Three copies of a longitude axis (-360, 0, +360) so that overlaps across the seam are found."""
    centres = np.concatenate([axis.centres - 360.0, axis.centres, axis.centres + 360.0])
    return _Axis(centres=centres, index=np.tile(axis.index, 3), step=axis.step)


def _target_edges(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    lat = grid.lat_min + grid.resolution * np.arange(grid.nlat + 1, dtype="float64")
    lon = grid.lon_min + grid.resolution * np.arange(grid.nlon + 1, dtype="float64")
    return np.clip(lat, -90.0, 90.0), lon


def _sin(deg: np.ndarray) -> np.ndarray:
    return np.sin(np.deg2rad(deg))


def _overlap_matrix(
    edges: np.ndarray, axis: _Axis, n_src: int, measure: Callable[[np.ndarray], np.ndarray], clip: bool
) -> sp.csr_matrix:
    """Sparse (n_target, n_src) matrix of overlap measures between target cells and source cells.

    `measure` maps an edge coordinate to the cumulative measure (degrees for longitude, sin(lat) for
    latitude), so an overlap [lo, hi] weighs measure(hi) - measure(lo)."""
    t_lo, t_hi = edges[:-1], edges[1:]
    s_lo, s_hi = axis.lower, axis.upper
    if clip:
        s_lo, s_hi = np.clip(s_lo, -90.0, 90.0), np.clip(s_hi, -90.0, 90.0)
    # Source cells k with s_hi[k] > t_lo and s_lo[k] < t_hi form one contiguous run per target cell.
    start = np.searchsorted(s_hi, t_lo, side="right")
    stop = np.searchsorted(s_lo, t_hi, side="left")
    count = np.maximum(stop - start, 0)
    rows = np.repeat(np.arange(t_lo.size), count)
    first = np.repeat(start - np.cumsum(count) + count, count)
    cols = first + np.arange(rows.size)
    lo = np.maximum(t_lo[rows], s_lo[cols])
    hi = np.minimum(t_hi[rows], s_hi[cols])
    weight = measure(hi) - measure(lo)
    keep = weight > 0
    matrix = sp.coo_matrix((weight[keep], (rows[keep], axis.index[cols[keep]])), shape=(t_lo.size, n_src))
    return matrix.tocsr()  # duplicates (the same cell reached through two seam copies) are summed


def _interp_matrix(targets: np.ndarray, axis: _Axis, n_src: int) -> sp.csr_matrix:
    """Sparse (n_target, n_src) linear-interpolation weights along one axis.

    Between two neighbouring source centres (one cell apart) the weights are linear; a target within half
    a cell beyond the last centre of a run of cells takes that centre's value; anything further has no
    weights (NaN in the result)."""
    x, step = axis.centres, axis.step
    j = np.searchsorted(x, targets, side="right") - 1
    inner = (j >= 0) & (j < x.size - 1)
    j_in = np.clip(j, 0, x.size - 2)
    neighbours = inner & (x[j_in + 1] - x[j_in] <= step * (1 + _REL_TOL))
    frac = np.where(neighbours, (targets - x[j_in]) / step, 0.0)
    near = np.clip(np.searchsorted(x, targets), 0, x.size - 1)
    alt = np.clip(near - 1, 0, x.size - 1)
    near = np.where(np.abs(x[alt] - targets) < np.abs(x[near] - targets), alt, near)
    close = ~neighbours & (np.abs(x[near] - targets) <= step / 2 * (1 + _REL_TOL))
    t = np.arange(targets.size)
    rows = np.concatenate([t[neighbours], t[neighbours], t[close]])
    cols = np.concatenate([j_in[neighbours], j_in[neighbours] + 1, near[close]])
    weight = np.concatenate([1.0 - frac[neighbours], frac[neighbours], np.ones(int(close.sum()))])
    keep = weight > 0  # a zero weight must not let a NaN neighbour spoil an exact hit
    matrix = sp.coo_matrix((weight[keep], (rows[keep], axis.index[cols[keep]])), shape=(targets.size, n_src))
    return matrix.tocsr()


def _apply(w_lat: sp.csr_matrix, w_lon: sp.csr_matrix, field_: np.ndarray) -> np.ndarray:
    """`w_lat @ field @ w_lon.T` over the last two axes of `field_`, leading axes broadcast."""
    lead = field_.shape[:-2]
    n_lat, n_lon = field_.shape[-2:]
    flat = field_.reshape(-1, n_lat, n_lon)
    n = flat.shape[0]
    # Longitude first: (n_lon_t, n * n_lat) — then latitude: (n_lat_t, n_lon_t * n).
    along_lon = np.asarray(w_lon @ flat.reshape(n * n_lat, n_lon).T)
    along_lon = along_lon.reshape(w_lon.shape[0], n, n_lat).transpose(2, 0, 1)
    out = np.asarray(w_lat @ along_lon.reshape(n_lat, -1))
    out = out.reshape(w_lat.shape[0], w_lon.shape[0], n).transpose(2, 0, 1)
    return out.reshape(*lead, w_lat.shape[0], w_lon.shape[0])


def _check_values(values: np.ndarray, src_lat: np.ndarray, src_lon: np.ndarray) -> np.ndarray:
    array = np.asarray(values)
    expected = (np.size(src_lat), np.size(src_lon))
    if array.ndim < 2 or array.shape[-2:] != expected:
        raise RegridError(
            f"values have shape {array.shape}; the last two axes must be (lat, lon) = {expected}"
        )
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise RegridError(f"values must be numeric, got dtype {array.dtype}")
    return array


def _out_dtype(values: np.ndarray) -> np.dtype[Any]:
    return np.dtype("float32") if values.dtype == np.float32 else np.dtype("float64")


def _check_fraction(min_valid_fraction: float) -> None:
    if not 0.0 <= min_valid_fraction <= 1.0:
        raise RegridError(f"min_valid_fraction must be in [0, 1], got {min_valid_fraction}")


def conservative_weights(
    src_lat: np.ndarray, src_lon: np.ndarray, grid: Grid
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Separable overlap weights from a regular source onto `grid`.

    Returns `(w_lat, w_lon)`, shapes `(grid.nlat, len(src_lat))` and `(grid.nlon, len(src_lon))`:
    `w_lat[i, k]` is the overlap of target row i and source row k in sin(latitude), `w_lon[j, l]` the
    overlap of target column j and source column l in degrees (seam-aware). Their product is proportional
    to the overlap area on the sphere. Columns refer to the source's own order."""
    lat_axis = _lat_axis(src_lat)
    lon_axis = _periodic(_lon_axis(src_lon, grid.lon_min))
    lat_edges, lon_edges = _target_edges(grid)
    w_lat = _overlap_matrix(lat_edges, lat_axis, np.size(src_lat), _sin, clip=True)
    w_lon = _overlap_matrix(lon_edges, lon_axis, np.size(src_lon), lambda x: x, clip=False)
    return w_lat, w_lon


def _target_areas(grid: Grid) -> np.ndarray:
    lat_edges, lon_edges = _target_edges(grid)
    return np.outer(np.diff(_sin(lat_edges)), np.diff(lon_edges))


def conservative(
    src_lat: np.ndarray,
    src_lon: np.ndarray,
    values: np.ndarray,
    grid: Grid,
    *,
    min_valid_fraction: float = 0.5,
) -> np.ndarray:
    """Area-weighted mean of a (finer) regular source in each cell of `grid`.

    Each source cell weighs its overlap area with the target cell on the sphere (∝ Δlon · Δsin(lat)).
    NaN source cells are left out and the remaining weights renormalised. The *valid fraction* of a target
    cell is the area covered by valid (non-NaN) source cells divided by the target cell's area; where it is
    below `min_valid_fraction` (default 0.5: at least half the cell must have data — so a coastal cell takes
    the land mean of a land-only field when it is mostly land), or zero, the result is NaN. Target cells
    partly outside the source's extent count the missing part as invalid. `min_valid_fraction=0` keeps any
    cell with some valid data.

    Args:
        src_lat: source cell-centre latitudes, regular, ascending or descending.
        src_lon: source cell-centre longitudes, regular, 0-360 or -180..180.
        values: `(..., len(src_lat), len(src_lon))`.
        grid: the target grid.
        min_valid_fraction: the minimum valid fraction in [0, 1].

    Returns:
        `(..., grid.nlat, grid.nlon)`.
    """
    _check_fraction(min_valid_fraction)
    array = _check_values(values, src_lat, src_lon)
    w_lat, w_lon = conservative_weights(src_lat, src_lon, grid)
    return apply_conservative(w_lat, w_lon, array, grid, min_valid_fraction)


def _enough_area(covered: np.ndarray, grid: Grid, min_valid_fraction: float) -> np.ndarray:
    """Target cells whose valid source area is positive and at least `min_valid_fraction` of the cell."""
    return (covered > 0) & (covered / _target_areas(grid) >= min_valid_fraction - _FRACTION_SLACK)


def apply_conservative(
    w_lat: sp.csr_matrix, w_lon: sp.csr_matrix, values: np.ndarray, grid: Grid, min_valid_fraction: float
) -> np.ndarray:
    """`conservative` with precomputed weights (any subset of source rows/columns holding every nonzero
    weight: the columns of `w_lat`/`w_lon` are the last two axes of `values`)."""
    data = values.astype("float64", copy=False)
    valid = np.isfinite(data)
    numerator = _apply(w_lat, w_lon, np.where(valid, data, 0.0))
    if valid.all():  # the common case: one outer product instead of a second pass
        covered = np.outer(np.asarray(w_lat.sum(axis=1)).ravel(), np.asarray(w_lon.sum(axis=1)).ravel())
        covered = np.broadcast_to(covered, numerator.shape)
    else:
        covered = _apply(w_lat, w_lon, valid.astype("float64"))
    ok = _enough_area(covered, grid, min_valid_fraction)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok, numerator / np.where(ok, covered, 1.0), np.nan)
    return out.astype(_out_dtype(values), copy=False)


def bilinear_weights(
    src_lat: np.ndarray, src_lon: np.ndarray, grid: Grid
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Separable linear-interpolation weights from a regular source onto `grid`'s cell centres.

    Returns `(w_lat, w_lon)` like `conservative_weights`; each row sums to 1, or 0 where the target centre
    is more than half a source cell beyond the source. A global source wraps at the dateline."""
    lat_axis = _lat_axis(src_lat)
    lon_axis = _periodic(_lon_axis(src_lon, grid.lon_min))
    w_lat = _interp_matrix(grid.lat.astype("float64"), lat_axis, np.size(src_lat))
    w_lon = _interp_matrix(grid.lon.astype("float64"), lon_axis, np.size(src_lon))
    return w_lat, w_lon


def bilinear(
    src_lat: np.ndarray,
    src_lon: np.ndarray,
    values: np.ndarray,
    grid: Grid,
    *,
    min_valid_fraction: float = 1.0,
) -> np.ndarray:
    """Bilinear interpolation of a (coarser) regular source at the cell centres of `grid`.

    Separable linear interpolation in latitude and longitude (degrees). A global source wraps at the
    dateline (the last and first columns are neighbours); a target centre up to half a source cell beyond
    the outermost source centre takes the edge value, further out it is NaN.

    NaN: the *valid fraction* of a target is the summed weight of its non-NaN corners (corners with zero
    weight do not count). With the default `min_valid_fraction=1.0` any NaN corner makes the result NaN
    (plain bilinear); a smaller value renormalises over the valid corners where enough weight remains.

    Args:
        src_lat: source cell-centre latitudes, regular, ascending or descending.
        src_lon: source cell-centre longitudes, regular, 0-360 or -180..180.
        values: `(..., len(src_lat), len(src_lon))`.
        grid: the target grid.
        min_valid_fraction: the minimum valid corner weight in [0, 1].

    Returns:
        `(..., grid.nlat, grid.nlon)`.
    """
    _check_fraction(min_valid_fraction)
    array = _check_values(values, src_lat, src_lon)
    w_lat, w_lon = bilinear_weights(src_lat, src_lon, grid)
    return apply_bilinear(w_lat, w_lon, array, min_valid_fraction)


def apply_bilinear(
    w_lat: sp.csr_matrix, w_lon: sp.csr_matrix, values: np.ndarray, min_valid_fraction: float
) -> np.ndarray:
    """`bilinear` with precomputed weights (see `apply_conservative` for the subset rule)."""
    data = values.astype("float64", copy=False)
    valid = np.isfinite(data)
    numerator = _apply(w_lat, w_lon, np.where(valid, data, 0.0))
    total = np.outer(np.asarray(w_lat.sum(axis=1)).ravel(), np.asarray(w_lon.sum(axis=1)).ravel())
    covered = _apply(w_lat, w_lon, valid.astype("float64")) if not valid.all() else total
    with np.errstate(invalid="ignore", divide="ignore"):
        fraction = covered / np.where(total > 0, total, 1.0)
        ok = (total > 0) & (covered > 0) & (fraction >= min_valid_fraction - _FRACTION_SLACK)
        out = np.where(ok, numerator / np.where(ok, covered, 1.0), np.nan)
    return out.astype(_out_dtype(values), copy=False)


def mode(
    src_lat: np.ndarray,
    src_lon: np.ndarray,
    values: np.ndarray,
    grid: Grid,
    *,
    min_valid_fraction: float = 0.0,
) -> np.ndarray:
    """The category covering the largest area of each target cell, for categorical fields (codes).

    Areas are the same spherical overlaps as in `conservative`. Ties (equal areas within 1e-9 relative)
    go to the smallest code. NaN source cells are ignored; a target cell with no valid source area, or
    whose valid fraction (valid area / cell area) is below `min_valid_fraction`, is NaN. Integer sources
    have no NaN: turn a fill value into NaN first.

    Returns:
        `(..., grid.nlat, grid.nlon)` float64 codes (float so that NaN fits).
    """
    _check_fraction(min_valid_fraction)
    array = _check_values(values, src_lat, src_lon)
    w_lat, w_lon = conservative_weights(src_lat, src_lon, grid)
    return apply_mode(w_lat, w_lon, array, grid, min_valid_fraction)


def apply_mode(
    w_lat: sp.csr_matrix, w_lon: sp.csr_matrix, values: np.ndarray, grid: Grid, min_valid_fraction: float
) -> np.ndarray:
    """`mode` with precomputed (conservative) weights (see `apply_conservative` for the subset rule)."""
    data = values.astype("float64", copy=False)
    valid = np.isfinite(data)
    shape = (*data.shape[:-2], w_lat.shape[0], w_lon.shape[0])
    best_code = np.full(shape, np.nan)
    best_area = np.zeros(shape)
    covered = np.zeros(shape)
    for code in np.unique(data[valid]):  # ascending: a later code must beat the best strictly to win
        area = _apply(w_lat, w_lon, (data == code).astype("float64"))
        covered += area
        wins = (area > 0) & (area > best_area * (1 + 1e-9))
        best_code = np.where(wins, code, best_code)
        best_area = np.where(wins, area, best_area)
    ok = _enough_area(covered, grid, min_valid_fraction)
    return np.where(ok, best_code, np.nan)


Regridder = Callable[..., np.ndarray]

REGRIDDERS: dict[str, Regridder] = {"conservative": conservative, "bilinear": bilinear, "mode": mode}
"""Regridding operators by method name, all `(src_lat, src_lon, values, grid, **options) -> array`."""

_LAT_NAMES = ("lat", "latitude")
_LON_NAMES = ("lon", "longitude")


def _dim(da: xr.DataArray, names: tuple[str, ...]) -> str:
    for name in names:
        if name in da.dims:
            return name
    raise RegridError(f"variable {da.name!r} has no {' / '.join(names)} dimension (dims {tuple(da.dims)})")


def regrid(da: xr.DataArray, grid: Grid, method: str = "conservative", **options: Any) -> xr.DataArray:
    """Regrid `da` onto `grid` with the operator `REGRIDDERS[method]`.

    `da` needs a latitude dimension (`lat` or `latitude`) and a longitude dimension (`lon` or `longitude`)
    with 1-D coordinates; other dimensions are kept (moved in front). The result has dims
    `(..., lat, lon)` with the grid's coordinates and keeps `da`'s name and attributes. Dask-backed arrays
    stay lazy (one task per chunk; lat/lon must each be a single chunk). `options` go to the operator
    (e.g. `min_valid_fraction`).
    """
    if method not in REGRIDDERS:
        raise RegridError(
            f"unknown regrid method {method!r} for variable {da.name!r}; use one of {sorted(REGRIDDERS)}"
        )
    func = REGRIDDERS[method]
    lat_dim, lon_dim = _dim(da, _LAT_NAMES), _dim(da, _LON_NAMES)
    src_lat = np.asarray(da[lat_dim].values)
    src_lon = np.asarray(da[lon_dim].values)
    # Validate the source grid now, so that a lazy array fails before any work.
    try:
        (bilinear_weights if method == "bilinear" else conservative_weights)(src_lat, src_lon, grid)
    except RegridError as err:
        raise RegridError(f"variable {da.name!r}: {err}") from err

    def apply(values: np.ndarray) -> np.ndarray:
        return func(src_lat, src_lon, values, grid, **options)

    out_dtype = np.float32 if da.dtype == np.float32 and method != "mode" else np.float64
    dropped = [name for name, coord in da.coords.items() if {lat_dim, lon_dim} & set(coord.dims)]
    source = da.drop_vars(dropped).rename({lat_dim: "_src_lat", lon_dim: "_src_lon"})
    out = xr.apply_ufunc(
        apply,
        source,
        input_core_dims=[["_src_lat", "_src_lon"]],
        output_core_dims=[["lat", "lon"]],
        dask="parallelized",
        output_dtypes=[out_dtype],
        dask_gufunc_kwargs={"output_sizes": {"lat": grid.nlat, "lon": grid.nlon}},
        keep_attrs=True,
    )
    return out.assign_coords(grid.coords()).rename(da.name)
