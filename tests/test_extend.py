"""`extend --until`: a finished product extended by 30 days equals one made for the whole period at once,
finished chunks before the boundary are not rewritten, an interrupted extension resumes, STAC follows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from somocloud import extend as ext
from somocloud import steps, stores
from somocloud.config import RunConfig
from somocloud.context import Context

from .conftest import tiny_config

pytestmark = pytest.mark.slow

OLD_END, NEW_END = "2020-12-31", "2021-01-30"
# 120-day tasks: the old end (day 366) cuts the block [360, 480) short, so it is recomputed.
PREDICT = {"time_chunk": 120, "chunk_days": 60}


def _config(root: Path, end: str, **stores_: str) -> RunConfig:
    return tiny_config(
        str(root), period={"end": end}, predict=PREDICT, stores=stores_, extend={"until": NEW_END}
    )


def _chunk_objects(product: str) -> dict[str, tuple[int, int]]:
    """Every chunk object of `soil_moisture`: path → (mtime_ns, size)."""
    root = Path(product) / "soil_moisture"
    return {
        str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file() and p.name != "zarr.json"
    }


@pytest.fixture(scope="module")
def extended(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("extend")
    world = _config(root, NEW_END)  # the sources reach the new end: the forcing has "arrived"
    cfg = _config(root, OLD_END)
    with Context(show_progress=False) as ctx:
        steps.entry("synthetic")(world, ctx)
        for verb in (
            "forcing",
            "statics",
            "ingest",
            "targets",
            "train",
            "predict",
            "export-netcdf",
            "publish",
        ):
            steps.entry(verb)(cfg, ctx)
        before = _chunk_objects(cfg.store("product"))
        netcdf_before = {p.name: p.stat().st_mtime_ns for p in Path(cfg.store("netcdf")).glob("*.nc")}
        stac_before = stores.read_json(stores.join(cfg.store("stac"), "collection.json"))

        # An interrupted extension: only the first of two shares of its tasks ran.
        ctx.parts = (1, 2)
        ext.extend(cfg, ctx)
        interrupted = stores.zarr_attrs(cfg.store("product"))
        ctx.parts = None
        outputs = ext.extend(cfg, ctx)  # resumes

        # The same product made at once, from its own forcing cube, with the same model.
        whole = _config(
            root,
            NEW_END,
            forcing=str(root / "whole/forcing.zarr"),
            reference_sm=str(root / "whole/reference_sm.zarr"),
            product=str(root / "whole/product.zarr"),
        )
        steps.entry("forcing")(whole, ctx)
        steps.entry("predict")(whole, ctx)
    return {
        "cfg": cfg,
        "whole": whole,
        "before": before,
        "stac_before": stac_before,
        "netcdf_before": netcdf_before,
        "interrupted": interrupted,
        "outputs": outputs,
    }


def test_extension_equals_the_product_made_at_once(extended: dict) -> None:
    cfg, whole = extended["cfg"], extended["whole"]
    got = stores.open_zarr(cfg.store("product"))
    want = stores.open_zarr(whole.store("product"))
    assert got.sizes["time"] == want.sizes["time"] == 366 + 30
    np.testing.assert_array_equal(got["time"].values, want["time"].values)
    for name in ("soil_moisture", "soil_moisture_spread"):
        a, b = got[name].values, want[name].values
        assert np.isfinite(a[-30:]).any(), "the new days hold predictions"
        np.testing.assert_array_equal(a, b)
    assert got.attrs["complete"] is True
    assert got["soil_moisture"].encoding["shards"] == want["soil_moisture"].encoding["shards"]


def test_finished_chunks_before_the_boundary_are_untouched(extended: dict) -> None:
    before, product = extended["before"], extended["cfg"].store("product")
    after = _chunk_objects(product)
    # Shard keys are c/<time>/<depth>/<lat>/<lon>; shards 0-2 hold days 0-359, shard 3 the boundary.
    old = {k: v for k, v in before.items() if int(Path(k).parts[1]) < 3}
    assert old and all(after[k] == v for k, v in old.items())
    boundary = [k for k in before if int(Path(k).parts[1]) == 3]
    assert boundary and all(after[k] != before[k] for k in boundary), "the cut-short block is redone"
    assert any(int(Path(k).parts[1]) == 3 for k in set(after) - set(before)) or boundary


def test_interrupted_extension_is_recorded_then_finished(extended: dict) -> None:
    interrupted = extended["interrupted"]
    assert interrupted["complete"] is False
    record = json.loads(interrupted[ext.IN_PROGRESS])
    assert record["until"] == NEW_END and record["n_days_before"] == 366
    attrs = stores.zarr_attrs(extended["cfg"].store("product"))
    assert ext.IN_PROGRESS not in attrs
    history = json.loads(attrs[ext.HISTORY])
    assert [h["until"] for h in history] == [NEW_END] and history[0]["previous_end"] == OLD_END
    assert attrs["somocloud_content_id"] != attrs["somocloud_base_content_id"]


def test_stac_extent_and_catalog_follow_the_extension(extended: dict) -> None:
    cfg = extended["cfg"]
    assert "stac" in extended["outputs"]
    (old_interval,) = extended["stac_before"]["extent"]["temporal"]["interval"]
    collection = stores.read_json(stores.join(cfg.store("stac"), "collection.json"))
    (interval,) = collection["extent"]["temporal"]["interval"]
    assert old_interval[1].startswith(OLD_END) and interval[1].startswith(NEW_END)
    assert collection["cube:dimensions"]["time"]["extent"][1].startswith(NEW_END)

    # The exported product follows too: the new year's files are written, the finished year's kept.
    netcdf = {p.name: p.stat().st_mtime_ns for p in Path(cfg.store("netcdf")).glob("*.nc")}
    assert sorted(extended["netcdf_before"]) == [f"somocloud-tiny_layer{k}_2020.nc" for k in (1, 2, 3)]
    assert {n: netcdf[n] for n in extended["netcdf_before"]} == extended["netcdf_before"]
    assert sorted(set(netcdf) - set(extended["netcdf_before"])) == [
        f"somocloud-tiny_layer{k}_2021.nc" for k in (1, 2, 3)
    ]
    with xr.open_dataset(Path(cfg.store("netcdf")) / "somocloud-tiny_layer1_2021.nc") as f:
        assert f.sizes["time"] == 30
    items = sorted(p.name for p in (Path(cfg.store("stac")) / "items").glob("*.json"))
    assert items == ["somocloud-tiny-2020.json", "somocloud-tiny-2021.json"]

    from somocloud.publish.intake_catalog import open_catalog

    ds = open_catalog(cfg.store("catalog")).soil_moisture.read()
    assert str(ds["time"].values[-1]).startswith(NEW_END)


def test_predict_with_the_original_config_keeps_the_extended_product(extended: dict) -> None:
    cfg = extended["cfg"]
    before = _chunk_objects(cfg.store("product"))
    with Context(show_progress=False) as ctx:
        steps.entry("predict")(cfg, ctx)
        assert ext.extend(cfg, ctx) == {"product": cfg.store("product")}  # already there: nothing to do
    ds = xr.open_zarr(cfg.store("product"))
    assert ds.sizes["time"] == 396 and ds.attrs["complete"] is True
    assert _chunk_objects(cfg.store("product")) == before


def test_extension_past_the_forcing_fails_before_writing(extended: dict) -> None:
    cfg = extended["cfg"].model_copy(
        update={"extend": extended["cfg"].extend.model_copy(update={"until": None})}
    )
    with pytest.raises(ValueError, match="--until"):
        ext.extend(cfg, Context(show_progress=False))
    too_far = tiny_config(
        str(Path(extended["cfg"].stores.root)), period={"end": OLD_END}, predict=PREDICT,
        extend={"until": "2021-06-30"},
    )  # fmt: skip
    attrs = stores.zarr_attrs(too_far.store("product"))
    with pytest.raises(
        stores.StoreError, match=r"until 2021-06-30: the forcing .* not there yet.*era5_hourly"
    ):
        ext.extend(too_far, Context(show_progress=False))
    assert stores.zarr_attrs(too_far.store("product")) == attrs
    assert not os.path.exists(ext.extension_config(too_far, too_far.period.start, too_far.extend.until
                                                   ).store("forcing"))  # fmt: skip


def test_extend_is_a_cli_verb_with_until(extended: dict, tmp_path: Path) -> None:
    import subprocess
    import sys

    import yaml

    cfg = extended["cfg"].model_copy(
        update={"extend": extended["cfg"].extend.model_copy(update={"until": None})}
    )
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    base = [sys.executable, "-m", "somocloud", "extend", "-c", str(cfg_file), "--no-progress"]
    done = subprocess.run([*base, "--until", NEW_END], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"already reaches {NEW_END}" in done.stderr and f"product: {cfg.store('product')}" in done.stdout
    missing = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert missing.returncode == 1 and "--until YYYY-MM-DD" in missing.stderr
    bad = subprocess.run([*base, "--until", "30/01/2021"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "extend.until" in bad.stderr  # a bad date fails before any work
