"""The product's Intake 2 catalog: entries per layer and product version, and a validated parameter.

Entries are `XArrayDatasetReader`s over `datatypes.Zarr(..., storage_options="{STORAGE_OPTIONS}")`, so the
storage options an analyst passes to `intake.open_catalog(url, storage_options=...)` reach the product
store; the YAML itself never holds an endpoint or a credential. Layer entries are pipelines
`reader.sel(depth=...)`. Entries get names with `give_name`, so `list(catalog)` lists them:

- `soil_moisture` and `soil_moisture_<top>_<bottom>cm`: the version being published (the latest);
- `soil_moisture_v<version>` and `soil_moisture_v<version>_<top>_<bottom>cm` for every version published
  to the same catalog: publishing a new version keeps the entries of the others;
- `soil_moisture_layer`: one layer chosen by the catalog-level parameter `depth` (m), validated against
  the product's depths: `cat(depth=0.2).soil_moisture_layer.read()`; another value raises `ValueError`.

intake 2.0.9 drops a parameter's class when it writes YAML, and reads it back as a plain parameter that
accepts anything; the class is written back here, so intake validates on read.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from somocloud import stores
from somocloud.publish._hrefs import href_from, parent

log = logging.getLogger(__name__)

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


LAYER_ENTRY = "soil_moisture_layer"
"""Name of the entry that opens the layer chosen by the catalog parameter `depth`."""
DEPTH_PARAMETER = "depth"
PARAMETER_CLASS = "intake.readers.user_parameters:OptionsUserParameter"


def version_tag(version: str) -> str:
    """`1.0.0` → `v1_0_0`, for entry names."""
    return "v" + "".join(c if c.isalnum() else "_" for c in version)


def entry_names(version: str, depth_bounds: Sequence[Sequence[float]]) -> list[str]:
    """Every entry name a product version gets (unversioned, versioned, the parameterised layer)."""
    layers = [layer_entry_name(top, bottom) for top, bottom in depth_bounds]
    tag = version_tag(version)
    versioned = [f"{WHOLE_ENTRY}_{tag}"] + [n.replace(WHOLE_ENTRY, f"{WHOLE_ENTRY}_{tag}", 1) for n in layers]
    return [WHOLE_ENTRY, *layers, LAYER_ENTRY, *versioned]


def build_catalog(
    product_url: str,
    depths: Sequence[float],
    depth_bounds: Sequence[Sequence[float]],
    metadata: Mapping[str, Any],
    entry_metadata: Mapping[str, Any] | None = None,
    chunks: Mapping[str, int] | None = None,
    version: str = "0",
) -> Any:
    """An `intake.entry.Catalog` with the whole-product entry, one entry per layer (each also under a
    versioned name) and the `depth`-parameterised layer entry.

    `product_url` is written as given (it may use `{CATALOG_DIR}`); `metadata` becomes the catalog's;
    `chunks` are the dask chunks readers get (default: the Zarr chunks)."""
    import intake
    from intake.readers import datatypes, readers
    from intake.readers.user_parameters import OptionsUserParameter

    data = datatypes.Zarr(url=product_url, storage_options="{STORAGE_OPTIONS}")
    base_meta = dict(entry_metadata or {}) | {"version": version}
    reader = readers.XArrayDatasetReader(
        data,
        chunks=dict(chunks or {}),
        consolidated=True,
        metadata=base_meta | {"description": "All layers: dims time, depth, lat, lon"},
    )
    cat = intake.entry.Catalog(metadata=dict(metadata))
    names = iter(entry_names(version, depth_bounds))
    whole = cat.add_entry(reader)
    cat.give_name(whole, next(names))
    layer_tokens = []
    for depth, (top, bottom) in zip(depths, depth_bounds, strict=True):
        layer = reader.sel(depth=float(depth), method="nearest")
        # A fresh dict: the pipeline would otherwise share (and overwrite) the reader's metadata.
        layer.metadata = base_meta | {
            "description": f"Layer {top * 100:g}-{bottom * 100:g} cm (depth {depth:g} m): dims time, lat, lon",
            "depth": float(depth),
            "depth_bounds": [float(top), float(bottom)],
        }
        layer_tokens.append(cat.add_entry(layer))
        cat.give_name(layer_tokens[-1], next(names))
    # Exact selection: the parameter, not `method="nearest"`, decides which depths are valid.
    chosen = reader.sel(depth=float(depths[0]))
    chosen.metadata = base_meta | {
        "description": f"The layer at `depth` (m; one of {[float(d) for d in depths]}): dims time, lat, lon"
    }
    cat.give_name(cat.add_entry(chosen), next(names))
    cat.extract_parameter(
        item=LAYER_ENTRY,
        name=DEPTH_PARAMETER,
        value=float(depths[0]),
        cls=OptionsUserParameter,
        options=[float(d) for d in depths],
        dtype=float,
        description="mid-depth of the layer (m)",
    )
    cat.promote_parameter_name(DEPTH_PARAMETER, level="cat")
    for token in [whole, *layer_tokens]:  # the same entries under their versioned names
        cat.give_name(token, next(names))
    return cat


def catalog_document(catalog: Any, previous: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The catalog as YAML data: parameter classes restored, and the versioned entries of other versions
    taken over from `previous` (the catalog published before, as YAML data)."""
    doc: dict[str, Any] = catalog.to_dict()
    for ups in [doc.get("user_parameters", {})] + [
        e.get("user_parameters", {}) for e in doc["entries"].values()
    ]:
        if DEPTH_PARAMETER in ups:
            ups[DEPTH_PARAMETER]["cls"] = PARAMETER_CLASS
    current = {e.get("metadata", {}).get("version") for e in doc["entries"].values()}
    kept = []
    prev = previous or {}
    for alias, token in prev.get("aliases", {}).items():
        version = prev.get("entries", {}).get(token, {}).get("metadata", {}).get("version")
        if alias.startswith(f"{WHOLE_ENTRY}_v") and version not in current and alias not in doc["aliases"]:
            doc["aliases"][alias] = token
            _copy_with_references(token, prev, doc)
            kept.append(version)
    doc["metadata"]["versions"] = sorted({*current, *kept} - {None})
    return doc


def _copy_with_references(token: str, source: Mapping[str, Any], dest: dict[str, Any]) -> None:
    """Copy entry or data `token` from `source` to `dest`, with every token it refers to (`{data(...)}`)."""
    for section in ("entries", "data"):
        if token in source.get(section, {}) and token not in dest.setdefault(section, {}):
            dest[section][token] = source[section][token]
            for ref in re.findall(r"\{data\(([^)]+)\)\}", json.dumps(source[section][token], default=str)):
                _copy_with_references(ref, source, dest)


def previous_document(url: str) -> dict[str, Any] | None:
    """The catalog already published at `url` as YAML data, or None (none, or not readable as a catalog)."""
    import yaml

    if not stores.exists(url):
        return None
    try:
        doc = yaml.safe_load(stores.read_text(url))
    except yaml.YAMLError as exc:
        log.warning("%s: not a YAML catalog (%s); earlier versions' entries are not kept", url, exc)
        return None
    return doc if isinstance(doc, dict) and "aliases" in doc else None


def _secret_values(url: str) -> list[str]:
    """String storage-option values for `url` (endpoint, keys) that must never appear in the file."""
    return [v for v in stores.storage_options(url).values() if isinstance(v, str) and v]


def write_catalog(catalog: Any, url: str) -> str:
    """Write the catalog YAML to `url` (any store), keeping the versioned entries of other versions
    already published there; returns `url`.

    The written text is checked to hold no storage option of this process (endpoint, keys)."""
    import yaml

    doc = catalog_document(catalog, previous_document(url))
    text = yaml.safe_dump(doc, sort_keys=True)
    if any(secret in text for secret in _secret_values(url)) or "endpoint_url" in text:
        raise ValueError(f"{url}: the catalog would publish storage options; not written")
    stores.write_text(url, text)
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
