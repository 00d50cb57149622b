"""NetCDF export for users of the original product: one CF-1.11 file per layer and year.

`somocloud export-netcdf` writes `<netcdf>/<prefix>_layer<k>_<YYYY>.nc` (SoMo.ml v1's naming with the
prefix `SoMo.ml_v1`; `publish.netcdf_prefix`, default the collection id) from the complete product:
`soil_moisture` and `soil_moisture_spread` (time, lat, lon) of one layer, the layer as a scalar `depth`
coordinate with `depth_bnds`, lat/lon bounds and a `crs` grid mapping. Coordinates and bounds carry no
`_FillValue` (xarray's default NaN fill on them is a CF error); data use 1e20 as fill value. The files
pass `compliance-checker --test=cf:1.11` offline (a test runs it).
"""

from __future__ import annotations

import logging
import os
import posixpath
import tempfile
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from somocloud import stores
from somocloud.config import RunConfig
from somocloud.context import Context

log = logging.getLogger(__name__)

FILL = np.float32(1e20)
DATA_VARS = ("soil_moisture", "soil_moisture_spread")
LONG_NAMES = {
    "soil_moisture": "volumetric soil moisture (ensemble mean)",
    "soil_moisture_spread": "ensemble spread (population standard deviation) of volumetric soil moisture",
}


def export_netcdf(cfg: RunConfig, ctx: Context, only_years: set[int] | None = None) -> dict[str, str]:
    """Write one NetCDF file per layer and year of the complete product (of `only_years`, when given);
    returns `{"netcdf": folder}`."""
    from somocloud.publish import check_complete

    product_url, out = cfg.store("product"), cfg.store("netcdf")
    attrs = check_complete(product_url)
    product = stores.open_zarr(product_url)
    prefix = netcdf_prefix(cfg)
    years = pd.DatetimeIndex(product["time"].values).year
    written = 0
    for k in range(product.sizes["depth"]):
        for year in np.unique(years):
            if only_years is not None and int(year) not in only_years:
                continue
            ds = layer_year(product.isel(depth=k, time=np.flatnonzero(years == year)), attrs, cfg, k + 1)
            _write(ds, stores.join(out, netcdf_name(prefix, k + 1, int(year))))
            written += 1
    log.info("export-netcdf: wrote %d files to %s", written, out)
    return {"netcdf": out}


def netcdf_prefix(cfg: RunConfig) -> str:
    """`publish.netcdf_prefix`, default the collection id."""
    return cfg.publish.netcdf_prefix or cfg.publish.collection_id


def netcdf_name(prefix: str, layer: int, year: int) -> str:
    """File name of one layer and year: `<prefix>_layer<k>_<YYYY>.nc`."""
    return f"{prefix}_layer{layer}_{year}.nc"


def exported_files(cfg: RunConfig, product: xr.Dataset) -> dict[int, list[tuple[int, str]]]:
    """The export's files that exist for `product`: year → [(layer, url)], years with every layer only."""
    prefix = netcdf_prefix(cfg)
    out = cfg.store("netcdf")
    present = {posixpath.basename(u) for u in stores.list_files(out, ".nc")}
    files: dict[int, list[tuple[int, str]]] = {}
    for year in np.unique(pd.DatetimeIndex(product["time"].values).year):
        names = [netcdf_name(prefix, k, int(year)) for k in range(1, product.sizes["depth"] + 1)]
        if all(name in present for name in names):
            files[int(year)] = [(k, stores.join(out, name)) for k, name in enumerate(names, start=1)]
    return files


def layer_year(sub: xr.Dataset, product_attrs: dict[str, Any], cfg: RunConfig, layer: int) -> xr.Dataset:
    """One layer and year of the product as a CF-1.11 dataset (data loaded)."""
    lat, lon = sub["lat"].values, sub["lon"].values
    half = cfg.grid.resolution / 2
    top, bottom = (float(v) for v in sub["depth_bnds"].values)
    data = {}
    for name in DATA_VARS:
        var = sub[name].transpose("time", "lat", "lon").load()
        var.attrs = {
            "long_name": LONG_NAMES[name],
            **{k: v for k, v in var.attrs.items() if k not in ("_FillValue", "coordinates")},
            "grid_mapping": "crs",
            "cell_methods": "time: mean depth: mean area: mean where land",
        }
        data[name] = var.drop_vars([c for c in var.coords if c not in ("time", "lat", "lon", "depth")])
    ds = xr.Dataset(data)
    ds["depth"] = xr.DataArray(
        float(sub["depth"].values),
        attrs={"standard_name": "depth", "long_name": "depth of the layer mid-point", "units": "m",
               "positive": "down", "axis": "Z", "bounds": "depth_bnds"},
    )  # fmt: skip
    ds = ds.set_coords("depth")
    ds["depth_bnds"] = xr.DataArray(np.array([top, bottom]), dims=("nv",), attrs={"units": "m"})
    ds["lat"].attrs = {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
                       "axis": "Y", "bounds": "lat_bnds"}  # fmt: skip
    ds["lon"].attrs = {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
                       "axis": "X", "bounds": "lon_bnds"}  # fmt: skip
    ds["lat_bnds"] = xr.DataArray(np.stack([lat - half, lat + half], axis=1), dims=("lat", "nv"))
    ds["lon_bnds"] = xr.DataArray(np.stack([lon - half, lon + half], axis=1), dims=("lon", "nv"))
    ds["time"].attrs = {
        "standard_name": "time",
        "long_name": "time",
        "axis": "T",
        "units_metadata": "leap_seconds: none",
    }
    ds["crs"] = xr.DataArray(
        np.int32(0),
        attrs={"grid_mapping_name": "latitude_longitude", "semi_major_axis": 6378137.0,
               "inverse_flattening": 298.257223563},
    )  # fmt: skip
    ds.attrs = {
        "Conventions": "CF-1.11",
        "title": f"{cfg.publish.title}: layer {layer} ({top * 100:g}-{bottom * 100:g} cm)",
        "institution": cfg.publish.providers[0].name if cfg.publish.providers else "somocloud",
        "source": f"somocloud {product_attrs.get('somocloud_version', '')}: EA-LSTM ensemble "
        f"({product_attrs.get('inference_mode', '')} inference), model {product_attrs.get('model_content_id', '')}",
        "history": f"exported from the product Zarr (content id {product_attrs.get('somocloud_content_id', '')})",
        "references": "O, S. & Orth, R. Global soil moisture data derived through machine learning trained with "
        "in-situ measurements. Sci. Data 8, 170 (2021). https://doi.org/10.1038/s41597-021-00964-1",
        "comment": "Daily volumetric soil moisture; NaN (fill value) over sea and where inputs were missing.",
        "license": cfg.publish.license,
        "product_version": cfg.product_version,
    }
    return ds


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    nlat, nlon = ds.sizes["lat"], ds.sizes["lon"]
    enc: dict[str, dict[str, Any]] = {
        name: {
            "zlib": True,
            "complevel": 4,
            "chunksizes": (1, nlat, nlon),
            "_FillValue": FILL,
            "dtype": "float32",
        }
        for name in DATA_VARS
    }
    enc["time"] = {"units": "days since 1970-01-01 00:00:00", "calendar": "standard", "dtype": "float64",
                   "_FillValue": None}  # fmt: skip
    # CF: coordinates and bounds carry no fill value (xarray would add NaN)
    enc |= {
        name: {"_FillValue": None} for name in ("lat", "lon", "depth", "depth_bnds", "lat_bnds", "lon_bnds")
    }
    return enc


def _write(ds: xr.Dataset, url: str) -> None:
    """netCDF4 needs a local file: write to a temporary one, then copy it to the store."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "out.nc")
        ds.to_netcdf(path, engine="netcdf4", format="NETCDF4", encoding=_encoding(ds))
        with open(path, "rb") as fh:
            stores.write_bytes(url, fh.read())
