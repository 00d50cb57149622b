"""The synthetic world's coarse "satellite": true layer-1 soil moisture averaged to a coarser grid, with
noise and gaps, as a coarse source for multiscale training (`train.multiscale`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from somocloud import stores
from somocloud.config import RunConfig
from somocloud.grid import Grid
from somocloud.multiscale import aggregate, membership


def coarse_axis(fine: np.ndarray, factor: int) -> np.ndarray:
    """Centres of blocks of `factor` fine cells along a regular ascending axis (the last block may reach
    beyond the fine axis)."""
    step = float(fine[1] - fine[0]) if len(fine) > 1 else 1.0
    n = -(-len(fine) // factor)
    return np.round(fine[0] - step / 2 + factor * step * (np.arange(n) + 0.5), 6)


def write_satellite(truth: np.ndarray, days: np.ndarray, land: np.ndarray, grid: Grid, cfg: RunConfig,
                    url: str, attrs: dict[str, Any]) -> str:  # fmt: skip
    """Write the coarse store of `truth` (days, layer, lat, lon) at `url`; returns `url`."""
    syn = cfg.synthetic
    assert syn.coarse_factor is not None
    clat, clon = coarse_axis(grid.lat, syn.coarse_factor), coarse_axis(grid.lon, syn.coarse_factor)
    member = membership(grid, clat, clon)
    coarse = aggregate(truth[:, 0], member, len(clat) * len(clon), land, min_land_fraction=0.5)
    rng = np.random.default_rng([syn.seed, 77])
    coarse = coarse + rng.normal(0.0, syn.coarse_noise, size=coarse.shape)
    coarse[rng.random(coarse.shape) < syn.coarse_gap_fraction] = np.nan
    values = np.clip(coarse, 0.0, None).reshape(len(days), len(clat), len(clon)).astype("float32")
    ds = xr.Dataset(
        {"sm": (("time", "lat", "lon"), values,
                {"units": "m3 m-3", "long_name": "coarse top-layer soil moisture (synthetic satellite)",
                 "standard_name": "volume_fraction_of_condensed_water_in_soil"})},
        coords={"time": ("time", days.astype("datetime64[ns]")),
                "lat": ("lat", clat, {"units": "degrees_north"}), "lon": ("lon", clon, {"units": "degrees_east"})},
        attrs=attrs | {"coarse_factor": syn.coarse_factor, "noise_std": syn.coarse_noise,
                       "gap_fraction": syn.coarse_gap_fraction},
    )  # fmt: skip
    stores.write_zarr(ds, url, encoding={"sm": {"chunks": (min(len(days), 366), len(clat), len(clon))}})
    return url
