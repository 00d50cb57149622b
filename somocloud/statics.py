"""The `statics` step: static features of every run-grid cell (SoMo.ml v1 static input set).

Inputs: `static_inputs` (texture, porosity, vegetation code, land-sea mask), `dem` (elevation, as fine
as or finer than the run grid), both regular lat/lon rasters in any layout (latitude either way, 0-360 or
±180 longitudes) at any resolution, and the daily `forcing` cube (long-term precipitation and net
radiation). Output `statics`, dims `(lat, lon)` on the run grid:

- `elev_mean`, `elev_std`: area-weighted mean and standard deviation of the DEM cells overlapping each run
  cell (`somocloud.sampling`, conservative: std = sqrt(mean(z²) − mean(z)²));
- `p_mean`: mean daily `tp` over the whole forcing period × 365.25 (mm yr-1);
- `aridity`: mean net radiation as evaporation equivalent, mean(`snr`) / 2.45 MJ kg-1 (mm day-1),
  divided by mean `tp` (mm day-1); NaN where mean `tp` is 0;
- `clay`, `sand`, `silt`, `porosity_top`, `porosity_mid`: from `static_inputs`, picked where the raster
  holds the run grid's cells, else area-weighted (finer raster) or bilinear (coarser raster);
- `veg_type`: the code covering most of the cell (area mode) unless the cells line up;
- `land_mask`: `land_sea_mask >= 0.5` (bool), the mask regridded like the continuous fields.

Rasters are read in bands of run-grid rows so that a 1 km global raster never sits in memory at once.

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
from somocloud.grid import Grid
from somocloud.sampling import sampler_for
from somocloud.stores import StoreError

log = logging.getLogger(__name__)

STEP = "statics"
LATENT_HEAT_MJ_PER_KG = 2.45
"""Latent heat of vaporisation: 1 mm of evaporation takes 2.45 MJ m-2."""
DAYS_PER_YEAR = 365.25
COPIED = ("clay", "sand", "silt", "porosity_top", "porosity_mid", "veg_type")
"""Variables taken from `static_inputs` (regridded onto the run grid)."""
CATEGORICAL = frozenset({"veg_type"})
"""Codes: regridded by area mode, never averaged."""
STATIC_INPUT_VARIABLES = ("land_sea_mask", *COPIED)
_BAND_VALUES = 2**24  # source raster values read per band (128 MiB as float64)

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

    data: dict[str, np.ndarray] = {}
    # the DEM first: its layout checks are cheap, the long-term forcing means are the costly part
    data["elev_mean"], data["elev_std"] = dem_stats(dem_ds, grid, inputs["dem"])
    static_url = inputs["static_inputs"]
    for name in COPIED:
        (values,) = regrid_raster(static_ds[name], grid, static_url, name in CATEGORICAL)
        data[name] = values.astype("float32")
    (land_sea,) = regrid_raster(static_ds["land_sea_mask"], grid, static_url)
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


def dem_stats(dem: xr.Dataset, grid: Grid, url: str) -> tuple[np.ndarray, np.ndarray]:
    """Area-weighted mean and standard deviation of `elevation` in each run cell (see the module doc).

    The DEM must be at least as fine as the run grid (a coarser one has no sub-cell variability)."""
    mean, mean_sq = regrid_raster(dem["elevation"], grid, url, moments=2)
    std = np.sqrt(np.maximum(mean_sq - mean.astype("float64") ** 2, 0.0))
    return mean.astype("float32"), std.astype("float32")


def regrid_raster(
    da: xr.DataArray, grid: Grid, url: str, categorical: bool = False, moments: int = 1
) -> list[np.ndarray]:
    """A `(latitude, longitude)` raster on the run grid, read in bands of run rows; float64.

    `moments=2` also returns the regridded square (for a standard deviation; the raster must then be at
    least as fine as the run grid). `StoreError` naming `url` and the variable when it cannot cover it."""
    src_lat, src_lon = da["latitude"].values, da["longitude"].values
    whole = sampler_for(src_lat, src_lon, grid, url, categorical=categorical)  # checks coverage once
    if moments > 1 and whole.method == "bilinear":
        raise StoreError(
            f"{url}: variable {da.name!r} is coarser than the run grid ({grid.resolution} degrees); "
            "its within-cell spread needs a raster at least as fine"
        )
    out = [np.full(grid.shape, np.nan) for _ in range(moments)]
    rows_per_band = max(1, _BAND_VALUES // max(1, whole.cells_read // grid.nlat))
    for i0 in range(0, grid.nlat, rows_per_band):
        i1 = min(i0 + rows_per_band, grid.nlat)
        band = Grid(
            grid.resolution,
            grid.lat_min + i0 * grid.resolution,
            grid.lat_min + i1 * grid.resolution,
            grid.lon_min,
            grid.lon_max,
        )
        sampler = sampler_for(src_lat, src_lon, band, url, method=whole.method, categorical=categorical)
        values = sampler.select(da).astype("float64")
        for k in range(moments):
            out[k][i0:i1] = sampler.apply(values ** (k + 1))
    return out


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
