"""Multiscale training: the fine → coarse membership and mean operator on hand-made cases, the areal term,
the synthetic satellite, and a training run that uses it (`train.multiscale`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from somocloud import multiscale as ms
from somocloud.config import ConfigError, GridConfig, MultiscaleConfig, config_from_dict
from somocloud.grid import Grid


def test_axis_membership_by_cell_centre_either_direction() -> None:
    fine = np.array([0.5, 1.5, 2.5, 3.5, 4.5])
    assert ms.axis_membership(fine, np.array([1.0, 3.0])).tolist() == [0, 0, 1, 1, -1]  # 4.5 is outside
    assert ms.axis_membership(fine, np.array([3.0, 1.0])).tolist() == [1, 1, 0, 0, -1]  # descending coarse
    # A fine centre on a coarse edge belongs to the cell above the edge (lower edge inclusive).
    assert ms.axis_membership(np.array([2.0]), np.array([1.0, 3.0])).tolist() == [1]
    with pytest.raises(ValueError, match="regular"):
        ms.axis_membership(fine, np.array([1.0, 3.0, 4.0]))


def test_membership_of_a_grid() -> None:
    grid = Grid.from_config(GridConfig(resolution=1.0, lat_min=0, lat_max=3, lon_min=0, lon_max=4))
    member = ms.membership(grid, np.array([1.0, 3.0]), np.array([1.0, 3.0]))  # 2 x 2 coarse cells of 2°
    assert member.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3]]


HAND = np.arange(16.0).reshape(4, 4)
BLOCKS = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])


def test_aggregate_means_over_land_cells_with_values() -> None:
    land = np.ones((4, 4), bool)
    land[0, 0] = False  # sea: never counted
    values = HAND.copy()
    values[3, 3] = np.nan  # missing: the mean is over the other three
    got = ms.aggregate(values, BLOCKS, 4, land)
    np.testing.assert_allclose(
        got, [(1 + 4 + 5) / 3, (2 + 3 + 6 + 7) / 4, (8 + 9 + 12 + 13) / 4, (10 + 11 + 14) / 3]
    )


def test_aggregate_masks_coarse_cells_with_too_little_land_or_no_value() -> None:
    land = np.ones((4, 4), bool)
    land[0, :] = False  # coarse cells 0 and 1 are half sea
    land[2:, 2:] = False  # coarse cell 3 is all sea
    values = HAND.copy()
    values[2:, :2] = np.nan  # coarse cell 2 has no value
    got = ms.aggregate(values, BLOCKS, 4, land, min_land_fraction=0.5)
    np.testing.assert_allclose(got[:2], [(4 + 5) / 2, (6 + 7) / 2])
    assert np.isnan(got[2:]).all()
    strict = ms.aggregate(values, BLOCKS, 4, land, min_land_fraction=0.75)
    assert np.isnan(strict).all()


def test_aggregate_keeps_leading_axes_and_ignores_cells_outside() -> None:
    member = BLOCKS.copy()
    member[:, 3] = -1  # the last column lies outside the coarse grid
    stack = np.stack([HAND, 10 * HAND])  # (time, lat, lon)
    got = ms.aggregate(stack, member, 4, np.ones((4, 4), bool))
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got[0], [2.5, 4.0, 10.5, 12.0])
    np.testing.assert_allclose(got[1], 10 * got[0])


def test_areal_term_compares_the_mean_of_each_samples_fine_cells() -> None:
    batch = ms.ArealBatch(
        x_dyn=np.zeros((5, 1, 1), "float32"),
        x_stat=np.zeros((5, 1), "float32"),
        owner=np.array([0, 0, 0, 1, 1]),
        target=np.array([2.0, 0.0], "float32"),
        cell_std=np.array([0.0, 0.0], "float32"),
    )
    fine = torch.tensor([1.0, 2.0, 3.0, -1.0, 1.0], requires_grad=True)  # means 2 and 0: perfect
    assert float(ms.areal_term(fine, batch, epsilon=1.0)) == pytest.approx(0.0)
    off = torch.tensor([2.0, 3.0, 4.0, -1.0, 1.0])  # sample 0's mean is 1 too high
    assert float(ms.areal_term(off, batch, epsilon=1.0)) == pytest.approx(0.5)


def test_multiscale_config_is_checked() -> None:
    assert MultiscaleConfig().layers == [1] and MultiscaleConfig().alpha == 0.5
    for bad in ({"alpha": 1.5}, {"layers": [4]}, {"layers": [1, 1]}, {"layers": []}, {"surprise": 1}):
        with pytest.raises(ConfigError):
            config_from_dict({"train": {"multiscale": bad}})


@pytest.mark.slow
def test_training_with_a_synthetic_satellite(tmp_path) -> None:
    from somocloud import steps, stores
    from somocloud.context import Context

    from .conftest import tiny_config

    # Layers 1 and 2, with the cascade: layer 2's areal cells need layer 1's simulation there.
    cfg = tiny_config(
        str(tmp_path / "ms"),
        synthetic={"coarse_factor": 2},
        train={"multiscale": {"alpha": 0.5, "layers": [1, 2]}},
    )
    assert cfg.model.cascade
    with Context(show_progress=False) as ctx:
        for verb in ("synthetic", "forcing", "statics", "ingest", "targets"):
            steps.entry(verb)(cfg, ctx)
        sat = stores.open_zarr(cfg.store("coarse_targets"), chunks=None)
        truth = stores.open_zarr(cfg.store("truth"), chunks=None)["soil_moisture"]
        assert sat["sm"].shape == (truth.sizes["time"], 4, 5)  # 8 x 10 cells in blocks of 2
        values = sat["sm"].values
        assert 0.2 < np.isnan(values).mean() < 0.6  # gaps (and sea blocks)
        # Without noise and gaps the satellite is the land mean of the truth over each block.
        grid = Grid.from_config(cfg.grid)
        land = np.isfinite(truth.values[0, 0])
        member = ms.membership(grid, sat["lat"].values, sat["lon"].values)
        exact = ms.aggregate(truth.values[:, 0], member, 20, land, 0.5).reshape(values.shape)
        both = np.isfinite(values) & (exact > 0.1)  # away from 0, where the clip would cut the noise
        assert both.sum() > 100
        assert (values[both] - exact[both]).std() == pytest.approx(0.02, rel=0.2)

        steps.entry("train")(cfg, ctx)
        metrics = stores.read_json(stores.join(cfg.store("model"), "metrics.json"))
        assert (
            metrics["layers"]["1"]["areal_samples"] > 1000 and metrics["layers"]["2"]["areal_samples"] > 1000
        )
        assert "areal_samples" not in metrics["layers"]["3"]
        steps.entry("predict")(cfg, ctx)  # the model is an ordinary one
        assert stores.zarr_attrs(cfg.store("product"))["complete"] is True
