"""Spatial k-fold cross-validation of the training (`train.cv_folds` > 1), run inside the `train` step.

The training cells are grouped into folds, cell by cell or by square spatial blocks of
`train.cv_block_size` cells (neighbouring cells then never sit on both sides of a split). For each fold,
scalers and every layer's members are fitted on the other folds' cells only (`train.fit_prepared`,
`train.fit_layers`), and the fold's cells are simulated with them, the cascade included
(`train.simulate_cells`): the upper layers' inputs of a held-out cell are its own out-of-fold
simulations, as at inference. Skill is then scored per layer at every cell against its targets over the
training days, and summarised by the median over cells; when a `truth` store exists (the synthetic world)
also against the true soil moisture of the cell. The result is the artifact's `cv.json`.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from somocloud import metrics
from somocloud.config import RunConfig
from somocloud.context import Context
from somocloud.layers import DEPTHS, N_LAYERS

log = logging.getLogger(__name__)

SCORES = ("r", "anomaly_r", "ubrmsd")
"""Metrics reported per cell and layer (`somocloud.metrics`)."""


def assign_folds(cells: np.ndarray, n_folds: int, seed: int, block_size: int | None = None) -> np.ndarray:
    """Fold (0 .. n_folds-1) of each `(row, col)` cell: groups (single cells, or the square blocks of
    `block_size` cells they fall in) are shuffled with `seed` and dealt to the folds in turn, so fold sizes
    differ by at most one group."""
    cells = np.asarray(cells, dtype="int64").reshape(-1, 2)
    if n_folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {n_folds}")
    keys = cells // block_size if block_size else cells
    groups, group_of_cell = np.unique(keys, axis=0, return_inverse=True)
    if len(groups) < n_folds:
        raise ValueError(
            f"train.cv_folds = {n_folds} but the {len(cells)} training cells form only {len(groups)} "
            f"{'spatial blocks' if block_size else 'groups'}; lower cv_folds or cv_block_size"
        )
    order = np.random.default_rng([seed, 5]).permutation(len(groups))
    fold_of_group = np.empty(len(groups), dtype="int64")
    fold_of_group[order] = np.arange(len(groups)) % n_folds
    return fold_of_group[group_of_cell.ravel()]


def cross_validate(cfg: RunConfig, ctx: Context, raw: Any) -> dict[str, Any]:
    """Out-of-fold skill of the whole training procedure (see the module docstring); JSON-able."""
    from somocloud.train import fit_layers, fit_prepared, simulate_cells

    folds = assign_folds(raw.train_cells, cfg.train.cv_folds, cfg.seed, cfg.train.cv_block_size)
    simulated = np.full(raw.y_raw.shape, np.nan, dtype="float32")
    for fold in range(cfg.train.cv_folds):
        held = np.flatnonzero(folds == fold)
        fitted = np.flatnonzero(folds != fold)
        log.info(
            "train: cross-validation fold %d/%d: %d cells held out", fold + 1, cfg.train.cv_folds, held.size
        )
        prep = fit_prepared(cfg, raw, fitted)
        results = fit_layers(cfg, ctx, prep)
        simulated[held] = simulate_cells(cfg, prep, results, raw.dyn_raw[held], raw.stat_raw[held])
    report = cv_report(cfg, raw.train_cells, folds, simulated, raw.y_raw)
    truth = read_truth(cfg, raw.train_cells)
    if truth is not None:
        report["against_truth"] = cv_report(cfg, raw.train_cells, folds, simulated, truth)["layers"]
    return report


def read_truth(cfg: RunConfig, cells: np.ndarray) -> np.ndarray | None:
    """The synthetic world's true soil moisture `(cells, training days, layers)`, or None without one."""
    import xarray as xr

    from somocloud import stores
    from somocloud.train import train_period

    url = cfg.store("truth")
    if not stores.exists(stores.join(url, "zarr.json")):
        return None
    start, end = train_period(cfg)
    ds = stores.open_zarr(url, chunks=None)
    rows = xr.DataArray(np.asarray(cells)[:, 0], dims="cell")
    cols = xr.DataArray(np.asarray(cells)[:, 1], dims="cell")
    picked = (
        ds["soil_moisture"].sel(time=slice(np.datetime64(start), np.datetime64(end))).isel(lat=rows, lon=cols)
    )
    return np.asarray(picked.transpose("cell", "time", "depth").values, dtype="float32")


def cv_report(
    cfg: RunConfig, cells: np.ndarray, folds: np.ndarray, simulated: np.ndarray, observed: np.ndarray
) -> dict[str, Any]:
    """Per-cell and median skill per layer of the out-of-fold simulation `(cells, days, layers)`."""
    layers: dict[str, Any] = {}
    for k in range(N_LAYERS):
        sim, obs = simulated[:, :, k], observed[:, :, k]
        scores = {
            "r": metrics.pearson_r(sim, obs, cfg.evaluate.min_overlap_days),
            "anomaly_r": metrics.anomaly_r(sim, obs, cfg.evaluate.min_overlap_days),
            "ubrmsd": metrics.ubrmsd(sim, obs, cfg.evaluate.min_overlap_days),
        }
        scored = np.isfinite(scores["r"])
        layers[str(k + 1)] = {
            "depth": float(DEPTHS[k]),
            "n_cells": int(scored.sum()),
            "median": {name: _median(values) for name, values in scores.items()},
            "cells": {name: [_number(v) for v in values] for name, values in scores.items()},
        }
    return {
        "n_folds": cfg.train.cv_folds,
        "block_size": cfg.train.cv_block_size,
        "cells": np.asarray(cells).tolist(),
        "folds": folds.tolist(),
        "min_overlap_days": cfg.evaluate.min_overlap_days,
        "layers": layers,
    }


def _median(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else None


def _number(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
