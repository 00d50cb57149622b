"""Analyst code, run by the tests in a process where somocloud cannot be imported (`python -S`).

Opens the published product the three documented ways and prints a JSON summary on stdout:

    python -S analyst.py CATALOG_URL PRODUCT_URL COLLECTION_URL PRIVATE_URL anon|keys

`anon` reads with unsigned requests (`{"anon": True}`); `keys` with the credentials in the environment.
PRIVATE_URL is an object that was not published: the summary says whether it could be read.
"""

from __future__ import annotations

import importlib.util
import json
import sys


def main(catalog_url: str, product_url: str, collection_url: str, private_url: str, access: str) -> None:
    if importlib.util.find_spec("somocloud") is not None:
        raise SystemExit("somocloud is importable: this is not an analyst's environment")

    import fsspec
    import intake
    import numpy as np
    import pystac
    import xarray as xr

    so = {"anon": True} if access == "anon" else {}
    cat = intake.open_catalog(catalog_url, storage_options=so)
    whole = cat.soil_moisture.read()
    layer = cat["soil_moisture_0_10cm"].read()
    direct = xr.open_zarr(product_url, storage_options=so)
    with fsspec.open(collection_url, "r", **so) as f:
        collection = pystac.Collection.from_dict(json.load(f))
    via_stac = xr.open_dataset(collection.assets["zarr"], engine="stac")
    try:
        with fsspec.open(private_url, "rb", **so) as f:
            f.read()
        private_readable = True
    except (PermissionError, OSError):
        private_readable = False

    def total(da: xr.DataArray) -> float:
        return float(np.nansum(da.values))

    print(
        json.dumps(
            {
                "intake_whole": total(whole["soil_moisture"].isel(time=0)),
                "intake_layer1": total(layer["soil_moisture"].isel(time=0)),
                "open_zarr": total(direct["soil_moisture"].isel(time=0)),
                "open_zarr_layer1": total(direct["soil_moisture"].isel(time=0, depth=0)),
                "stac": total(via_stac["soil_moisture"].isel(time=0)),
                "sizes": dict(direct.sizes),
                "catalog_entries": sorted(cat),
                "items": sorted(link.href for link in collection.links if link.rel == "item"),
                "private_readable": private_readable,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:6])
