"""`publish`: STAC validated offline, refusal of incomplete products, Intake catalog round trips (local
and S3 through a moto server), no storage options or secrets in anything written."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import numpy as np
import pandas as pd
import pystac
import pytest
import xarray as xr
from pystac.errors import STACValidationError
from pystac.validation.stac_validator import GetSchemaError

from somocloud import stores
from somocloud.config import RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.layers import DEPTH_BOUNDS, DEPTHS
from somocloud.publish import ProductNotCompleteError, publish
from somocloud.publish.stac import DATACUBE_SCHEMA, XARRAY_SCHEMA, validate_collection

from .conftest import ACCESS_KEY, BUCKET, SECRET_KEY

LAYER_ENTRIES = ["soil_moisture_0_10cm", "soil_moisture_10_30cm", "soil_moisture_30_50cm"]


# --- a tiny complete product -----------------------------------------------------------------------------


def _config(root: str, **publish: object) -> RunConfig:
    return config_from_dict(
        {
            "name": "tiny",
            "product_version": "9.9.9",
            "grid": {
                "resolution": 0.5,
                "lat_min": 40.0,
                "lat_max": 41.5,
                "lon_min": -100.0,
                "lon_max": -99.0,
            },
            "period": {"start": "2020-01-01", "end": "2020-02-29"},
            "stores": {"root": root},
            "publish": {"collection_id": "tiny-sm", "title": "Tiny soil moisture", **publish},
        }
    )


def _write_product(cfg: RunConfig, complete: object = True) -> xr.Dataset:
    grid = Grid.from_config(cfg.grid)
    time = pd.date_range(cfg.period.start, cfg.period.end)
    rng = np.random.default_rng(1)
    sm = (0.1 + 0.3 * rng.random((len(time), 3, *grid.shape))).astype("float32")
    sm[:, :, 0, 0] = np.nan  # a sea cell
    dims = ("time", "depth", "lat", "lon")
    ds = xr.Dataset(
        {
            "soil_moisture": (
                dims,
                sm,
                {
                    "units": "m3 m-3",
                    "long_name": "volumetric soil moisture (ensemble mean)",
                    "standard_name": "volume_fraction_of_condensed_water_in_soil",
                },
            ),
            "soil_moisture_spread": (dims, sm * np.float32(0.1), {"units": "m3 m-3"}),
            "depth_bnds": (("depth", "nv"), DEPTH_BOUNDS),
        },
        coords={"time": time, "depth": DEPTHS, **grid.coords()},
        attrs={"model_content_id": "abc123"} | ({} if complete is None else {"complete": complete}),
    )
    encoding = {"soil_moisture": {"chunks": (10, 3, 2, 2), "shards": (30, 3, 2, 2)}}  # as predict shards it
    stores.write_zarr(ds, cfg.store("product"), encoding=encoding)
    return ds


def _write_side_documents(cfg: RunConfig) -> None:
    stores.write_json(stores.join(cfg.store("model"), "manifest.json"), {"format": "x", "files": {}})
    stores.write_json(stores.join(cfg.store("evaluation"), "summary.json"), {"medians": []})


@pytest.fixture()
def local_run(tmp_path: Path) -> tuple[RunConfig, xr.Dataset]:
    cfg = _config(str(tmp_path / "run"))
    ds = _write_product(cfg)
    _write_side_documents(cfg)
    return cfg, ds


def _collection_json(cfg: RunConfig) -> dict:
    return json.loads(stores.read_text(stores.join(cfg.store("stac"), "collection.json")))


def _as_collection(cfg: RunConfig, data: dict) -> pystac.Collection:
    return pystac.Collection.from_dict(data, href=stores.join(cfg.store("stac"), "collection.json"))


# --- refusal --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("complete", [False, None, "true", 1])
def test_refuses_incomplete_product(tmp_path: Path, complete: object) -> None:
    cfg = _config(str(tmp_path))
    _write_product(cfg, complete=complete)
    with pytest.raises(
        ProductNotCompleteError, match=r"refusing to publish .*soil_moisture\.zarr.*'complete'"
    ):
        publish(cfg, Context(show_progress=False))
    assert not stores.exists(stores.join(cfg.store("stac"), "collection.json"))
    assert not stores.exists(cfg.store("catalog"))


def test_refuses_missing_product(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no product Zarr store"):
        publish(_config(str(tmp_path)), Context(show_progress=False))


# --- STAC -------------------------------------------------------------------------------------------------


def test_stac_collection_content(local_run: tuple[RunConfig, xr.Dataset]) -> None:
    cfg, ds = local_run
    urls = publish(cfg, Context(show_progress=False))
    coll_url = stores.join(cfg.store("stac"), "collection.json")
    assert urls == {"stac": coll_url, "catalog": cfg.store("catalog")}
    data = _collection_json(cfg)

    assert (
        data["id"] == "tiny-sm" and data["title"] == "Tiny soil moisture" and data["license"] == "CC-BY-4.0"
    )
    assert "10.1038/s41597-021-00964-1" in data["description"]
    assert set(data["stac_extensions"]) == {DATACUBE_SCHEMA, XARRAY_SCHEMA}
    assert data["extent"]["spatial"]["bbox"] == [[-100.0, 40.0, -99.0, 41.5]]  # cell edges
    assert data["extent"]["temporal"]["interval"] == [["2020-01-01T00:00:00Z", "2020-02-29T00:00:00Z"]]
    dims = data["cube:dimensions"]
    assert dims["lon"] == {
        "type": "spatial",
        "axis": "x",
        "extent": [-99.75, -99.25],
        "step": 0.5,
        "reference_system": 4326,
        "description": dims["lon"]["description"],
    }
    assert dims["lat"]["axis"] == "y" and dims["lat"]["extent"] == [40.25, 41.25]
    assert dims["time"]["step"] == "P1D"
    assert dims["depth"]["axis"] == "z" and dims["depth"]["values"] == [0.05, 0.2, 0.4]
    assert dims["depth"]["unit"] == "m"
    variables = data["cube:variables"]
    assert set(variables) == {"soil_moisture", "soil_moisture_spread"}
    assert variables["soil_moisture"]["dimensions"] == ["time", "depth", "lat", "lon"]
    assert variables["soil_moisture"]["unit"] == "m3 m-3"

    asset = data["assets"]["zarr"]
    assert asset["type"] == "application/vnd.zarr" and asset["roles"] == ["data", "zarr"]
    # dask chunks of one shard, not xarray's default of one inner chunk
    one_shard = {"time": 30, "depth": 3, "lat": 2, "lon": 2, "nv": 2}
    assert asset["xarray:open_kwargs"] == {"engine": "zarr", "chunks": one_shard, "consolidated": True}
    assert "storage_options" not in json.dumps(data)
    assert all(link["rel"] != "self" for link in data["links"])
    titles = {link["title"]: link["href"] for link in data["links"] if link["rel"] == "related"}
    assert titles["Model artifact manifest"] == "../model/manifest.json"
    assert titles["Evaluation summary (skill)"] == "../evaluation/summary.json"
    assert titles["Intake catalog"] == "../catalog.yaml"

    # Read back the way an analyst does: the relative asset href resolves to the product, which opens.
    coll = pystac.Collection.from_file(coll_url)
    href = coll.assets["zarr"].get_absolute_href()
    assert Path(href) == Path(cfg.store("product")).resolve()
    opened = xr.open_dataset(href, **coll.assets["zarr"].extra_fields["xarray:open_kwargs"])
    xr.testing.assert_identical(opened["soil_moisture"].load(), ds["soil_moisture"])


def test_stac_validates_offline(
    local_run: tuple[RunConfig, xr.Dataset], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, _ = local_run
    publish(cfg, Context(show_progress=False))

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    coll = _as_collection(cfg, _collection_json(cfg))
    used = validate_collection(coll)
    assert DATACUBE_SCHEMA in used and XARRAY_SCHEMA in used and len(used) == 3


@pytest.mark.parametrize(
    "breakage",
    [
        lambda d: d["cube:dimensions"]["lon"].update(axis="q"),  # axis must be x or y
        lambda d: d["cube:dimensions"]["depth"].pop("values") and d["cube:dimensions"]["depth"].pop("extent"),
        lambda d: d["cube:dimensions"]["time"].pop("extent"),
        lambda d: d["cube:dimensions"]["lat"].update(reference_system=-5),
        lambda d: d["assets"]["zarr"].update({"xarray:open_kwargs": "engine=zarr"}),
    ],
)
def test_invalid_collection_fails_validation(local_run: tuple[RunConfig, xr.Dataset], breakage) -> None:
    cfg, _ = local_run
    publish(cfg, Context(show_progress=False))
    data = _collection_json(cfg)
    breakage(data)
    with pytest.raises(STACValidationError):
        validate_collection(_as_collection(cfg, data))


def test_unvendored_extension_is_refused_not_fetched(local_run: tuple[RunConfig, xr.Dataset]) -> None:
    cfg, _ = local_run
    publish(cfg, Context(show_progress=False))
    data = _collection_json(cfg)
    data["stac_extensions"].append("https://stac-extensions.github.io/eo/v1.1.0/schema.json")
    with pytest.raises(GetSchemaError, match="not vendored"):
        validate_collection(_as_collection(cfg, data))


def test_public_href_is_used(tmp_path: Path) -> None:
    cfg = _config(str(tmp_path), public_href="https://data.example.org/somo/v1.zarr")
    _write_product(cfg)
    publish(cfg, Context(show_progress=False))
    assert _collection_json(cfg)["assets"]["zarr"]["href"] == "https://data.example.org/somo/v1.zarr"
    assert "url: https://data.example.org/somo/v1.zarr" in Path(cfg.store("catalog")).read_text()


# --- Intake -----------------------------------------------------------------------------------------------


def test_intake_catalog_local_round_trip(local_run: tuple[RunConfig, xr.Dataset], tmp_path: Path) -> None:
    import intake

    cfg, ds = local_run
    publish(cfg, Context(show_progress=False))
    first = Path(cfg.store("catalog")).read_text()
    publish(cfg, Context(show_progress=False))  # a rerun replaces both files with the same content
    assert Path(cfg.store("catalog")).read_text() == first
    cat = intake.open_catalog(cfg.store("catalog"))
    versioned = [
        n.replace("soil_moisture", "soil_moisture_v9_9_9", 1) for n in ["soil_moisture", *LAYER_ENTRIES]
    ]
    assert list(cat) == ["soil_moisture", *LAYER_ENTRIES, "soil_moisture_layer", *versioned]
    assert cat.metadata["name"] == "tiny-sm" and cat.metadata["version"] == "9.9.9"
    assert cat.metadata["stac"] == "./stac/collection.json"
    whole = cat.soil_moisture.read()
    assert whole["soil_moisture"].data.chunksize == (30, 3, 2, 2)  # lazy, one dask chunk per shard
    xr.testing.assert_identical(whole["soil_moisture"].load(), ds["soil_moisture"])
    middle = cat.soil_moisture_10_30cm.read()
    assert "depth" not in middle["soil_moisture"].dims
    np.testing.assert_array_equal(middle["soil_moisture"].values, ds["soil_moisture"].values[:, 1])

    # The product is named relative to the catalog, so the published folder can move.
    moved = tmp_path / "moved"
    shutil.copytree(Path(cfg.stores.root), moved)
    shutil.rmtree(cfg.stores.root)
    again = intake.open_catalog(str(moved / "catalog.yaml"))
    np.testing.assert_array_equal(
        again.soil_moisture_30_50cm.read()["soil_moisture"].values, ds["soil_moisture"].values[:, 2]
    )


def test_catalog_depth_parameter_is_validated(local_run: tuple[RunConfig, xr.Dataset]) -> None:
    import intake

    cfg, ds = local_run
    publish(cfg, Context(show_progress=False))
    cat = intake.open_catalog(cfg.store("catalog"))
    first = cat.soil_moisture_layer.read()["soil_moisture"].values  # the default: the top layer
    np.testing.assert_array_equal(first, ds["soil_moisture"].values[:, 0])
    for k, depth in enumerate(DEPTHS):
        got = cat(depth=float(depth)).soil_moisture_layer.read()["soil_moisture"].values
        np.testing.assert_array_equal(got, ds["soil_moisture"].values[:, k])
    with pytest.raises(ValueError, match="Could not validate"):
        cat(depth=0.3).soil_moisture_layer.read()  # between layers: refused, not the nearest one


def test_catalog_keeps_the_entries_of_every_published_version(tmp_path: Path) -> None:
    import intake

    old = _config(str(tmp_path / "run"))  # version 9.9.9
    ds_old = _write_product(old)
    publish(old, Context(show_progress=False))
    new = old.model_copy(update={"product_version": "10.0.0"})
    new = new.model_copy(
        update={"stores": new.stores.model_copy(update={"product": str(tmp_path / "v10.zarr")})}
    )
    ds_new = _write_product(new)
    ds_new["soil_moisture"][:] = ds_old["soil_moisture"].values + 1  # tell them apart
    stores.write_zarr(ds_new, new.store("product"), encoding={"soil_moisture": {"chunks": (10, 3, 2, 2)}})
    publish(new, Context(show_progress=False))
    publish(new, Context(show_progress=False))  # republishing a version replaces its entries only
    cat = intake.open_catalog(new.store("catalog"))
    names = list(cat)
    assert cat.metadata["versions"] == ["10.0.0", "9.9.9"]
    for tag in ("v9_9_9", "v10_0_0"):
        assert [n for n in names if n.startswith(f"soil_moisture_{tag}")] == [
            f"soil_moisture_{tag}",
            *(n.replace("soil_moisture", f"soil_moisture_{tag}", 1) for n in LAYER_ENTRIES),
        ]
    old_top = cat.soil_moisture_v9_9_9_0_10cm.read()["soil_moisture"].values
    np.testing.assert_array_equal(old_top, ds_old["soil_moisture"].values[:, 0])
    latest = cat.soil_moisture_0_10cm.read()["soil_moisture"].values
    np.testing.assert_array_equal(latest, cat.soil_moisture_v10_0_0_0_10cm.read()["soil_moisture"].values)
    np.testing.assert_array_equal(latest, ds_old["soil_moisture"].values[:, 0] + 1)


def test_publish_on_s3(s3_endpoint: str) -> None:
    import intake

    root = f"s3://{BUCKET}/publish/tiny"
    cfg = _config(root)
    ds = _write_product(cfg)
    _write_side_documents(cfg)
    urls = publish(cfg, Context(show_progress=False))
    assert urls == {"stac": f"{root}/stac/collection.json", "catalog": f"{root}/catalog.yaml"}

    # An analyst names only the endpoint; the keys come from the environment.
    cat = intake.open_catalog(f"{root}/catalog.yaml", storage_options={"endpoint_url": s3_endpoint})
    assert list(cat)[:5] == ["soil_moisture", *LAYER_ENTRIES, "soil_moisture_layer"]
    np.testing.assert_array_equal(
        cat.soil_moisture.read()["soil_moisture"].values, ds["soil_moisture"].values
    )
    top = cat.soil_moisture_0_10cm.read()["soil_moisture"]
    np.testing.assert_array_equal(top.values, ds["soil_moisture"].values[:, 0])

    data = _collection_json(cfg)
    assert data["assets"]["zarr"]["href"] == f"{root}/product/soil_moisture.zarr"
    hrefs = {link["title"]: link["href"] for link in data["links"] if link["rel"] == "related"}
    assert hrefs["Model artifact manifest"] == f"{root}/model/manifest.json"

    # Nothing written holds the secret, the key id or the endpoint.
    port = s3_endpoint.rsplit(":", 1)[1]
    for url in urls.values():
        text = stores.read_text(url)
        for leak in (SECRET_KEY, ACCESS_KEY, s3_endpoint, port, "endpoint_url", 'storage_options": {'):
            assert leak not in text, (url, leak)
