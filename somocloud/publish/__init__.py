"""`publish`: the STAC Collection and the Intake catalog of a finished product.

Refuses a product whose root attribute `complete` is not true. Writes `<stac>/collection.json`
(validated offline against vendored schemas) and the Intake 2 catalog YAML at `stores.catalog`, then
re-opens the catalog to check that every entry opens. Neither file holds storage options.
"""

from __future__ import annotations

import logging
from typing import Any

from somocloud import provenance, stores
from somocloud.config import RunConfig
from somocloud.context import Context
from somocloud.layers import DEPTH_BOUNDS
from somocloud.publish._hrefs import href_from, parent

log = logging.getLogger(__name__)

__all__ = ["ProductNotCompleteError", "check_complete", "publish"]


class ProductNotCompleteError(RuntimeError):
    """The product store is not marked complete, so it must not be published."""


def check_complete(product_url: str) -> dict[str, Any]:
    """The product's root attributes, after checking that `complete` is true."""
    if not stores.exists(stores.join(product_url, "zarr.json")):
        raise FileNotFoundError(f"no product Zarr store at {product_url} (run `predict` first)")
    attrs = stores.zarr_attrs(product_url)
    if attrs.get("complete") is not True:
        raise ProductNotCompleteError(
            f"refusing to publish {product_url}: its root attribute 'complete' is "
            f"{attrs.get('complete')!r}, not true; finish every `predict` task and its finalise step first"
        )
    return attrs


def _side_links(cfg: RunConfig, stac_dir: str) -> list[Any]:
    """Links from the collection to the Intake catalog, the model manifest and the evaluation summary."""
    from somocloud.publish.stac import LinkSpec

    links = [
        LinkSpec("related", href_from(stac_dir, cfg.store("catalog")), "application/yaml", "Intake catalog")
    ]
    documents = [
        ("related", "model", "manifest.json", "application/json", "Model artifact manifest"),
        ("related", "evaluation", "summary.json", "application/json", "Evaluation summary (skill)"),
        ("describedby", "report", "index.html", "text/html", "Validation report"),
    ]
    for rel, store, name, media_type, title in documents:
        url = stores.join(cfg.store(store), name)
        if stores.exists(url):
            links.append(LinkSpec(rel, href_from(stac_dir, url), media_type, title))
        else:
            log.warning("%s not found at %s: the collection will not link it", title, url)
    return links


PUBLISHED_STORES = ("product", "stac", "catalog", "report", "evaluation", "model", "netcdf")
"""What `publish.object_acl` applies to: the product and everything the collection links."""


def apply_object_acl(cfg: RunConfig, acl: str) -> int:
    """Set the canned ACL `acl` on every S3 object of the published stores; returns how many."""
    count = 0
    for name in PUBLISHED_STORES:
        url = cfg.store(name)
        if stores.protocol(url) != "s3":
            continue
        fs, path = stores.filesystem(url)
        objects = [path] if fs.isfile(path) else fs.find(path)
        for key in objects:
            fs.chmod(key, acl)
        count += len(objects)
    return count


def _catalog_metadata(cfg: RunConfig, attrs: dict[str, Any], collection_href: str) -> dict[str, Any]:
    from somocloud.publish.stac import METHOD_CITATION

    metadata = {
        "name": cfg.publish.collection_id,
        "title": cfg.publish.title,
        "description": cfg.publish.description,
        "version": cfg.product_version,
        "license": cfg.publish.license,
        "citation": METHOD_CITATION,
        "stac": collection_href,
        "product_content_id": attrs.get(provenance.CONTENT_ID),
        "model_content_id": attrs.get("model_content_id"),
    }
    return {k: v for k, v in metadata.items() if v is not None}


def publish(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """Write the STAC Collection and the Intake catalog of the complete product.

    Returns `{"stac": <collection.json URL>, "catalog": <catalog URL>}`."""
    from somocloud.publish import intake_catalog, stac
    from somocloud.publish.netcdf import exported_files

    product_url = cfg.store("product")
    attrs = check_complete(product_url)
    ds = stores.open_zarr(product_url)
    stac_dir = cfg.store("stac")
    collection_url = stores.join(stac_dir, "collection.json")
    catalog_url = cfg.store("catalog")
    public = cfg.publish.public_href

    collection = stac.build_collection(
        cfg, ds, public or href_from(stac_dir, product_url), _side_links(cfg, stac_dir)
    )
    items_dir = stores.join(stac_dir, "items")
    files = {
        year: [(layer, href_from(items_dir, url)) for layer, url in layers]
        for year, layers in exported_files(cfg, ds).items()
    }
    written = stac.write_collection(collection, collection_url, stac.year_items(cfg, ds, files))
    log.info("wrote STAC collection %s with %d items (validated offline)", collection_url, len(written) - 1)

    bounds = ds["depth_bnds"].values.tolist() if "depth_bnds" in ds else DEPTH_BOUNDS.tolist()
    cat = intake_catalog.build_catalog(
        public or intake_catalog.catalog_product_url(catalog_url, product_url),
        [float(d) for d in ds["depth"].values],
        bounds,
        _catalog_metadata(cfg, attrs, href_from(parent(catalog_url), collection_url)),
        {"units": str(ds["soil_moisture"].attrs.get("units", "m3 m-3"))},
        stores.write_unit_chunks(ds),
        cfg.product_version,
    )
    intake_catalog.write_catalog(cat, catalog_url)
    names = intake_catalog.entry_names(cfg.product_version, bounds)
    if public is None:  # a public URL may not be reachable from here; the stores are
        intake_catalog.check_catalog(catalog_url, names)
    log.info("wrote Intake catalog %s with entries %s", catalog_url, ", ".join(names))
    if cfg.publish.object_acl:
        n = apply_object_acl(cfg, cfg.publish.object_acl)
        log.info("set ACL %s on %d published objects", cfg.publish.object_acl, n)
    return {"stac": collection_url, "catalog": catalog_url}
