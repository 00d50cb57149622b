"""The `train` step on a tiny hand-built world: a 4x5 grid, 200 days, targets made from lagged rain."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr

from somocloud import stores
from somocloud.config import GridConfig, RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.layers import DEPTHS, DYNAMIC_INPUTS, FORCING_VARIABLES, STATIC_INPUTS
from somocloud.model.artifact import load_artifact, read_manifest
from somocloud.train import (
    LayerData,
    MemberSpec,
    Settings,
    any_target_in_last_n,
    gather_windows,
    nse_star_loss,
    split_cells,
    train,
    train_member,
    valid_window_ends,
    window_targets,
)

START = dt.date(2020, 1, 1)
N_DAYS = 200
SEQ = 20
LOOKBACK = 3 * (SEQ - 1)  # the cascade chains three windows back from the first day
GRID = {"resolution": 1.0, "lat_min": 0.0, "lat_max": 4.0, "lon_min": 0.0, "lon_max": 5.0}
# Cells (row, col) of the targets store; the last one has no finite target at all.
TARGET_CELLS = [(0, 0), (0, 2), (0, 4), (1, 1), (1, 3), (2, 0), (2, 2), (2, 4), (3, 1), (3, 3), (3, 4)]
MEMORY_DAYS = (2.0, 4.0, 8.0)  # e-folding memory of each layer's response to rain


def make_config(world: Path, run: Path, **train: Any) -> RunConfig:
    """A run config reading the world's stores under `world` and writing under `run`."""
    return config_from_dict(
        {
            "seed": 3,
            "grid": GRID,
            "period": {"start": START, "end": START + dt.timedelta(days=N_DAYS - 1)},
            "stores": {
                "root": str(run),
                "forcing": str(world / "forcing.zarr"),
                "statics": str(world / "statics.zarr"),
                "targets": str(world / "targets.zarr"),
            },
            "model": {"hidden_size": 8, "dropout": 0.0, "seq_length": SEQ},
            "train": {
                "epochs": 2,
                "batch_size": 32,
                "learning_rate": 0.01,
                "max_windows_per_epoch": 256,
                "n_members": 1,
                "holdout_fraction": 0.2,
                "validation_fraction": 0.1,
            }
            | train,
        }
    )


def world_arrays(seed: int = 0) -> dict[str, Any]:
    """Forcing (time, lat, lon) from lookback_start, statics (lat, lon), targets (cell, time, depth)."""
    rng = np.random.default_rng(seed)
    grid = Grid.from_config(GridConfig(**GRID))
    n_time = N_DAYS + LOOKBACK
    shape = (n_time, *grid.shape)
    day = np.arange(n_time)[:, None, None]
    tp = (rng.gamma(0.6, 8.0, shape) * (rng.random(shape) < 0.35)).astype("float32")
    forcing = {
        "t2m": 285 + 8 * np.sin(2 * np.pi * day / 365) + rng.normal(0, 2, shape),
        "tp": tp,
        "q": 0.008 + 0.001 * rng.normal(0, 1, shape),
        "snr": 8 + 3 * rng.random(shape),
        "ssrd": 15 + 5 * rng.random(shape),
        "skt": 286 + 8 * np.sin(2 * np.pi * day / 365) + rng.normal(0, 2, shape),
    }
    statics = {name: rng.random(grid.shape) for name in STATIC_INPUTS}
    statics["veg_type"] = rng.integers(1, 18, grid.shape).astype("float64")
    # Target of layer k: exponentially weighted log1p(rain) of the last SEQ days (so one window sees all
    # of it) plus noise; about 0.1-0.3 m3 m-3.
    log_rain = np.log1p(tp)
    sm = np.full((len(TARGET_CELLS), N_DAYS, len(DEPTHS)), np.nan, dtype="float32")
    for k, memory in enumerate(MEMORY_DAYS):
        w = np.exp(-np.arange(SEQ) / memory)
        w /= w.sum()
        for i, (r, c) in enumerate(TARGET_CELLS):
            response = np.convolve(log_rain[:, r, c], w)[:n_time][LOOKBACK:]  # sum_l w_l rain[t - l]
            sm[i, :, k] = 0.1 + 0.08 * response + rng.normal(0, 0.003, N_DAYS)
    sm[rng.random(sm.shape) < 0.1] = np.nan  # gaps
    sm[-1] = np.nan  # a cell without any target: neither a training nor a held-out cell
    return {"forcing": forcing, "statics": statics, "sm": sm, "grid": grid}


def write_world(cfg: RunConfig, arrays: dict[str, Any]) -> None:
    grid: Grid = arrays["grid"]
    time = np.arange(np.datetime64(cfg.lookback_start), np.datetime64(cfg.period.end) + 1).astype(
        "datetime64[ns]"
    )
    forcing = xr.Dataset(
        {n: (("time", "lat", "lon"), np.asarray(v, dtype="float32")) for n, v in arrays["forcing"].items()},
        coords={"time": time, **grid.coords()},
    ).chunk({"time": -1, "lat": 2, "lon": 2})
    stores.write_zarr(forcing, cfg.store("forcing"))
    statics = xr.Dataset(
        {n: (("lat", "lon"), np.asarray(v, dtype="float32")) for n, v in arrays["statics"].items()}
        | {"land_mask": (("lat", "lon"), np.ones(grid.shape, dtype=bool))},
        coords=grid.coords(),
    )
    stores.write_zarr(statics, cfg.store("statics"))
    rows = np.array([r for r, _ in TARGET_CELLS])
    cols = np.array([c for _, c in TARGET_CELLS])
    targets = xr.Dataset(
        {"soil_moisture": (("cell", "time", "depth"), arrays["sm"])},
        coords={
            "time": time[LOOKBACK:],
            "depth": DEPTHS,
            "row": ("cell", rows),
            "col": ("cell", cols),
            "lat": ("cell", grid.lat[rows]),
            "lon": ("cell", grid.lon[cols]),
        },
    )
    stores.write_zarr(targets, cfg.store("targets"))


@pytest.fixture(scope="module")
def client() -> Any:
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0") as c:
        yield c


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("train")
    arrays = world_arrays()
    write_world(make_config(base / "world", base / "unused"), arrays)
    return {"base": base, "arrays": arrays}


@pytest.fixture(scope="module")
def first_run(world: dict[str, Any], client: Any) -> RunConfig:
    cfg = make_config(world["base"] / "world", world["base"] / "run-a")
    assert train(cfg, Context(client=client, show_progress=False)) == {"model": cfg.store("model")}
    return cfg


def _states(url: str) -> dict[str, dict[str, torch.Tensor]]:
    manifest = read_manifest(url)
    return {
        rel: torch.load(io.BytesIO(stores.read_bytes(stores.join(url, rel))), weights_only=True)
        for rel in manifest["files"]
        if rel.endswith(".pt")
    }


def test_artifact_written_and_loadable(first_run: RunConfig) -> None:
    url = first_run.store("model")
    model = load_artifact(url, fast=False)
    assert [len(m) for m in model.members] == [1, 1, 1]
    card = model.card
    assert [lc.members for lc in card.layers] == [
        ["layer1/member0.pt"],
        ["layer2/member0.pt"],
        ["layer3/member0.pt"],
    ]
    assert [lc.seeds for lc in card.layers] == [[1000], [2000], [3000]]
    # the cascade: layers 2 and 3 also take the simulated soil moisture of the layers above
    assert [lc.dynamic_inputs for lc in card.layers] == [
        list(DYNAMIC_INPUTS),
        [*DYNAMIC_INPUTS, "sm_layer1"],
        [*DYNAMIC_INPUTS, "sm_layer1", "sm_layer2"],
    ]
    assert all(lc.static_inputs == list(STATIC_INPUTS) for lc in card.layers)
    assert (card.hidden_size, card.seq_length, card.inference_mode) == (8, SEQ, "exact")
    assert sorted(card.input_scaler["mean"]) == sorted(
        (*DYNAMIC_INPUTS, *STATIC_INPUTS, "sm_layer1", "sm_layer2")
    )
    # simulated soil moisture is standardised like any input: its mean is a plausible m3 m-3 value
    assert 0.0 < card.input_scaler["mean"]["sm_layer1"] < 0.6 and card.input_scaler["std"]["sm_layer1"] > 0

    split = stores.read_json(stores.join(url, "split.json"))
    train_cells = {tuple(c) for c in split["train_cells"]}
    hold = {tuple(c) for c in split["holdout_cells"]}
    assert len(hold) == 2  # round(0.2 * 10 cells with a target)
    assert not train_cells & hold
    assert train_cells | hold == set(TARGET_CELLS[:-1])  # the cell without targets is in neither

    metrics = stores.read_json(stores.join(url, "metrics.json"))
    assert len(metrics["validation_cells"]) == 1  # round(0.1 * 8 training cells)
    assert {tuple(c) for c in metrics["validation_cells"]} <= train_cells
    for k in ("1", "2", "3"):
        layer = metrics["layers"][k]
        assert layer["fit_windows"] + layer["val_windows"] == layer["windows"] > 0
        member = layer["members"]["0"]
        assert len(member["train_loss"]) == len(member["val_loss"]) == 2
        assert all(np.isfinite(member["train_loss"]))
    assert json.loads(stores.read_text(stores.join(url, "config.json")))["train"]["n_members"] == 1
    assert stores.exists(stores.join(url, "provenance.json"))

    # The loaded members predict m3 m-3 from standardised windows.
    x_d = torch.zeros(4, SEQ, len(DYNAMIC_INPUTS))
    x_s = torch.zeros(4, len(STATIC_INPUTS))
    out = model.predict(0, x_d, x_s)
    assert out.shape == (1, 4) and bool(torch.isfinite(out).all())


def test_cascade_inputs_are_the_simulation_predict_makes(
    world: dict[str, Any], client: Any, first_run: RunConfig
) -> None:
    """Training feeds layers 2 and 3 the ensemble-mean *simulation* of the layers above, never the observed
    targets: its `sm_layer<k>` scaler statistics (fitted on that series at the training cells over the
    training days) equal those of the product `predict` makes there with the same artifact."""
    from somocloud.predict import predict

    cfg = first_run.model_copy(deep=True)
    cfg.stores.product = str(world["base"] / "cascade-product.zarr")
    predict(cfg, Context(client=client, show_progress=False))
    product = xr.open_zarr(cfg.store("product"))["soil_moisture"].load()
    card = load_artifact(cfg.store("model"), fast=False).card
    split = stores.read_json(stores.join(cfg.store("model"), "split.json"))
    rows = xr.DataArray([r for r, _ in split["train_cells"]], dims="cell")
    cols = xr.DataArray([c for _, c in split["train_cells"]], dims="cell")
    at_cells = product.isel(lat=rows, lon=cols).values.astype("float64")  # (time, depth, cell)
    for k in (1, 2):
        series = at_cells[:, k - 1]
        assert np.isfinite(series).all()
        np.testing.assert_allclose(card.input_scaler["mean"][f"sm_layer{k}"], series.mean(), rtol=1e-5)
        np.testing.assert_allclose(card.input_scaler["std"][f"sm_layer{k}"], series.std(), rtol=1e-4)
    # and they are not the observed targets (whose mean differs at this noise level)
    targets = xr.open_zarr(cfg.store("targets"))["soil_moisture"].load().values
    assert abs(np.nanmean(targets[..., 0]) - card.input_scaler["mean"]["sm_layer1"]) > 1e-4


def test_blocked_training_simulates_the_cascade_as_blocked_predict_does(
    world: dict[str, Any], client: Any, tmp_path: Path
) -> None:
    """A model for blocked inference (predict_last_n 10 of 20 steps): its card says so, and the cascade's
    `sm_layer<k>` inputs in training are the blocked simulation that `predict` makes at the training cells
    (the same blocks: anchored on the period's first day)."""
    from somocloud.predict import predict

    cfg = make_config(world["base"] / "world", tmp_path / "blocked")
    data = cfg.model_dump(mode="json")
    data["model"]["predict_last_n"] = 10
    data["predict"] = {"mode": "blocked", "time_chunk": 100}
    cfg = config_from_dict(data)
    train(cfg, Context(client=client, show_progress=False))
    card = load_artifact(cfg.store("model"), fast=False).card
    assert (card.inference_mode, card.predict_last_n, card.seq_length) == ("blocked", 10, SEQ)
    predict(cfg, Context(client=client, show_progress=False))
    product = xr.open_zarr(cfg.store("product"))["soil_moisture"].load()
    split = stores.read_json(stores.join(cfg.store("model"), "split.json"))
    rows = xr.DataArray([r for r, _ in split["train_cells"]], dims="cell")
    cols = xr.DataArray([c for _, c in split["train_cells"]], dims="cell")
    at_cells = product.isel(lat=rows, lon=cols).values.astype("float64")
    for k in (1, 2):
        series = at_cells[:, k - 1]
        assert np.isfinite(series).all()
        np.testing.assert_allclose(card.input_scaler["mean"][f"sm_layer{k}"], series.mean(), rtol=1e-5)
        np.testing.assert_allclose(card.input_scaler["std"][f"sm_layer{k}"], series.std(), rtol=1e-4)


def test_same_config_gives_bit_identical_weights(
    world: dict[str, Any], client: Any, first_run: RunConfig
) -> None:
    cfg = make_config(world["base"] / "world", world["base"] / "run-b")
    train(cfg, Context(client=client, show_progress=False))
    a, b = first_run.store("model"), cfg.store("model")
    assert read_manifest(a)["content_id"] == read_manifest(b)["content_id"]
    sa, sb = _states(a), _states(b)
    assert sorted(sa) == sorted(sb) == ["layer1/member0.pt", "layer2/member0.pt", "layer3/member0.pt"]
    for rel in sa:
        assert all(torch.equal(sa[rel][k], sb[rel][k]) for k in sa[rel])
    # A different training seed changes the weights (so the equality above is not vacuous).
    cfg_c = make_config(world["base"] / "world", world["base"] / "run-c", seed=7)
    train(cfg_c, Context(client=client, show_progress=False))
    assert read_manifest(cfg_c.store("model"))["content_id"] != read_manifest(a)["content_id"]


def test_held_out_cells_play_no_part(world: dict[str, Any], client: Any, first_run: RunConfig) -> None:
    split = stores.read_json(stores.join(first_run.store("model"), "split.json"))
    hold = [tuple(c) for c in split["holdout_cells"]]
    arrays = world_arrays()
    # Insane values at the held-out cells in every input: targets, forcing pixels and statics.
    for r, c in hold:
        arrays["sm"][TARGET_CELLS.index((r, c))] *= 1000.0
        for name in FORCING_VARIABLES:
            arrays["forcing"][name][:, r, c] = 1e6
        for name in STATIC_INPUTS:
            arrays["statics"][name][r, c] = -1e6
    base = world["base"] / "poisoned"
    cfg = make_config(base, base / "run")
    write_world(cfg, arrays)
    train(cfg, Context(client=client, show_progress=False))

    clean = load_artifact(first_run.store("model"), fast=False).card
    poisoned = load_artifact(cfg.store("model"), fast=False).card
    assert poisoned.input_scaler == clean.input_scaler
    assert [lc.target_mean for lc in poisoned.layers] == [lc.target_mean for lc in clean.layers]
    assert stores.read_json(stores.join(cfg.store("model"), "split.json")) == split
    # Everything the model is made of is unchanged: weights, scalers and architecture.
    assert (
        read_manifest(cfg.store("model"))["content_id"]
        == read_manifest(first_run.store("model"))["content_id"]
    )


def test_nse_star_loss_by_hand() -> None:
    y_hat = torch.tensor([1.0, 2.0, 0.5])
    y = torch.tensor([0.0, 0.0, 0.5])
    s = torch.tensor([0.01, 0.03, 0.2])
    # (1/0.02)² = 2500, (2/0.04)² = 2500, 0 → mean 5000/3
    assert float(nse_star_loss(y_hat, y, s, 0.01)) == pytest.approx(5000.0 / 3.0, rel=1e-6)


def test_valid_windows_and_gather_by_hand() -> None:
    finite = np.array([[True, True, False, True, True, True], [True] * 6])
    ok = valid_window_ends(finite, 3)
    assert ok.tolist() == [[False, False, False, True], [True, True, True, True]]
    x_dyn = np.arange(2 * 6 * 1, dtype="float32").reshape(2, 6, 1)
    x_stat = np.array([[10.0], [20.0]], dtype="float32")
    xd, xs = gather_windows(x_dyn, x_stat, np.array([1, 0]), np.array([2, 0]), 3)
    assert xd[..., 0].tolist() == [[8, 9, 10], [0, 1, 2]]
    assert xs[:, 0].tolist() == [20, 10]


def test_split_is_deterministic_and_keeps_at_least_one() -> None:
    cells = np.array([[r, c] for r in range(2) for c in range(5)])
    tr, ho = split_cells(cells[::-1], 0.2, seed=5)  # input order does not matter
    tr2, ho2 = split_cells(cells, 0.2, seed=5)
    assert np.array_equal(tr, tr2) and np.array_equal(ho, ho2)
    assert len(ho) == 2 and len(tr) == 8
    assert len(split_cells(cells, 0.01, 0)[1]) == 1  # at least one when the fraction is > 0
    assert len(split_cells(cells[:1], 0.5, 0)[1]) == 0  # a single cell is never held out
    assert len(split_cells(cells, 0.0, 0)[1]) == 0


def test_region_split_holds_out_the_cells_inside_the_box() -> None:
    from somocloud.config import Region
    from somocloud.grid import Grid
    from somocloud.train import split_by_region

    grid = Grid(1.0, 40.0, 42.0, 0.0, 5.0)  # centres: lat 40.5, 41.5; lon 0.5 .. 4.5
    cells = np.array([[r, c] for r in range(2) for c in range(5)])
    east = Region(lat_min=40.0, lat_max=42.0, lon_min=3.0, lon_max=5.0)
    train, holdout = split_by_region(cells[::-1], grid, east)
    assert holdout.tolist() == [[0, 3], [0, 4], [1, 3], [1, 4]]
    assert train.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    with pytest.raises(ValueError, match="holds 0 of the 10 target cells"):
        split_by_region(cells, grid, Region(lat_min=0.0, lat_max=1.0, lon_min=0.0, lon_max=1.0))
    with pytest.raises(ValueError, match="holds 10 of the 10"):
        split_by_region(cells, grid, Region(lat_min=-90.0, lat_max=90.0, lon_min=-180.0, lon_max=180.0))
    with pytest.raises(ValueError, match="lat_min < lat_max"):
        Region(lat_min=1.0, lat_max=0.0, lon_min=0.0, lon_max=1.0)


def learnable_problem(epochs: int = 4, **settings: Any) -> tuple[LayerData, np.ndarray, np.ndarray, Settings]:
    """Target = weighted sum of the last 5 days of the first input; 6 cells x 300 days, cell 0 validates."""
    rng = np.random.default_rng(1)
    n_cells, n_days, seq = 6, 300, 10
    raw = rng.normal(0, 1, (n_cells, n_days + seq - 1, len(DYNAMIC_INPUTS))).astype("float32")
    w = np.array([0.4, 0.25, 0.15, 0.1, 0.1], dtype="float32")
    y = np.stack([raw[:, d + seq - 5 : d + seq, 0] @ w[::-1] for d in range(n_days)], axis=1)
    cells, days = np.meshgrid(np.arange(n_cells), np.arange(n_days), indexing="ij")
    val = cells.ravel() == 0
    data = LayerData(
        y=((y - y.mean()) / y.std()).astype("float32"),
        cell_std=np.full(n_cells, 0.05, dtype="float32"),
        fit_cells=cells.ravel()[~val],
        fit_days=days.ravel()[~val],
        val_cells=cells.ravel()[val],
        val_days=days.ravel()[val],
    )
    x_stat = rng.normal(0, 1, (n_cells, len(STATIC_INPUTS))).astype("float32")
    base = dict(
        n_static=len(STATIC_INPUTS), hidden_size=16, dropout=0.0, initial_forget_bias=1.0, seq_length=seq,
        epochs=epochs, batch_size=32, learning_rate=0.01, max_windows_per_epoch=None, grad_clip=1.0,
        nse_epsilon=0.005, threads=1,
    )  # fmt: skip
    return data, raw, x_stat, Settings(**(base | settings))


def test_training_reduces_the_loss_on_a_learnable_target() -> None:
    data, raw, x_stat, settings = learnable_problem()
    result = train_member(MemberSpec(1, 0, 1000), data, raw, x_stat, settings)
    assert result.val_loss_initial is not None and result.val_loss[-1] is not None
    # NSE* of a perfect model is 0 and of predicting the mean about 1/(0.055)² ≈ 330.
    assert result.val_loss[-1] < 0.2 * result.val_loss_initial
    assert result.train_loss[-1] < result.train_loss[0]
    assert result.best_epoch is None  # no early stopping asked for: the last epoch's weights


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_learning_rate_schedule_applies_from_its_epoch() -> None:
    data, raw, x_stat, one_epoch = learnable_problem(epochs=1)
    first = train_member(MemberSpec(1, 0, 7), data, raw, x_stat, one_epoch)
    # a zero rate from epoch 2 on: Adam moves nothing, so three epochs end where the first ended
    _, _, _, frozen = learnable_problem(epochs=3, learning_rate_schedule=((2, 0.0),))
    assert [frozen.rate(e) for e in (1, 2, 3)] == [0.01, 0.0, 0.0]
    later = train_member(MemberSpec(1, 0, 7), data, raw, x_stat, frozen)
    assert same_state(first.state, later.state) and len(later.train_loss) == 3


def test_early_stopping_keeps_the_best_epoch() -> None:
    data, raw, x_stat, one_epoch = learnable_problem(epochs=1, grad_clip=1e6)
    first = train_member(MemberSpec(1, 0, 7), data, raw, x_stat, one_epoch)
    # a wild rate from epoch 2 on makes the validation loss worse: stop after `patience` epochs without
    # improvement and keep epoch 1's weights
    _, _, _, wild = learnable_problem(
        epochs=6, learning_rate_schedule=((2, 50.0),), early_stopping_patience=2, grad_clip=1e6
    )
    stopped = train_member(MemberSpec(1, 0, 7), data, raw, x_stat, wild)
    assert stopped.best_epoch == 1
    assert len(stopped.val_loss) == 3  # epochs 2 and 3 did not improve: stop
    assert all(v is not None and v > stopped.val_loss[0] for v in stopped.val_loss[1:])
    assert same_state(first.state, stopped.state)


def test_last_n_targets_and_masked_loss_by_hand() -> None:
    y = np.array([[0.0, np.nan, 2.0, 3.0], [np.nan, np.nan, np.nan, 7.0]], dtype="float32")
    got = window_targets(y, np.array([0, 1, 0]), np.array([3, 2, 0]), 3)
    np.testing.assert_array_equal(got, [[np.nan, 2, 3], [np.nan, np.nan, np.nan], [np.nan, np.nan, 0]])
    assert window_targets(y, np.array([0]), np.array([2]), 1).tolist() == [2.0]
    assert any_target_in_last_n(np.isfinite(y), 2).tolist() == [
        [True, True, True, True],
        [False] * 3 + [True],
    ]
    # masked NSE*: (1/0.02)² and (2/0.02)² at cell 0; the NaN targets count for nothing
    y_hat = torch.tensor([[9.0, 3.0, 5.0], [4.0, 4.0, 4.0]])
    loss = nse_star_loss(
        y_hat, torch.tensor([[np.nan, 2.0, 3.0], [np.nan, np.nan, 4.0]]), torch.tensor([0.01, 1.0]), 0.01
    )
    assert float(loss) == pytest.approx((2500.0 + 10000.0 + 0.0) / 3.0, rel=1e-6)


def test_training_on_the_last_n_steps_learns_every_step() -> None:
    """predict_last_n = 4: one window scores its last four days; the loss falls, and every one of the last
    four outputs (not only the last) tracks the target."""
    data, raw, x_stat, settings = learnable_problem(epochs=4, predict_last_n=4, seq_length=14)
    # windows of 14 days: shift the inputs so that training day d still ends at input row d + 13
    raw = np.concatenate([np.zeros((raw.shape[0], 4, raw.shape[2]), dtype="float32"), raw], axis=1)
    result = train_member(MemberSpec(1, 0, 1000), data, raw, x_stat, settings)
    assert result.val_loss_initial is not None and result.val_loss[-1] is not None
    assert result.val_loss[-1] < 0.2 * result.val_loss_initial
    from somocloud.model.ealstm import EALSTM

    net = EALSTM(raw.shape[-1], x_stat.shape[-1], 16, 0.0, 1.0)
    net.load_state_dict(result.state)
    days = np.arange(20, 200, 7)
    cells = np.zeros_like(days)  # the validation cell
    xd, xs = gather_windows(raw, x_stat, cells, days, 14)
    with torch.no_grad():
        out = net(torch.from_numpy(xd), torch.from_numpy(xs), last_n=4).numpy()
    truth = window_targets(data.y, cells, days, 4)
    for k in range(4):
        assert np.corrcoef(out[:, k], truth[:, k])[0, 1] > 0.9, k


def _static_sensitivity(state: dict[str, torch.Tensor], raw: np.ndarray, x_stat: np.ndarray) -> float:
    """Mean |change| of the output when every cell's statics are swapped for another cell's."""
    from somocloud.model.ealstm import EALSTM

    net = EALSTM(raw.shape[-1], x_stat.shape[-1], 16, 0.0, 1.0)
    net.load_state_dict(state)
    days = np.arange(20, 280, 13)
    cells = np.tile(np.arange(x_stat.shape[0]), len(days))
    xd, xs = gather_windows(raw, x_stat, cells, np.repeat(days, x_stat.shape[0]), 10)
    with torch.no_grad():
        own = net(torch.from_numpy(xd), torch.from_numpy(xs)).numpy()
        other = net(torch.from_numpy(xd), torch.from_numpy(np.roll(xs, 1, axis=0))).numpy()
    return float(np.abs(own - other).mean())


def test_static_noise_is_seeded_and_loosens_the_grip_of_the_statics() -> None:
    """The target does not depend on the statics; noise on them during training makes the model lean on
    them less (its output moves less when a cell gets another cell's statics). Off by default, and the
    default keeps its own random stream."""
    data, raw, x_stat, plain = learnable_problem(epochs=3)
    _, _, _, noisy = learnable_problem(epochs=3, static_noise_std=1.0)
    assert plain.static_noise_std == 0.0
    a = train_member(MemberSpec(1, 0, 7), data, raw, x_stat, noisy)
    b = train_member(MemberSpec(1, 0, 7), data, raw, x_stat, noisy)
    base = train_member(MemberSpec(1, 0, 7), data, raw, x_stat, plain)
    assert same_state(a.state, b.state)
    assert not same_state(a.state, base.state)
    assert _static_sensitivity(a.state, raw, x_stat) < 0.7 * _static_sensitivity(base.state, raw, x_stat)
    assert a.val_loss[-1] is not None and a.val_loss_initial is not None
    assert a.val_loss[-1] < 0.2 * a.val_loss_initial  # it still learns the dynamics


def test_predict_last_n_must_leave_a_warm_up() -> None:
    from somocloud.config import ConfigError

    assert config_from_dict({"model": {"seq_length": 10, "predict_last_n": 9}}).model.predict_last_n == 9
    with pytest.raises(ConfigError, match="predict_last_n"):
        config_from_dict({"model": {"seq_length": 10, "predict_last_n": 10}})


def test_schedule_config_is_checked() -> None:
    from somocloud.config import ConfigError

    cfg = config_from_dict({"train": {"learning_rate_schedule": {21: 1e-4, 11: 5e-4}}})
    assert list(cfg.train.learning_rate_schedule.items()) == [(11, 5e-4), (21, 1e-4)]
    with pytest.raises(ConfigError, match="learning_rate_schedule"):
        config_from_dict({"train": {"learning_rate_schedule": {0: 1e-3}}})


def test_missing_forcing_variable_is_named(world: dict[str, Any], client: Any, tmp_path: Path) -> None:
    cfg = make_config(world["base"] / "world", tmp_path / "run")
    ds = stores.open_zarr(str(world["base"] / "world" / "forcing.zarr")).drop_vars("skt")
    cfg.stores.forcing = str(tmp_path / "forcing.zarr")
    stores.write_zarr(ds, cfg.stores.forcing)
    with pytest.raises(ValueError, match=r"forcing\.zarr: variable 'skt' is missing"):
        train(cfg, Context(client=client, show_progress=False))


def test_short_forcing_names_the_first_missing_day(
    world: dict[str, Any], client: Any, tmp_path: Path
) -> None:
    cfg = make_config(world["base"] / "world", tmp_path / "run")
    ds = stores.open_zarr(str(world["base"] / "world" / "forcing.zarr")).isel(time=slice(5, None))
    cfg.stores.forcing = str(tmp_path / "forcing.zarr")
    stores.write_zarr(ds, cfg.stores.forcing)
    first = cfg.lookback_start.isoformat()
    with pytest.raises(
        ValueError, match=f"forcing.zarr: `time` must cover every day .*first missing day {first}"
    ):
        train(cfg, Context(client=client, show_progress=False))
