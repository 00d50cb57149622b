"""The `predict` step: exact windowed inference, masking, resume, parts and sea tiles on a tiny world.

World: 5 x 7 cells of 1° (tiles of 4 → 4 tiles, one of them all sea), 70 product days in chunks of 30
(3 blocks → 12 tasks), a random-weight EA-LSTM artifact (seq_length 10, hidden 8, 2 members, 3 layers).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from somocloud import stores
from somocloud.config import RunConfig, config_from_dict
from somocloud.context import Context, select_parts
from somocloud.grid import Grid
from somocloud.layers import DEPTHS, DYNAMIC_INPUTS, FORCING_VARIABLES, STATIC_INPUTS
from somocloud.model.artifact import LayerCard, ModelCard, save_artifact
from somocloud.model.ealstm import EALSTM
from somocloud.model.features import Scaler
from somocloud.predict import (
    ensure_template,
    plan_tasks,
    predict,
    product_days,
    product_layout,
    product_template,
    valid_windows,
)

SEQ = 10
START, END = dt.date(2001, 1, 10), dt.date(2001, 3, 20)  # 70 days
N_DAYS = (END - START).days + 1
GRID = {"resolution": 1.0, "lat_min": 40.0, "lat_max": 45.0, "lon_min": 0.0, "lon_max": 7.0}
TILE, TIME_CHUNK = 4, 30
SEA = [(0, 0), (4, 3), (4, 4), (4, 5), (4, 6)]  # row 4, cols 4..6 is the all-sea tile
NAN_STATIC_CELL = (2, 2)  # land, but `clay` is NaN there
N_MEMBERS = 2
TARGET = (0.25, 0.08)  # target mean / std of every layer


def make_config(
    root: Path, product: str, predict_: dict[str, Any] | None = None, **stores_: str
) -> RunConfig:
    return config_from_dict(
        {
            "name": "predict-test",
            "grid": GRID,
            "period": {"start": START.isoformat(), "end": END.isoformat()},
            "stores": {"root": str(root), "product": product, **stores_},
            "model": {"hidden_size": 8, "seq_length": SEQ, "cascade": False},  # hand-built cards: no cascade
            "predict": {"tile_size": TILE, "time_chunk": TIME_CHUNK, "batch_windows": 96, **(predict_ or {})},
        }
    )


def _forcing_fields(rng: np.random.Generator, shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    nt = shape[0]
    season = np.sin(np.arange(nt) / 9.0)[:, None, None]
    noise = rng.normal(size=shape)
    return {
        "t2m": 275 + 8 * season + 2 * noise,
        "tp": rng.gamma(0.6, 4.0, size=shape) * (rng.random(shape) < 0.5),
        "q": 0.005 + 0.001 * season + 0.0003 * noise,
        "snr": 8 + 4 * season + rng.normal(size=shape),
        "ssrd": 14 + 5 * season + rng.normal(size=shape),
        "skt": 276 + 9 * season + 2 * noise,
    }


def _write_forcing(ds: xr.Dataset, url: str) -> None:
    """Pixel-chunked like the forcing step's cube, written eagerly (no Dask)."""
    ds = ds.drop_encoding()
    chunks = (ds.sizes["time"], 4, 4)
    stores.write_zarr(ds, url, encoding={n: {"chunks": chunks} for n in FORCING_VARIABLES})


def write_random_forcing(cfg: RunConfig, grid: Grid, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random plausible forcing from `cfg.lookback_start` to `cfg.period.end`, written to its store."""
    days = product_days(cfg.lookback_start, cfg.period.end)
    forcing = _forcing_fields(rng, (len(days), *grid.shape))
    fds = xr.Dataset(
        {n: (("time", "lat", "lon"), forcing[n].astype("float32")) for n in FORCING_VARIABLES},
        coords={"time": days, **grid.coords()},
    )
    _write_forcing(fds, cfg.store("forcing"))
    return forcing


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread() -> Any:
    # Tiny LSTM batches on a shared 2-core machine: extra intra-op threads only spin.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Forcing, statics and a random-weight artifact; the reference networks kept in memory."""
    root = tmp_path_factory.mktemp("predict-world")
    cfg = make_config(root, str(root / "unused.zarr"))
    grid = Grid.from_config(cfg.grid)
    rng = np.random.default_rng(3)
    forcing = write_random_forcing(cfg, grid, rng)

    land = np.ones(grid.shape, dtype=bool)
    for i, j in SEA:
        land[i, j] = False
    statics = {n: rng.uniform(0.1, 1.0, size=grid.shape).astype("float32") for n in STATIC_INPUTS}
    statics["elev_mean"] *= 1000
    statics["p_mean"] *= 900
    statics["veg_type"] = rng.integers(1, 18, size=grid.shape).astype("float32")
    statics["veg_type"][~land] = np.nan
    statics["clay"][NAN_STATIC_CELL] = np.nan
    sds = xr.Dataset(
        {n: (("lat", "lon"), v) for n, v in statics.items()} | {"land_mask": (("lat", "lon"), land)},
        coords=grid.coords(),
    )
    stores.write_zarr(sds, cfg.store("statics"))

    fit = {"log_tp": np.log1p(forcing["tp"])} | {n: forcing[n] for n in FORCING_VARIABLES if n != "tp"}
    fit |= {n: np.where(land, statics[n], np.nan) for n in STATIC_INPUTS}
    scaler = Scaler.fit(fit)
    nets: list[list[EALSTM]] = []
    weights: dict[str, dict[str, torch.Tensor]] = {}
    layers = []
    for k in range(3):
        members = []
        for m in range(N_MEMBERS):
            torch.manual_seed(100 * k + m)
            net = EALSTM(len(DYNAMIC_INPUTS), len(STATIC_INPUTS), 8, dropout=0.5).eval()
            with torch.no_grad():
                for p in net.parameters():
                    p.normal_(0, 0.3)
            weights[f"layer{k + 1}/member{m}.pt"] = net.state_dict()
            members.append(net)
        nets.append(members)
        layers.append(
            LayerCard(float(DEPTHS[k]), list(DYNAMIC_INPUTS), list(STATIC_INPUTS), *TARGET,
                      members=[f"layer{k + 1}/member{m}.pt" for m in range(N_MEMBERS)],
                      seeds=list(range(N_MEMBERS)))
        )  # fmt: skip
    card = ModelCard(8, 0.5, SEQ, 5.0, "exact", scaler.to_dict(), layers)
    save_artifact(cfg.store("model"), card, weights, {"split.json": {"train_cells": [], "holdout_cells": []}})
    return {"root": root, "cfg": cfg, "grid": grid, "forcing": forcing, "statics": statics,
            "land": land, "scaler": scaler, "nets": nets, "card": card}  # fmt: skip


@pytest.fixture(scope="module")
def baseline(world: dict[str, Any], dask_client: Any) -> dict[str, Any]:
    """One full distributed run; its product loaded into memory."""
    url = str(world["root"] / "baseline" / "product.zarr")
    cfg = make_config(world["root"], url)
    assert predict(cfg, Context(client=dask_client, show_progress=False)) == {"product": url}
    ds = stores.open_zarr(url, chunks=None).load()
    return {"url": url, "cfg": cfg, "ds": ds}


def _reference(world: dict[str, Any], i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    """(days, layers) mean and spread at cell (i, j) with the reference EA-LSTM, one window at a time."""
    sc: Scaler = world["scaler"]
    f, s = world["forcing"], world["statics"]
    raw = {"log_tp": np.log1p(np.clip(f["tp"][:, i, j], 0, None))} | {n: f[n][:, i, j] for n in f}
    x_d = np.stack([(raw[n] - sc.mean[n]) / sc.std[n] for n in DYNAMIC_INPUTS], axis=-1)
    x_s = np.array([(s[n][i, j] - sc.mean[n]) / sc.std[n] for n in STATIC_INPUTS])
    xs = torch.tensor(x_s, dtype=torch.float32)[None]
    mean = np.zeros((N_DAYS, 3))
    spread = np.zeros((N_DAYS, 3))
    with torch.no_grad():
        for t in range(N_DAYS):  # product day t ends at forcing day t + SEQ - 1
            xd = torch.tensor(x_d[t : t + SEQ], dtype=torch.float32)[None]
            for k, members in enumerate(world["nets"]):
                ys = [max(0.0, float(net(xd, xs)) * TARGET[1] + TARGET[0]) for net in members]
                mean[t, k] = np.mean(ys)
                spread[t, k] = math.sqrt(np.mean((np.array(ys) - np.mean(ys)) ** 2))
    return mean, spread


def _array(ds: xr.Dataset, name: str) -> np.ndarray:
    return np.asarray(ds[name].transpose("time", "depth", "lat", "lon").values)


def test_valid_windows_by_hand() -> None:
    bad = np.array([[0, 0, 0, 1, 0, 0, 0]], dtype=bool)
    # windows of 3 over 7 steps: [0-2] ok, [1-3], [2-4], [3-5] hold step 3, [4-6] ok
    assert valid_windows(bad, 3).tolist() == [[True, False, False, False, True]]


def test_exact_mode_equals_reference_loop(world: dict[str, Any], baseline: dict[str, Any]) -> None:
    ds = baseline["ds"]
    assert ds["soil_moisture"].dims == ("time", "depth", "lat", "lon")
    assert ds["soil_moisture"].dtype == np.float32 and ds["soil_moisture_spread"].dtype == np.float32
    np.testing.assert_array_equal(ds["time"].values, product_days(START, END))
    mean, spread = _array(ds, "soil_moisture"), _array(ds, "soil_moisture_spread")
    for i, j in [(1, 1), (3, 5), (0, 6), (4, 0)]:  # cells in three different tiles
        ref_mean, ref_spread = _reference(world, i, j)
        assert np.abs(mean[:, :, i, j] - ref_mean).max() < 1e-5
        assert np.abs(spread[:, :, i, j] - ref_spread).max() < 1e-5
    assert spread[:, :, 1, 1].max() > 1e-3  # the members really differ
    assert mean[:, :, 1, 1].std() > 1e-3  # and the output varies over days and layers


def test_product_metadata(world: dict[str, Any], baseline: dict[str, Any]) -> None:
    ds = baseline["ds"]
    sm = ds["soil_moisture"]
    assert sm.attrs["standard_name"] == "volume_fraction_of_condensed_water_in_soil"
    assert sm.attrs["units"] == "m3 m-3" and "cell_methods" in sm.attrs
    assert sm.encoding["chunks"] == (TIME_CHUNK, 3, TILE, TILE)
    assert ds["depth"].attrs["positive"] == "down" and ds["depth"].attrs["bounds"] == "depth_bnds"
    np.testing.assert_allclose(ds["depth_bnds"].values, [[0, 0.1], [0.1, 0.3], [0.3, 0.5]])
    np.testing.assert_array_equal(ds["lat"].values, world["grid"].lat)
    assert ds["lat"].attrs["units"] == "degrees_north"
    attrs = stores.zarr_attrs(baseline["url"])
    assert attrs["complete"] is True
    assert attrs["inference_mode"] == "exact"
    assert (
        attrs["model_content_id"]
        == stores.read_json(stores.join(world["cfg"].store("model"), "manifest.json"))["content_id"]
    )
    assert attrs["somocloud_step"] == "predict" and "somocloud_content_id" in attrs


def test_nan_over_sea_and_finite_over_land(world: dict[str, Any], baseline: dict[str, Any]) -> None:
    mean, spread = _array(baseline["ds"], "soil_moisture"), _array(baseline["ds"], "soil_moisture_spread")
    expected_land = world["land"].copy()
    expected_land[NAN_STATIC_CELL] = False  # a NaN static input: no prediction
    for arr in (mean, spread):
        assert np.isnan(arr[:, :, ~expected_land]).all()
        assert np.isfinite(arr[:, :, expected_land]).all()
    assert (mean[:, :, expected_land] >= 0).all()


def test_nan_forcing_masks_only_that_cells_windows(world: dict[str, Any], baseline: dict[str, Any]) -> None:
    root = world["root"]
    src = stores.open_zarr(world["cfg"].store("forcing"), chunks=None).load()
    fi, (ci, cj) = 35, (1, 2)  # forcing day 35 of cell (1, 2)
    src["t2m"][fi, ci, cj] = np.nan
    url = str(root / "nan-forcing.zarr")
    _write_forcing(src, url)
    cfg = make_config(root, str(root / "nan" / "product.zarr"), forcing=url)
    predict(cfg, Context(parts=(1, 1), show_progress=False))  # serial path, no Dask
    mean = _array(stores.open_zarr(cfg.store("product"), chunks=None).load(), "soil_moisture")
    base = _array(baseline["ds"], "soil_moisture")
    # Product day t uses forcing days t .. t + SEQ - 1: days fi - SEQ + 1 .. fi see the gap (two blocks).
    hit = np.zeros(N_DAYS, dtype=bool)
    hit[fi - SEQ + 1 : fi + 1] = True
    assert np.isnan(mean[hit][:, :, ci, cj]).all()
    np.testing.assert_allclose(mean[~hit][:, :, ci, cj], base[~hit][:, :, ci, cj], atol=1e-6)
    others = np.ones(world["grid"].shape, dtype=bool)
    others[ci, cj] = False
    np.testing.assert_allclose(mean[:, :, others], base[:, :, others], atol=1e-6)  # NaN positions equal too


def _chunk_files(url: str, ti: int, tj: int, block: int) -> list[Path]:
    return [
        Path(url) / v / "c" / str(block) / "0" / str(ti) / str(tj)
        for v in ("soil_moisture", "soil_moisture_spread")
    ]


def test_resume_runs_only_unmarked_tasks(
    world: dict[str, Any], dask_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(world["root"], str(world["root"] / "resume" / "product.zarr"))
    url = cfg.store("product")
    ctx = Context(client=dask_client, show_progress=False)
    predict(cfg, ctx)
    first = stores.open_zarr(url, chunks=None).load()
    markers = stores.markers_for(url)
    tasks = plan_tasks(world["grid"], N_DAYS, TILE, TIME_CHUNK)
    assert markers.finished() == {t.id for t in tasks} and len(tasks) == 12
    before = {t: stores.read_json(markers.url(t)) for t in markers.finished()}

    dropped = [t.id for t in tasks if (t.tile.i0, t.tile.j0, t.t0) in ((0, 4, 30), (4, 0, 60))]
    for task_id, (ti, tj, block) in zip(dropped, [(0, 1, 1), (1, 0, 2)], strict=True):
        stores.remove(markers.url(task_id))
        for f in _chunk_files(url, ti, tj, block):
            assert f.exists()
            f.unlink()
    caplog.set_level(logging.INFO, logger="somocloud.predict")
    predict(cfg, ctx)
    ran = [r.getMessage() for r in caplog.records if r.getMessage().startswith("predict: part ")]
    assert sorted(m.split()[2] for m in ran) == sorted(dropped)
    for task_id, marker in before.items():  # the others were not rerun
        if task_id not in dropped:
            assert stores.read_json(markers.url(task_id)) == marker
    second = stores.open_zarr(url, chunks=None).load()
    for name in ("soil_moisture", "soil_moisture_spread"):
        np.testing.assert_array_equal(second[name].values, first[name].values)
    assert stores.zarr_attrs(url)["complete"] is True

    caplog.clear()
    predict(cfg, ctx)  # nothing left to do
    assert not [r for r in caplog.records if r.getMessage().startswith("predict: part ")]


def test_later_parts_wait_for_part_one_to_write_the_template(
    world: dict[str, Any], baseline: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An Indexed Job starts every part at once: parts 2..N must not race part 1 for the template."""
    import threading

    from somocloud import context

    monkeypatch.setattr(context, "POLL_S", 0.2)
    lonely = make_config(world["root"], str(world["root"] / "lonely" / "product.zarr"), {"parts_wait_s": 0.5})
    with pytest.raises(TimeoutError, match=r"part 2/2: part 1 has not made the template of .*lonely"):
        predict(lonely, Context(parts=(2, 2), show_progress=False))
    assert not stores.exists(stores.join(lonely.store("product"), "zarr.json"))  # part 2 wrote nothing

    cfg = make_config(world["root"], str(world["root"] / "indexed" / "product.zarr"))
    errors: list[BaseException] = []

    def part_two() -> None:
        try:
            predict(cfg, Context(parts=(2, 2), show_progress=False))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    second = threading.Thread(target=part_two)
    second.start()  # first: it waits
    time.sleep(1.0)
    assert not stores.exists(stores.join(cfg.store("product"), "zarr.json"))
    predict(cfg, Context(parts=(1, 2), show_progress=False))
    second.join(timeout=300)
    assert not errors and not second.is_alive()
    predict(cfg, Context(parts=(1, 2), show_progress=False))  # whichever finished last, now finalised
    ds = stores.open_zarr(cfg.store("product"), chunks=None).load()
    assert ds.attrs["complete"] is True
    for name in ("soil_moisture", "soil_moisture_spread"):
        np.testing.assert_array_equal(ds[name].values, baseline["ds"][name].values)


def test_parts_equal_the_full_run(world: dict[str, Any], baseline: dict[str, Any]) -> None:
    cfg = make_config(world["root"], str(world["root"] / "parts" / "product.zarr"))
    url = cfg.store("product")
    tasks = plan_tasks(world["grid"], N_DAYS, TILE, TIME_CHUNK)
    predict(cfg, Context(parts=(1, 2), show_progress=False))
    assert stores.markers_for(url).finished() == {t.id for t in select_parts(tasks, (1, 2))}
    assert stores.zarr_attrs(url)["complete"] is False  # not finalised while part 2 is pending
    predict(cfg, Context(parts=(2, 2), show_progress=False))
    assert stores.zarr_attrs(url)["complete"] is True
    ds = stores.open_zarr(url, chunks=None).load()
    for name in ("soil_moisture", "soil_moisture_spread"):
        np.testing.assert_array_equal(ds[name].values, baseline["ds"][name].values)


def test_all_sea_tile_writes_no_chunk_but_is_marked(baseline: dict[str, Any]) -> None:
    url = baseline["url"]
    markers = stores.markers_for(url)
    sea_tasks = sorted(m for m in markers.finished() if m.startswith("tile-00004-00004-time-"))
    assert len(sea_tasks) == 3
    for task_id, block in zip(sea_tasks, range(3), strict=True):
        assert stores.read_json(markers.url(task_id))["status"] == "sea"
        assert not any(f.exists() for f in _chunk_files(url, 1, 1, block))
        assert all(f.exists() for f in _chunk_files(url, 1, 0, block))  # its land neighbour wrote


def test_template_is_kept_for_the_same_inputs_and_rewritten_otherwise(world: dict[str, Any]) -> None:
    url = str(world["root"] / "template" / "product.zarr")
    grid: Grid = world["grid"]
    days = product_days(START, END)
    layout = {"chunks": (TIME_CHUNK, 3, TILE, TILE)}
    markers = stores.markers_for(url)
    assert (
        ensure_template(url, product_template(grid, days, {"somocloud_content_id": "a"}), layout) == "written"
    )
    assert not list(Path(url, "soil_moisture").glob("c/**/*"))  # metadata only
    markers.mark("tile-00000-00000-time-000000")
    assert ensure_template(url, product_template(grid, days, {"somocloud_content_id": "a"}), layout) == "kept"
    assert markers.finished() == {"tile-00000-00000-time-000000"}
    assert (
        ensure_template(url, product_template(grid, days, {"somocloud_content_id": "b"}), layout) == "written"
    )
    assert markers.finished() == set()
    assert stores.zarr_attrs(url)["somocloud_content_id"] == "b"


def test_cascade_input_without_the_layer_above_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    card: ModelCard = world["card"]
    layers = [LayerCard(**{**vars(lc)}) for lc in card.layers]
    layers[0].dynamic_inputs = [*DYNAMIC_INPUTS[:-1], "sm_layer2"]  # layer 1 cannot take layer 2
    cascade = ModelCard(8, 0.5, SEQ, 5.0, "exact", card.input_scaler, layers)
    model_url = str(tmp_path / "cascade-model")
    weights = {f"layer{k + 1}/member{m}.pt": world["nets"][k][m].state_dict()
               for k in range(3) for m in range(N_MEMBERS)}  # fmt: skip
    save_artifact(model_url, cascade, weights, {})
    cfg = make_config(world["root"], str(tmp_path / "p.zarr"), model=model_url)
    with pytest.raises(ValueError, match="layer 1 takes 'sm_layer2' but the artifact has no model for that"):
        predict(cfg, Context(parts=(1, 1), show_progress=False))
    assert not stores.exists(str(tmp_path / "p.zarr"))


def test_forcing_too_short_is_a_clear_error(world: dict[str, Any], tmp_path: Path) -> None:
    src = stores.open_zarr(world["cfg"].store("forcing"), chunks=None).isel(time=slice(3, None)).load()
    url = str(tmp_path / "short.zarr")
    _write_forcing(src, url)
    cfg = make_config(world["root"], str(tmp_path / "p.zarr"), forcing=url)
    with pytest.raises(ValueError, match=r"short\.zarr.*'time'.*lookback of 9 days"):
        predict(cfg, Context(parts=(1, 1), show_progress=False))
    assert pd.Timestamp(src["time"].values[0]).date() > world["cfg"].lookback_start


def test_sharded_product_on_s3(world: dict[str, Any], baseline: dict[str, Any], s3_endpoint: str) -> None:
    """Inner chunks of 10 days x 2 x 2 cells in one shard per task: the same values, one object per task."""
    import fsspec

    from tests.conftest import BUCKET, SECRET_KEY

    url = f"s3://{BUCKET}/predict-test/product.zarr"
    cfg = make_config(world["root"], url, {"chunk_days": 10, "chunk_cells": 2})
    assert predict(cfg, Context(parts=(1, 1), show_progress=False)) == {"product": url}
    ds = stores.open_zarr(url, chunks=None).load()
    for name in ("soil_moisture", "soil_moisture_spread"):
        assert ds[name].encoding["chunks"] == (10, 3, 2, 2)
        assert ds[name].encoding["shards"] == (TIME_CHUNK, 3, TILE, TILE)
        np.testing.assert_array_equal(ds[name].values, baseline["ds"][name].values)
    assert len(stores.markers_for(url).finished()) == 12
    fs = fsspec.filesystem("s3", **stores.storage_options(url))
    objects = {p.split("/c/", 1)[1] for p in fs.find(f"{BUCKET}/predict-test/product.zarr/soil_moisture/c")}
    land_tiles = {f"{ti}/{tj}" for ti in (0, 1) for tj in (0, 1)} - {"1/1"}  # tile (1, 1) is all sea
    assert objects == {f"{block}/0/{tile}" for block in range(3) for tile in land_tiles}
    attrs = stores.zarr_attrs(url)
    assert attrs["complete"] is True
    assert SECRET_KEY not in str(attrs) and s3_endpoint not in str(attrs)


def test_product_layout_clamps_inner_chunks_to_divide_the_shard() -> None:
    run = make_config(Path("/tmp"), "p", {"time_chunk": 60, "chunk_days": 20, "chunk_cells": 2})
    grid, cfg = Grid.from_config(run.grid), run.predict
    assert product_layout(70, grid, cfg) == {"chunks": (20, 3, 2, 2), "shards": (60, 3, 4, 4)}
    # a 50-day product: one shard of 50 days, whose largest divisor up to 20 is 10
    assert product_layout(50, grid, cfg) == {"chunks": (10, 3, 2, 2), "shards": (50, 3, 4, 4)}
    assert product_layout(50, grid, make_config(Path("/tmp"), "p").predict) == {"chunks": (30, 3, 4, 4)}
    with pytest.raises(ValueError, match=r"predict.chunk_cells \(3\) must divide predict.tile_size \(4\)"):
        make_config(Path("/tmp"), "p", {"chunk_cells": 3})


BLOCK, WARM = 5, SEQ - 5  # a blocked model: trained on the last 5 of 10 steps


def _blocked_model(world: dict[str, Any], url: str) -> None:
    card: ModelCard = world["card"]
    blocked = ModelCard(8, 0.5, SEQ, 5.0, "blocked", card.input_scaler, card.layers, predict_last_n=BLOCK)
    weights = {f"layer{k + 1}/member{m}.pt": world["nets"][k][m].state_dict()
               for k in range(3) for m in range(N_MEMBERS)}  # fmt: skip
    save_artifact(url, blocked, weights, {})


def _blocked_config(world: dict[str, Any], product: str, model: str, time_chunk: int) -> RunConfig:
    cfg = make_config(world["root"], product, model=model)
    data = cfg.model_dump(mode="json")
    data["model"]["predict_last_n"] = BLOCK
    data["predict"] |= {"mode": "blocked", "time_chunk": time_chunk}
    return config_from_dict(data)


def test_blocked_mode_equals_warm_up_and_block_by_hand(
    world: dict[str, Any], baseline: dict[str, Any], tmp_path: Path
) -> None:
    """Each block of 5 days is the last 5 outputs of one zero-state window starting 5 days earlier; blocks
    sit on the same days whatever the task size, and the windows run are ~seq/block fewer than exact."""
    model = str(tmp_path / "blocked-model")
    _blocked_model(world, model)
    products = {}
    for chunk in (30, 10):
        url = str(tmp_path / f"blocked-{chunk}.zarr")
        cfg = _blocked_config(world, url, model, chunk)
        predict(cfg, Context(parts=(1, 1), show_progress=False))
        products[chunk] = stores.open_zarr(url, chunks=None).load()
        assert stores.zarr_attrs(url)["inference_mode"] == "blocked"
    mean = _array(products[30], "soil_moisture")
    np.testing.assert_allclose(mean, _array(products[10], "soil_moisture"), rtol=0, atol=1e-6, equal_nan=True)
    sc: Scaler = world["scaler"]
    f, s = world["forcing"], world["statics"]
    lead = SEQ - 1  # the world's forcing starts at cfg.lookback_start, 9 days before START
    for i, j in [(1, 1), (3, 5)]:
        raw = {"log_tp": np.log1p(np.clip(f["tp"][:, i, j], 0, None))} | {n: f[n][:, i, j] for n in f}
        x_d = np.stack([(raw[n] - sc.mean[n]) / sc.std[n] for n in DYNAMIC_INPUTS], axis=-1)
        xs = torch.tensor(
            [[(s[n][i, j] - sc.mean[n]) / sc.std[n] for n in STATIC_INPUTS]], dtype=torch.float32
        )
        for t in (0, 4, 5, 33, N_DAYS - 1):
            b = t - t % BLOCK
            window = torch.tensor(x_d[lead + b - WARM : lead + b + BLOCK], dtype=torch.float32)[None]
            with torch.no_grad():
                ys = [float(net(window, xs, last_n=SEQ)[0, WARM + t - b]) for net in world["nets"][0]]
            expected = np.mean([max(0.0, y * TARGET[1] + TARGET[0]) for y in ys])
            assert abs(mean[t, 0, i, j] - expected) < 1e-5, (i, j, t)
    assert _windows_run(str(tmp_path / "blocked-30.zarr")) * BLOCK <= 1.3 * _windows_run(baseline["url"])


def _windows_run(product: str) -> int:
    """Windows the product's tasks ran (from their markers)."""
    markers = stores.markers_for(product)
    return sum(stores.read_json(markers.url(t)).get("windows", 0) for t in markers)


def test_blocked_mode_needs_a_blocked_model_and_whole_blocks(world: dict[str, Any], tmp_path: Path) -> None:
    from somocloud.config import ConfigError

    with pytest.raises(ConfigError, match="multiple of the block"):
        _blocked_config(world, str(tmp_path / "p.zarr"), str(tmp_path / "m"), 12)
    cfg = _blocked_config(world, str(tmp_path / "p.zarr"), world["cfg"].store("model"), 30)
    with pytest.raises(ValueError, match=r"inference_mode is 'exact' but predict\.mode is 'blocked'"):
        predict(cfg, Context(parts=(1, 1), show_progress=False))
    data = make_config(world["root"], "x").model_dump(mode="json")
    data["predict"]["mode"] = "blocked"
    with pytest.raises(ConfigError, match="predict_last_n > 1"):
        config_from_dict(data)
