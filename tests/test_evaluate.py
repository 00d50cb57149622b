"""`evaluate` on a tiny hand-made product, targets, truth and split."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somocloud import stores
from somocloud.config import RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.evaluate import CONTRACT_COLUMNS, evaluate, read_split
from somocloud.grid import Grid
from somocloud.layers import DEPTH_BOUNDS, DEPTHS

HOLDOUT = [[0, 1], [1, 2]]
TRAIN = [[0, 0]]


def _config(root: Path) -> RunConfig:
    return config_from_dict(
        {
            "grid": {"resolution": 1.0, "lat_min": 10.0, "lat_max": 12.0, "lon_min": 20.0, "lon_max": 23.0},
            "period": {"start": "2020-01-01", "end": "2020-03-31"},
            "model": {"seq_length": 10},
            "stores": {"root": str(root)},
            "evaluate": {"min_overlap_days": 30, "cells_per_batch": 2, "lookback": False},  # no weights here
        }
    )


def _walk(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random-walk soil moisture along axis 0."""
    return (0.25 + 0.01 * np.cumsum(rng.standard_normal(shape), axis=0)).astype("float32")


@pytest.fixture()
def world(tmp_path: Path) -> RunConfig:
    """Truth over lookback_start..end; product = truth (+0.05 at cell (1,2)); targets at 3 cells."""
    cfg = _config(tmp_path)
    grid = Grid.from_config(cfg.grid)
    rng = np.random.default_rng(7)
    truth_time = pd.date_range(cfg.lookback_start, cfg.period.end)
    truth_sm = _walk(rng, (len(truth_time), 3, *grid.shape))
    dims = ("time", "depth", "lat", "lon")
    coords = {"depth": DEPTHS, **grid.coords()}
    truth = xr.Dataset({"soil_moisture": (dims, truth_sm)}, coords={"time": truth_time, **coords})
    stores.write_zarr(truth, cfg.store("truth"))

    time = pd.date_range(cfg.period.start, cfg.period.end)
    prod_sm = truth_sm[-len(time) :].copy()
    prod_sm[:, :, 1, 2] += np.float32(0.05)
    product = xr.Dataset(
        {
            "soil_moisture": (dims, prod_sm, {"units": "m3 m-3"}),
            "soil_moisture_spread": (dims, np.zeros_like(prod_sm)),
            "depth_bnds": (("depth", "nv"), DEPTH_BOUNDS),
        },
        coords={"time": time, **coords},
        attrs={"complete": True},
    )
    stores.write_zarr(product, cfg.store("product"), encoding={"soil_moisture": {"chunks": (30, 3, 1, 2)}})

    cells = np.array([[0, 1], [1, 2], [0, 0]])
    tg = np.empty((3, len(time), 3), dtype="float32")
    tg[0] = 0.5 * prod_sm[:, :, 0, 1] + 0.1  # perfectly correlated, half the amplitude
    tg[1] = prod_sm[:, :, 1, 2]
    tg[1, 20:] = np.nan  # only 20 days: below min_overlap_days
    tg[2] = _walk(rng, (len(time), 3))  # unrelated series
    targets = xr.Dataset(
        {"soil_moisture": (("cell", "time", "depth"), tg)},
        coords={
            "time": time,
            "depth": DEPTHS,
            "row": ("cell", cells[:, 0]),
            "col": ("cell", cells[:, 1]),
            "lat": ("cell", grid.lat[cells[:, 0]]),
            "lon": ("cell", grid.lon[cells[:, 1]]),
        },
    )
    stores.write_zarr(targets, cfg.store("targets"))
    stores.write_json(
        stores.join(cfg.store("model"), "split.json"), {"holdout_cells": HOLDOUT, "train_cells": TRAIN}
    )
    return cfg


def _read(cfg: RunConfig) -> tuple[pd.DataFrame, dict]:
    out = cfg.store("evaluation")
    table = pd.read_csv(stores.join(out, "metrics.csv"))
    return table, json.loads(Path(stores.join(out, "summary.json")).read_text())


def _row(table: pd.DataFrame, row: int, col: int, depth: float, reference: str) -> pd.Series:
    sel = table[(table.row == row) & (table.col == col) & np.isclose(table.depth, depth)]
    sel = sel[sel.reference == reference]
    assert len(sel) == 1
    return sel.iloc[0]


def test_evaluate_writes_metrics_and_summary(world: RunConfig, caplog: pytest.LogCaptureFixture) -> None:
    cfg = world
    with caplog.at_level(logging.INFO, logger="somocloud.evaluate"):
        urls = evaluate(cfg, Context(show_progress=False))
    assert urls == {"evaluation": cfg.store("evaluation")}
    table, summary = _read(cfg)

    assert list(table.columns[: len(CONTRACT_COLUMNS)]) == CONTRACT_COLUMNS
    assert len(table) == 3 * 3 * 2  # cells x depths x references
    assert set(table.reference) == {"targets", "truth"}
    assert (
        sorted(table[table.split == "holdout"][["row", "col"]].drop_duplicates().values.tolist()) == HOLDOUT
    )
    assert table[table.split == "train"][["row", "col"]].drop_duplicates().values.tolist() == TRAIN
    assert np.allclose(table[table.row == 1].lat, 11.5) and np.allclose(table[table.col == 2].lon, 22.5)

    product = stores.open_zarr(cfg.store("product"))["soil_moisture"].values.astype("float64")
    for k, depth in enumerate(DEPTHS):
        p = product[:, k, 0, 1]
        # targets = 0.5 p + 0.1: r = 1, ubRMSD = std(p - 0.5 p) = 0.5 std(p) (population std), 91 pairs
        t = _row(table, 0, 1, depth, "targets")
        assert t.n == 91 and t.r == pytest.approx(1.0, abs=1e-6)
        assert t.ubrmsd == pytest.approx(0.5 * np.std(p), rel=1e-5)
        assert t.anomaly_r == pytest.approx(1.0, abs=1e-6)
        # the product equals the truth at (0, 1) and is offset by 0.05 at (1, 2)
        tr = _row(table, 0, 1, depth, "truth")
        assert tr.rmse == pytest.approx(0.0, abs=1e-12) and tr.r == pytest.approx(1.0)
        off = _row(table, 1, 2, depth, "truth")
        assert off.rmse == pytest.approx(0.05, abs=1e-6) and off.ubrmsd == pytest.approx(0.0, abs=1e-6)
        # only 20 target days at (1, 2): below min_overlap_days, so NaN skill but n reported
        short = _row(table, 1, 2, depth, "targets")
        assert short.n == 20 and np.isnan(short.r) and np.isnan(short.ubrmsd)
        assert "r: fewer than 30 paired days" in short.nan_reasons  # min_overlap_days says why
        assert pd.isna(t.nan_reasons)  # every metric defined: no reason (an empty CSV field)
        # the training cell against an unrelated series: the plain Pearson r over all 91 days
        obs = stores.open_zarr(cfg.store("targets"))["soil_moisture"].values[2, :, k]
        unrelated = _row(table, 0, 0, depth, "targets")
        assert unrelated.r == pytest.approx(np.corrcoef(product[:, k, 0, 0], obs)[0, 1], abs=1e-9)
        assert unrelated.split == "train"

    medians = {
        (m["split"], m["reference"], m["layer"]): m for m in summary["rows"] if m["dataset"] == "product"
    }
    assert len(medians) == 2 * 2 * 3
    top = medians[("holdout", "targets", "0-10cm")]
    assert top["n_cells"] == 1 and top["n_cells_total"] == 2  # (1, 2) has too few days
    assert top["r"] == pytest.approx(1.0, abs=1e-6)
    truth_top = medians[("holdout", "truth", "0-10cm")]
    assert truth_top["n_cells"] == 2
    assert truth_top["rmse"] == pytest.approx(0.025, abs=1e-6)  # median of 0 and 0.05
    assert truth_top["rmse_q20"] == pytest.approx(0.01, abs=1e-6)  # linear between 0 and 0.05
    assert truth_top["rmse_q80"] == pytest.approx(0.04, abs=1e-6)
    assert medians[("train", "targets", "30-50cm")]["n_cells"] == 1
    assert summary["n_cells"] == {"holdout": 2, "train": 1}
    assert summary["references"] == ["targets", "truth"]
    assert summary["period"] == {"start": "2020-01-01", "end": "2020-03-31"}
    assert summary["provenance"]["somocloud_step"] == "evaluate"
    assert set(summary["provenance"]["somocloud_inputs"]) == {"model", "product", "targets", "truth"}
    assert "holdout  product      targets   0-10cm" in caplog.text


def test_evaluate_without_truth(world: RunConfig) -> None:
    cfg = world.model_copy(deep=True)
    cfg.stores.truth = str(Path(cfg.stores.root) / "no-truth.zarr")
    evaluate(cfg, Context(show_progress=False))
    table, summary = _read(cfg)
    assert set(table.reference) == {"targets"} and len(table) == 9
    assert summary["references"] == ["targets"]
    assert "truth" not in summary["provenance"]["somocloud_inputs"]


def test_split_cell_missing_from_targets(world: RunConfig) -> None:
    split_url = stores.join(world.store("model"), "split.json")
    stores.write_json(split_url, {"holdout_cells": [[1, 1]], "train_cells": TRAIN})
    with pytest.raises(
        KeyError,
        match=r"targets\.zarr: 1 holdout cells of .*split\.json are not target cells, first \(1, 1\)",
    ):
        evaluate(world, Context(show_progress=False))


def test_split_cell_outside_grid(world: RunConfig) -> None:
    split_url = stores.join(world.store("model"), "split.json")
    stores.write_json(split_url, {"holdout_cells": [[5, 0]], "train_cells": TRAIN})
    with pytest.raises(ValueError, match=r"split\.json: holdout cell \[5, 0\] is outside the product grid"):
        evaluate(world, Context(show_progress=False))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"train_cells": [[0, 0]]}', "'holdout_cells' is missing"),
        ('{"holdout_cells": [[0, 1, 2]], "train_cells": []}', "list of \\[row, col\\] integer pairs"),
        ('{"holdout_cells": [[0, 0]], "train_cells": [[0, 0]]}', "in both train_cells and holdout_cells"),
        ('{"holdout_cells": [[0, 0]],\n "train_cells": [[0, 0]', "not valid JSON \\(line 2\\)"),
    ],
)
def test_bad_split_json(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "split.json").write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_split(str(tmp_path))
    assert "split.json" in str(info.value)


def test_missing_split_json(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no split\.json"):
        read_split(str(tmp_path))


def test_other_gridded_datasets_are_scored_at_the_same_cells(world: RunConfig, tmp_path: Path) -> None:
    """A dataset given as NetCDF that equals the truth scores like the truth; one missing days is refused."""
    cfg = world.model_copy(deep=True)
    truth = stores.open_zarr(cfg.store("truth"), chunks=None).load()
    nc = tmp_path / "other.nc"
    truth.to_netcdf(nc)
    cfg.evaluate.datasets = {"other": str(nc)}
    evaluate(cfg, Context(show_progress=False))
    table, summary = _read(cfg)
    assert set(table.dataset) == {"product", "other"}
    for _, rows in table.groupby("split"):  # within a split, the product's rows first
        assert list(rows.dataset) == sorted(rows.dataset, key=lambda d: d != "product")
    other = table[(table.dataset == "other") & (table.reference == "truth")]
    assert np.allclose(other.rmse, 0.0, atol=1e-7) and np.allclose(other.r, 1.0)  # truth against itself
    at_offset = _row(table[table.dataset == "product"], 1, 2, DEPTHS[0], "truth")
    assert at_offset.rmse == pytest.approx(0.05, abs=1e-6)  # the product's rows are unchanged
    keys = {(m["split"], m["dataset"], m["reference"], m["layer"]) for m in summary["rows"]}
    assert ("holdout", "other", "targets", "0-10cm") in keys and (
        "holdout",
        "product",
        "truth",
        "0-10cm",
    ) in keys
    assert "dataset:other" in summary["provenance"]["somocloud_inputs"]

    truth.isel(time=slice(0, 40)).to_netcdf(tmp_path / "short.nc")
    cfg.evaluate.datasets = {"short": str(tmp_path / "short.nc")}
    with pytest.raises(
        ValueError, match=r"evaluate.datasets.short: .*short.nc must cover the product's days"
    ):
        evaluate(cfg, Context(show_progress=False))
