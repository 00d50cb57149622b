"""The product's STAC Collection (datacube + xarray-assets extensions), validated offline.

pystac bundles only the core STAC schemas; every extension schema would be fetched from the network.
`OfflineValidator` serves the extension schemas vendored in `somocloud/schemas/` instead and refuses any
other remote schema, so validation never touches the network (see schemas/README.md for sources).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from somocloud import stores
from somocloud.config import RunConfig
from somocloud.publish._hrefs import parent

if TYPE_CHECKING:
    import pystac

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
DATACUBE_SCHEMA = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
XARRAY_SCHEMA = "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json"
VENDORED_SCHEMAS: dict[str, str] = {
    DATACUBE_SCHEMA: "datacube-v2.2.0.json",
    XARRAY_SCHEMA: "xarray-assets-v1.0.0.json",
    # The datacube schema refers to PROJJSON v0.4; PROJ's v0.7 schema (a superset) stands in, and is
    # also registered under its own $id so that its internal references resolve.
    "https://proj.org/schemas/v0.4/projjson.schema.json": "projjson-v0.7.json",
    "https://proj.org/schemas/v0.7/projjson.schema.json": "projjson-v0.7.json",
}
ZARR_MEDIA_TYPE = "application/vnd.zarr"
OPEN_KWARGS = {"engine": "zarr", "chunks": {}, "consolidated": True}
"""`xarray:open_kwargs` of the Zarr asset, `chunks` then set to one stored object (`stores.write_unit_chunks`).
Storage options are never published (they are run-time only)."""
METHOD_CITATION = (
    "O, S. & Orth, R. Global soil moisture data derived through machine learning trained with in-situ "
    "measurements. Sci. Data 8, 170 (2021). https://doi.org/10.1038/s41597-021-00964-1"
)
METHOD_DOI_URL = "https://doi.org/10.1038/s41597-021-00964-1"
VARIABLE_DESCRIPTIONS = {
    "soil_moisture": "Volumetric soil moisture, ensemble mean of the EA-LSTM members",
    "soil_moisture_spread": "Standard deviation of volumetric soil moisture across the EA-LSTM ensemble members",
}


@dataclass(frozen=True)
class LinkSpec:
    """A link of the collection: relation, href, media type and title."""

    rel: str
    href: str
    media_type: str
    title: str


def offline_validator() -> Any:
    """A pystac validator that knows the core schemas (bundled with pystac) and our vendored extension
    schemas, and fails instead of fetching anything else."""
    from pystac.validation import JsonSchemaSTACValidator
    from pystac.validation.stac_validator import GetSchemaError

    class OfflineValidator(JsonSchemaSTACValidator):
        def __init__(self) -> None:
            super().__init__()
            for uri, name in VENDORED_SCHEMAS.items():
                self.schema_cache[uri] = json.loads((SCHEMA_DIR / name).read_text())

        def _get_schema(self, schema_uri: str) -> dict[str, Any]:
            if schema_uri not in self.schema_cache:
                raise GetSchemaError(
                    schema_uri, RuntimeError(f"schema not vendored in {SCHEMA_DIR} (validation is offline)")
                )
            schema: dict[str, Any] = self.schema_cache[schema_uri]
            return schema

    return OfflineValidator()


def validate_collection(collection: pystac.Collection) -> list[str]:
    """Validate offline against the core and extension schemas; returns the schema URIs used.

    Raises `pystac.errors.STACValidationError` naming the failing field."""
    return [str(uri) for uri in collection.validate(validator=offline_validator())]


def _utc(value: np.datetime64) -> dt.datetime:
    return dt.datetime.fromisoformat(str(np.datetime_as_string(value, unit="s"))).replace(tzinfo=dt.UTC)


def _iso(value: np.datetime64) -> str:
    return str(np.datetime_as_string(value, unit="s")) + "Z"


def _step(coord: np.ndarray, fallback: float) -> float:
    """The spacing of a regular coordinate (the config's resolution for a single cell)."""
    if len(coord) < 2:
        return fallback
    return float(np.round(np.median(np.diff(coord)), 9))


def cube_dimensions(ds: xr.Dataset, resolution: float) -> dict[str, dict[str, Any]]:
    """`cube:dimensions` of the product: time, lon, lat (cell centres, EPSG:4326) and depth (z, m)."""
    lat, lon, time = ds["lat"].values, ds["lon"].values, ds["time"].values
    bounds = ds["depth_bnds"].values.tolist() if "depth_bnds" in ds else None
    depth_desc = "Mid-depth of each soil layer below the surface"
    if bounds:
        depth_desc += "; layer bounds " + ", ".join(f"{a:g}-{b:g} m" for a, b in bounds)
    return {
        "time": {
            "type": "temporal",
            "extent": [_iso(time[0]), _iso(time[-1])],
            "step": "P1D",
            "description": "Day (UTC); each value is the daily mean of that day",
        },
        "lon": {
            "type": "spatial",
            "axis": "x",
            "extent": [float(lon[0]), float(lon[-1])],
            "step": _step(lon, resolution),
            "reference_system": 4326,
            "description": "Longitude of the cell centre, degrees east",
        },
        "lat": {
            "type": "spatial",
            "axis": "y",
            "extent": [float(lat[0]), float(lat[-1])],
            "step": _step(lat, resolution),
            "reference_system": 4326,
            "description": "Latitude of the cell centre, degrees north",
        },
        "depth": {
            "type": "spatial",
            "axis": "z",
            "values": [float(v) for v in ds["depth"].values],
            "extent": [float(ds["depth"].values[0]), float(ds["depth"].values[-1])],
            "unit": "m",
            "description": depth_desc,
        },
    }


def cube_variables(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """`cube:variables` of the product's data variables (bounds variables are left out)."""
    out: dict[str, dict[str, Any]] = {}
    for name in ("soil_moisture", "soil_moisture_spread"):
        if name not in ds:
            continue
        attrs = ds[name].attrs
        var: dict[str, Any] = {
            "type": "data",
            "dimensions": list(ds[name].dims),
            "unit": str(attrs.get("units", "m3 m-3")),
            "description": str(attrs.get("long_name") or VARIABLE_DESCRIPTIONS[name]),
        }
        out[name] = var
    return out


def spatial_bbox(ds: xr.Dataset, resolution: float) -> list[float]:
    """[west, south, east, north] of the grid's outer cell edges."""
    lat, lon = ds["lat"].values, ds["lon"].values
    hx, hy = _step(lon, resolution) / 2, _step(lat, resolution) / 2
    return [
        round(float(lon.min()) - hx, 9),
        round(float(lat.min()) - hy, 9),
        round(float(lon.max()) + hx, 9),
        round(float(lat.max()) + hy, 9),
    ]


def _description(cfg: RunConfig, ds: xr.Dataset) -> str:
    from somocloud.layers import DEPTH_BOUNDS

    bounds = ds["depth_bnds"].values.tolist() if "depth_bnds" in ds else DEPTH_BOUNDS.tolist()
    layers = ", ".join(f"{a * 100:g}-{b * 100:g} cm" for a, b in bounds)
    return "\n\n".join(
        [
            cfg.publish.description,
            f"Product version {cfg.product_version} of run `{cfg.name}`: daily volumetric soil moisture "
            f"(m3 m-3) for the layers {layers} on a regular {cfg.grid.resolution:g}-degree grid, with the "
            "ensemble spread. NaN over sea.",
            f"Method after SoMo.ml; please cite: {METHOD_CITATION}",
        ]
    )


def build_collection(
    cfg: RunConfig, ds: xr.Dataset, asset_href: str, links: Sequence[LinkSpec] = ()
) -> pystac.Collection:
    """The STAC Collection of product dataset `ds` (opened lazily; only coordinates and attributes are
    read), with one collection-level Zarr asset at `asset_href`."""
    import pystac
    from pystac.extensions.datacube import DatacubeExtension, Dimension, Variable
    from pystac.extensions.xarray_assets import XarrayAssetsExtension

    time = ds["time"].values
    pub = cfg.publish
    collection = pystac.Collection(
        id=pub.collection_id,
        title=pub.title,
        description=_description(cfg, ds),
        extent=pystac.Extent(
            pystac.SpatialExtent([spatial_bbox(ds, cfg.grid.resolution)]),
            pystac.TemporalExtent([[_utc(time[0]), _utc(time[-1])]]),
        ),
        license=pub.license,
        keywords=list(pub.keywords),
        providers=[
            pystac.Provider(
                name=p.name,
                description=p.description,
                roles=[pystac.ProviderRole(r) for r in p.roles] or None,
                url=p.url,
            )
            for p in pub.providers
        ],
        catalog_type=pystac.CatalogType.SELF_CONTAINED,
    )
    cube = DatacubeExtension.ext(collection, add_if_missing=True)
    cube.apply(
        dimensions={k: Dimension.from_dict(v) for k, v in cube_dimensions(ds, cfg.grid.resolution).items()},
        variables={k: Variable(v) for k, v in cube_variables(ds).items()},
    )
    asset = pystac.Asset(
        href=asset_href,
        title="Product Zarr store",
        description="Consolidated Zarr (format 3) with dims time, depth, lat, lon",
        media_type=ZARR_MEDIA_TYPE,
        roles=["data", "zarr"],
    )
    collection.add_asset("zarr", asset)
    XarrayAssetsExtension.ext(asset, add_if_missing=True)  # declares the extension on the collection
    asset.extra_fields["xarray:open_kwargs"] = dict(OPEN_KWARGS) | {"chunks": stores.write_unit_chunks(ds)}
    if pub.public_read:
        asset.extra_fields["xarray:storage_options"] = dict(PUBLIC_STORAGE_OPTIONS)
    collection.add_link(
        pystac.Link("related", METHOD_DOI_URL, media_type="text/html", title=f"Method: {METHOD_CITATION}")
    )
    for link in links:
        collection.add_link(pystac.Link(link.rel, link.href, media_type=link.media_type, title=link.title))
    return collection


NETCDF_MEDIA_TYPE = "application/netcdf"


def year_items(
    cfg: RunConfig, ds: xr.Dataset, files: Mapping[int, Sequence[tuple[int, str]]]
) -> list[pystac.Item]:
    """One Item per year of the NetCDF export (SoMo.ml v1's distribution unit), one asset per layer.

    `files` maps a year to (layer, href) pairs; the Item spans the product's days of that year."""
    import pandas as pd
    import pystac

    bbox = spatial_bbox(ds, cfg.grid.resolution)
    west, south, east, north = bbox
    geometry = {
        "type": "Polygon",
        "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
    }
    bounds = ds["depth_bnds"].values.tolist()
    time = ds["time"].values
    years = pd.DatetimeIndex(time).year
    items = []
    for year, layers in sorted(files.items()):
        days = time[years == year]
        if not days.size:
            continue
        item = pystac.Item(
            id=f"{cfg.publish.collection_id}-{year}",
            geometry=geometry,
            bbox=bbox,
            datetime=None,
            start_datetime=_utc(days[0]),
            end_datetime=_utc(days[-1]),
            properties={"title": f"{cfg.publish.title}, {year}"},
            collection=cfg.publish.collection_id,
        )
        for layer, href in layers:
            top, bottom = bounds[layer - 1]
            item.add_asset(
                f"layer{layer}",
                pystac.Asset(
                    href=href,
                    title=f"Layer {layer} ({top * 100:g}-{bottom * 100:g} cm), {year}: CF-1.11 NetCDF",
                    media_type=NETCDF_MEDIA_TYPE,
                    roles=["data"],
                ),
            )
        items.append(item)
    return items


def item_url(stac_dir: str, item: pystac.Item) -> str:
    """Where an Item of the collection at `<stac_dir>/collection.json` is written."""
    return stores.join(stac_dir, "items", f"{item.id}.json")


def collection_dict(collection: pystac.Collection, url: str) -> dict[str, Any]:
    """The collection as JSON data for `url`: self-contained (relative root link, no self link)."""
    collection.set_self_href(url)
    data: dict[str, Any] = collection.to_dict(include_self_link=False)
    return data


PUBLIC_STORAGE_OPTIONS = {"anon": True}
"""The only storage options ever published: those of a product published for anonymous read."""


def assert_no_storage_options(data: Mapping[str, Any], where: str) -> None:
    """Refuse to publish storage options (endpoints and keys are run-time only), except `{"anon": true}`
    as the asset's `xarray:storage_options`."""
    assets = dict(data.get("assets", {}))
    public = [a.get("xarray:storage_options") for a in assets.values() if "xarray:storage_options" in a]
    rest = {**data, "assets": {k: {f: v for f, v in a.items() if f != "xarray:storage_options"}
                               for k, a in assets.items()}}  # fmt: skip
    if "storage_options" in json.dumps(rest) or any(o != PUBLIC_STORAGE_OPTIONS for o in public):
        raise ValueError(
            f"{where}: storage options must not be published in STAC (only {PUBLIC_STORAGE_OPTIONS})"
        )


def write_collection(collection: pystac.Collection, url: str, items: Sequence[pystac.Item] = ()) -> list[str]:
    """Validate offline and write `collection` as JSON to `url`, and its `items` next to it (`item_url`);
    returns the URLs written, the collection's first. Items are written first, so a reader who finds the
    collection finds its items."""
    validator = offline_validator()
    stac_dir = parent(url)
    collection.set_self_href(url)
    for item in items:
        collection.add_item(item)
        item.set_self_href(item_url(stac_dir, item))
    validate_collection(collection)
    written = []
    for item in items:
        item.validate(validator=validator)
        data = item.to_dict(include_self_link=False, transform_hrefs=True)
        assert_no_storage_options(data, item_url(stac_dir, item))
        stores.write_text(item_url(stac_dir, item), json.dumps(data, indent=2) + "\n")
        written.append(item_url(stac_dir, item))
    data = collection_dict(collection, url)
    assert_no_storage_options(data, url)
    stores.write_text(url, json.dumps(data, indent=2) + "\n")
    return [url, *written]
