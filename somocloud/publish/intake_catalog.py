"""The product's Intake 2 catalog: one entry for the whole product and one per soil layer.

Entries are `XArrayDatasetReader`s over `datatypes.Zarr(..., storage_options="{STORAGE_OPTIONS}")`, so the
storage options an analyst passes to `intake.open_catalog(url, storage_options=...)` reach the product
store; the YAML itself never holds an endpoint or a credential. Layer entries are pipelines
`reader.sel(depth=...)`. Entries get names with `give_name`, so `list(catalog)` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from somocloud import stores
from somocloud.publish._hrefs import href_from, parent

WHOLE_ENTRY = "soil_moisture"
"""Name of the entry that opens the whole product."""


def layer_entry_name(top: float, bottom: float) -> str:
    """Entry name of the layer between `top` and `bottom` (m), e.g. `soil_moisture_0_10cm`."""
    return f"{WHOLE_ENTRY}_{round(top * 100)}_{round(bottom * 100)}cm"


def catalog_product_url(catalog_url: str, product_url: str) -> str:
    """The product URL as the catalog names it: `{CATALOG_DIR}`-relative between local paths, else absolute."""
    href = href_from(parent(catalog_url), product_url)
    if href == product_url:
        return product_url
    return "{CATALOG_DIR}/" + href.removeprefix("./")


def build_catalog(
    product_url: str,
    depths: Sequence[float],
    depth_bounds: Sequence[Sequence[float]],
    metadata: Mapping[str, Any],
    entry_metadata: Mapping[str, Any] | None = None,
    chunks: Mapping[str, int] | None = None,
) -> Any:
    """An `intake.entry.Catalog` with the whole-product entry and one entry per layer.

    `product_url` is written as given (it may use `{CATALOG_DIR}`); `metadata` becomes the catalog's;
    `chunks` are the dask chunks readers get (default: the Zarr chunks)."""
    import intake
    from intake.readers import datatypes, readers

    data = datatypes.Zarr(url=product_url, storage_options="{STORAGE_OPTIONS}")
    base_meta = dict(entry_metadata or {})
    reader = readers.XArrayDatasetReader(
        data,
        chunks=dict(chunks or {}),
        consolidated=True,
        metadata=base_meta | {"description": "All layers: dims time, depth, lat, lon"},
    )
    cat = intake.entry.Catalog(metadata=dict(metadata))
    cat.give_name(cat.add_entry(reader), WHOLE_ENTRY)
    for depth, (top, bottom) in zip(depths, depth_bounds, strict=True):
        layer = reader.sel(depth=float(depth), method="nearest")
        # A fresh dict: the pipeline would otherwise share (and overwrite) the reader's metadata.
        layer.metadata = base_meta | {
            "description": f"Layer {top * 100:g}-{bottom * 100:g} cm (depth {depth:g} m): dims time, lat, lon",
            "depth": float(depth),
            "depth_bounds": [float(top), float(bottom)],
        }
        cat.give_name(cat.add_entry(layer), layer_entry_name(top, bottom))
    return cat


def _secret_values(url: str) -> list[str]:
    """String storage-option values for `url` (endpoint, keys) that must never appear in the file."""
    return [v for v in stores.storage_options(url).values() if isinstance(v, str) and v]


def write_catalog(catalog: Any, url: str) -> str:
    """Write the catalog YAML to `url` (any store); returns `url`.

    The storage options are used only to open the file for writing; the written text is checked to hold
    none of them."""
    opts = stores.storage_options(url)
    if stores.protocol(url) == "file":
        fs, path = stores.filesystem(url)
        fs.makedirs(parent(path), exist_ok=True)
    catalog.to_yaml_file(url, **opts)
    text = stores.read_text(url)
    if any(secret in text for secret in _secret_values(url)) or "endpoint_url" in text:
        stores.remove(url)
        raise ValueError(f"{url}: the catalog would publish storage options; removed it")
    return url


def open_catalog(url: str) -> Any:
    """Open a catalog written by `write_catalog`, passing this process's storage options through."""
    import intake

    return intake.open_catalog(url, storage_options=stores.storage_options(url))


def check_catalog(url: str, expected: Sequence[str]) -> None:
    """Re-open the written catalog and open every entry lazily (metadata only); raise if one fails."""
    cat = open_catalog(url)
    names = list(cat)
    missing = [n for n in expected if n not in names]
    if missing:
        raise ValueError(f"{url}: entries {missing} are missing (found {names})")
    for name in expected:
        try:
            ds = cat[name].read()
        except Exception as exc:
            message = str(exc)
            for secret in _secret_values(url):  # never echo an endpoint or key
                message = message.replace(secret, "***")
            raise RuntimeError(
                f"{url}: entry {name!r} cannot be opened: {type(exc).__name__}: {message}"
            ) from None
        if "soil_moisture" not in ds:
            raise ValueError(f"{url}: entry {name!r} has no soil_moisture variable")
