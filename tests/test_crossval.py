"""Spatial k-fold cross-validation: fold assignment, scalers fitted on the training folds only, and the
out-of-fold skill report written by `train` into the artifact's `cv.json`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from somocloud import stores
from somocloud.config import config_from_dict
from somocloud.context import Context
from somocloud.crossval import assign_folds
from somocloud.layers import DYNAMIC_INPUTS, STATIC_INPUTS
from somocloud.train import RawData, fit_prepared, train
from tests.test_train import make_config

pytest_plugins = ["tests.test_train"]


def test_folds_are_balanced_deterministic_and_keep_blocks_together() -> None:
    cells = np.array([(r, c) for r in range(6) for c in range(5)])
    folds = assign_folds(cells, 5, seed=1)
    assert np.bincount(folds).tolist() == [6] * 5
    assert np.array_equal(folds, assign_folds(cells, 5, seed=1))
    assert not np.array_equal(folds, assign_folds(cells, 5, seed=2))
    blocked = assign_folds(cells, 2, seed=1, block_size=3)
    for r0 in (0, 3):
        for c0 in (0, 3):
            block = (cells[:, 0] // 3 == r0 // 3) & (cells[:, 1] // 3 == c0 // 3)
            assert len(set(blocked[block].tolist())) == 1  # a block never straddles two folds
    with pytest.raises(ValueError, match="form only 4 spatial blocks"):
        assign_folds(cells, 5, seed=1, block_size=3)


def test_scalers_and_target_statistics_come_from_the_fitted_cells_only() -> None:
    cfg = config_from_dict({"model": {"seq_length": 2, "cascade": False}})
    n_cells, n_days = 4, 5
    dyn = np.zeros((n_cells, n_days + 1, len(DYNAMIC_INPUTS)), dtype="float32")
    dyn[:, :, 1] = np.arange(n_cells)[:, None] * 10.0  # t2m: 0, 10, 20, 30 by cell
    y = np.zeros((n_cells, n_days, 3), dtype="float32") + np.arange(n_cells)[:, None, None] * 0.1
    raw = RawData(
        train_cells=np.array([[0, i] for i in range(n_cells)]),
        holdout_cells=np.zeros((0, 2), dtype="int64"),
        dyn_raw=dyn,
        stat_raw=np.ones((n_cells, len(STATIC_INPUTS)), dtype="float32"),
        y_raw=y,
        lead=0,
    )
    prep = fit_prepared(cfg, raw, np.array([0, 1]))  # the held-out fold is cells 2 and 3
    assert prep.scaler.mean["t2m"] == pytest.approx(5.0) and prep.scaler.std["t2m"] == pytest.approx(5.0)
    assert prep.target_mean[0] == pytest.approx(0.05)
    assert prep.x_forcing.shape[0] == 2 and prep.train_cells.tolist() == [[0, 0], [0, 1]]


def test_train_writes_out_of_fold_skill(world: dict[str, Any], client: Any, tmp_path: Path) -> None:
    cfg = make_config(
        world["base"] / "world", tmp_path / "cv", cv_folds=2, epochs=8, max_windows_per_epoch=1024
    )
    train(cfg, Context(client=client, show_progress=False))
    url = cfg.store("model")
    cv = stores.read_json(stores.join(url, "cv.json"))
    split = stores.read_json(stores.join(url, "split.json"))
    assert cv["n_folds"] == 2 and sorted(map(tuple, cv["cells"])) == sorted(map(tuple, split["train_cells"]))
    assert sorted(set(cv["folds"])) == [0, 1]
    for k in ("1", "2", "3"):
        layer = cv["layers"][k]
        assert layer["n_cells"] == len(cv["cells"])
        # the target follows the rain through the forcing: out-of-fold skill is clearly positive
        assert layer["median"]["r"] > 0.5, (k, layer["median"])
        assert 0 < layer["median"]["ubrmsd"] < 0.05
    assert stores.exists(stores.join(url, "manifest.json"))
