"""The `statics` step: static features of every run-grid cell (SoMo.ml v1 static input set).

Inputs: `static_inputs` (texture, porosity, vegetation code, land-sea mask on the ERA5 layout and grid),
`dem` (elevation on a grid `dem_factor` times finer, ERA5 layout) and the daily `forcing` cube (long-term
precipitation and net radiation). Output `statics`, dims `(lat, lon)` on the run grid:

- `elev_mean`, `elev_std`: mean and population standard deviation (ddof 0) of the DEM cells under each
  run cell (the `dem_factor` x `dem_factor` block; the factor is inferred from the coordinates);
- `p_mean`: mean daily `tp` over the whole forcing period × 365.25 (mm yr-1);
- `aridity`: mean net radiation as evaporation equivalent, mean(`snr`) / 2.45 MJ kg-1 (mm day-1),
  divided by mean `tp` (mm day-1); NaN where mean `tp` is 0;
- `clay`, `sand`, `silt`, `porosity_top`, `porosity_mid`, `veg_type`: copied from `static_inputs`;
- `land_mask`: `land_sea_mask >= 0.5` (bool).

Days with NaN forcing are left out of the means; a cell with no valid day is NaN.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import xarray as xr

from somocloud import provenance, stores
from somocloud.config import RunConfig
from somocloud.context import Context
from somocloud.grid import Grid, source_cell_index
from somocloud.stores import StoreError

log = logging.getLogger(__name__)

STEP = "statics"
LATENT_HEAT_MJ_PER_KG = 2.45
"""Latent heat of vaporisation: 1 mm of evaporation takes 2.45 MJ m-2."""
DAYS_PER_YEAR = 365.25
COPIED = ("clay", "sand", "silt", "porosity_top", "porosity_mid", "veg_type")
"""Variables taken from `static_inputs` as they are."""
STATIC_INPUT_VARIABLES = ("land_sea_mask", *COPIED)
_BAND_VALUES = 2**24  # fine DEM values read per band (128 MiB as float64)

ATTRS: dict[str, dict[str, str]] = {
    "elev_mean": {"units": "m", "long_name": "mean elevation of the DEM cells in the grid cell"},
    "elev_std": {
        "units": "m",
        "long_name": "standard deviation of elevation of the DEM cells in the grid cell",
    },
    "p_mean": {"units": "mm yr-1", "long_name": "long-term mean precipitation"},
    "aridity": {
        "units": "1",
        "long_name": "aridity index: mean net radiation (mm day-1 evaporation) / mean tp",
    },
    "clay": {"units": "1", "long_name": "clay fraction"},
    "sand": {"units": "1", "long_name": "sand fraction"},
    "silt": {"units": "1", "long_name": "silt fraction"},
    "porosity_top": {"units": "1", "long_name": "porosity of the top soil"},
    "porosity_mid": {"units": "1", "long_name": "porosity of the sub soil"},
    "veg_type": {"units": "1", "long_name": "dominant vegetation type code (1..17)"},
    "land_mask": {"long_name": "land cell (land_sea_mask >= 0.5)"},
}
FORCING_UNITS = {"tp": "mm day-1", "snr": "MJ m-2 day-1"}


def build_statics(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """Build the `statics` store on the run grid; returns `{"statics": url}`."""
    grid = Grid.from_config(cfg.grid)
    inputs = {name: cfg.store(name) for name in ("static_inputs", "dem", "forcing")}
    # Open and check every input before computing anything.
    static_ds = _open_checked(inputs["static_inputs"], STATIC_INPUT_VARIABLES, ("latitude", "longitude"))
    dem_ds = _open_checked(inputs["dem"], ("elevation",), ("latitude", "longitude"), {"elevation": "m"})
    forcing_ds = _open_forcing(inputs["forcing"], grid)

    cells = source_cell_index(static_ds, grid, inputs["static_inputs"])
    data: dict[str, np.ndarray] = {}
    # the DEM first: its layout checks are cheap, the long-term forcing means are the costly part
    data["elev_mean"], data["elev_std"] = dem_block_stats(dem_ds, grid, inputs["dem"])
    for name in COPIED:
        data[name] = _on_grid(static_ds[name], cells).astype("float32")
    land_sea = _on_grid(static_ds["land_sea_mask"], cells)
    with np.errstate(invalid="ignore"):
        land_mask = land_sea >= 0.5  # NaN compares False: sea
    data["p_mean"], data["aridity"] = climate_indices(forcing_ds)

    order = ("elev_mean", "elev_std", "p_mean", "aridity", *COPIED)
    variables: dict[str, Any] = {n: (("lat", "lon"), data[n].astype("float32"), ATTRS[n]) for n in order}
    variables["land_mask"] = (("lat", "lon"), land_mask, ATTRS["land_mask"])
    attrs = provenance.provenance_attrs(cfg, STEP, inputs)
    out = xr.Dataset(variables, coords=grid.coords(), attrs=attrs)
    url = cfg.store("statics")
    stores.write_zarr(out, url)
    log.info("statics: wrote %s (%d land cells)", url, int(land_mask.sum()))
    return {"statics": url}


def dem_block_stats(dem: xr.Dataset, grid: Grid, url: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (ddof 0) of `elevation` over the factor x factor DEM block under each run cell.

    The DEM's resolution must divide the run grid's an integer number of times; its cells are matched to
    the run grid's sub-cells exactly (after rounding), in any latitude order and 0-360 or ±180 longitudes.
    Rows are read in bands so that a 1 km global DEM never sits in memory at once."""
    factor = dem_factor(dem, grid.resolution, url)
    fine = Grid(grid.resolution / factor, grid.lat_min, grid.lat_max, grid.lon_min, grid.lon_max)
    cells = source_cell_index(dem, fine, url)
    mean = np.full(grid.shape, np.nan, dtype="float32")
    std = np.full(grid.shape, np.nan, dtype="float32")
    rows_per_band = max(1, _BAND_VALUES // (factor * factor * grid.nlon))
    for i0 in range(0, grid.nlat, rows_per_band):
        i1 = min(i0 + rows_per_band, grid.nlat)
        block = dem["elevation"].isel(latitude=cells.lat[i0 * factor : i1 * factor], longitude=cells.lon)
        values = np.asarray(block.values, dtype="float64").reshape(i1 - i0, factor, grid.nlon, factor)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks give NaN, as intended
            mean[i0:i1] = np.nanmean(values, axis=(1, 3))
            std[i0:i1] = np.nanstd(values, axis=(1, 3))
    return mean, std


def dem_factor(dem: xr.Dataset, resolution: float, url: str) -> int:
    """How many DEM cells span one run cell in each direction, from the DEM's coordinates."""
    factors = []
    for coord in ("latitude", "longitude"):
        values = np.asarray(dem[coord].values, dtype="float64")
        if values.size < 2:
            raise StoreError(
                f"{url}: coordinate {coord!r} has fewer than 2 values; cannot infer its resolution"
            )
        steps = np.abs(np.diff(values))
        # the smallest step is the cell size (a 0-360 store straddling the meridian has one big jump)
        step = float(steps[steps > 0].min()) if (steps > 0).any() else 0.0
        ratio = resolution / step if step > 0 else 0.0
        if step <= 0 or round(ratio) < 1 or abs(ratio - round(ratio)) > 1e-3 * ratio:
            raise StoreError(
                f"{url}: coordinate {coord!r} has resolution {step:g} degrees, not an integer fraction of "
                f"the run grid's {resolution:g}"
            )
        factors.append(round(ratio))
    if factors[0] != factors[1]:
        raise StoreError(f"{url}: latitude and longitude resolutions differ (factors {factors}) ")
    return int(factors[0])


def climate_indices(forcing: xr.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """`p_mean` (mm yr-1) and `aridity` (-) from the daily forcing cube (`tp`, `snr` over all its days)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells
        means = forcing[["tp", "snr"]].astype("float64").mean("time", skipna=True).compute()
    tp = np.asarray(means["tp"].values)
    snr = np.asarray(means["snr"].values)
    p_mean = tp * DAYS_PER_YEAR
    with np.errstate(invalid="ignore", divide="ignore"):
        aridity = np.where(tp > 0, (snr / LATENT_HEAT_MJ_PER_KG) / tp, np.nan)
    return p_mean.astype("float32"), aridity.astype("float32")


def _open_checked(
    url: str, names: tuple[str, ...], dims: tuple[str, ...], units: dict[str, str] | None = None
) -> xr.Dataset:
    """Open a raster input; every variable must be present with `dims` (and `units`, where given)."""
    ds = stores.open_zarr(url, chunks=None)
    stores.check_variables(ds, url, names, dims, units)
    return ds


def _open_forcing(url: str, grid: Grid) -> xr.Dataset:
    ds = stores.open_zarr(url)
    stores.check_variables(ds, url, FORCING_UNITS, ("time", "lat", "lon"), FORCING_UNITS)
    grid.check(ds, url, "forcing")
    return ds


def _on_grid(da: xr.DataArray, cells: Any) -> np.ndarray:
    """A (latitude, longitude) source field as a (lat, lon) run-grid array."""
    return np.asarray(da.isel(latitude=cells.lat, longitude=cells.lon).values, dtype="float64")
