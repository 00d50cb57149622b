"""Multiscale training (Liu et al. 2022): coarse gridded soil moisture as an areal target.

A coarse source (a 9 or 36 km satellite product, a reanalysis, or the synthetic world's "satellite") is
aligned to the run grid by an explicit fine → coarse membership map: every run-grid cell whose centre lies
inside a coarse cell belongs to it. The areal term of the loss compares, for a (coarse cell, day), the mean
of the model's predictions at the coarse cell's fine land cells with the coarse value (`train.multiscale`);
`train` mixes it into every batch with the in-situ term, weighted by `alpha`. The model is unchanged, so
`predict` runs it as any other.

Only the run grid's land cells count: a coarse cell is used when at least `min_land_fraction` of its
run-grid cells are land, and its fine mean is over those land cells.
"""

from __future__ import annotations

import datetime as dt
import logging
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from somocloud import stores
from somocloud.grid import Grid

log = logging.getLogger(__name__)


def cell_edges(centres: np.ndarray) -> np.ndarray:
    """(n + 1,) edges of a regular axis of cell `centres` (ascending or descending), half a step outside."""
    c = np.asarray(centres, dtype="float64")
    if c.size < 2:
        raise ValueError("a coarse axis needs at least two cells to know its spacing")
    step = np.diff(c)
    if not np.allclose(step, step[0], rtol=1e-6, atol=1e-9):
        raise ValueError("the coarse grid must be regular")
    return np.concatenate([c - step[0] / 2, c[-1:] + step[0] / 2])


def axis_membership(fine: np.ndarray, coarse: np.ndarray) -> np.ndarray:
    """For each fine centre, the index of the coarse cell holding it, -1 outside (lower edge inclusive)."""
    edges = cell_edges(coarse)
    lo = np.minimum(edges[:-1], edges[1:])
    hi = np.maximum(edges[:-1], edges[1:])
    f = np.asarray(fine, dtype="float64")[:, None]
    inside = (f >= lo[None, :]) & (f < hi[None, :])
    return np.where(inside.any(axis=1), inside.argmax(axis=1), -1).astype("int64")


def membership(grid: Grid, coarse_lat: np.ndarray, coarse_lon: np.ndarray) -> np.ndarray:
    """(nlat, nlon) flat index `i * n_coarse_lon + j` of the coarse cell holding each run-grid cell, -1 when
    its centre lies outside the coarse grid."""
    i = axis_membership(grid.lat, coarse_lat)
    j = axis_membership(grid.lon, coarse_lon)
    flat = i[:, None] * len(coarse_lon) + j[None, :]
    return np.where((i[:, None] >= 0) & (j[None, :] >= 0), flat, -1).astype("int64")


def enough_land(member: np.ndarray, land: np.ndarray, n_coarse: int, min_land_fraction: float) -> np.ndarray:
    """(n_coarse,) True where a coarse cell holds land, at least `min_land_fraction` of its fine cells."""
    inside = member >= 0
    cells = np.bincount(member[inside], minlength=n_coarse)
    land_cells = np.bincount(member[inside & land.astype(bool)], minlength=n_coarse)
    return np.asarray((land_cells > 0) & (land_cells >= min_land_fraction * cells))


def aggregate(
    values: np.ndarray, member: np.ndarray, n_coarse: int, land: np.ndarray, min_land_fraction: float = 0.0
) -> np.ndarray:
    """Fine → coarse mean with masks: (..., nlat, nlon) → (..., n_coarse).

    The mean of a coarse cell is over its fine land cells with a finite value; it is NaN where none has
    one, and everywhere when fewer than `min_land_fraction` of the fine cells inside it are land."""
    from scipy import sparse

    v = np.asarray(values, dtype="float64")
    lead = v.shape[:-2]
    flat = v.reshape(-1, member.size)
    owner = member.ravel()
    is_land = land.ravel().astype(bool)
    use = (owner >= 0) & is_land
    # (fine, coarse) 0/1 weights: a fine land cell counts for the coarse cell holding it.
    weights = sparse.csr_matrix(
        (np.ones(int(use.sum())), (np.flatnonzero(use), owner[use])), shape=(member.size, n_coarse)
    )
    ok = np.isfinite(flat)
    total = (weights.T @ np.where(ok, flat, 0.0).T).T  # (rows, coarse) sums
    count = (weights.T @ ok.astype("float64").T).T
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.asarray(total) / np.asarray(count)
    mean[:, ~enough_land(member, land, n_coarse, min_land_fraction)] = np.nan
    return mean.reshape(*lead, n_coarse)


@dataclass
class CoarseTargets:
    """A coarse source aligned to the run grid.

    Attributes:
        coarse_ids: (k,) flat ids of the used coarse cells (`membership`'s numbering).
        members: (k, m) flat run-grid indexes (`row * nlon + col`) of each used coarse cell's fine land
            cells, -1 padded.
        values: (k, days) coarse soil moisture, m3 m-3 (rescaled to the reference when configured).
    """

    coarse_ids: np.ndarray
    members: np.ndarray
    values: np.ndarray

    @property
    def fine_cells(self) -> np.ndarray:
        """(n,) flat run-grid indexes of every fine cell used, sorted (the areal cells)."""
        return np.unique(self.members[self.members >= 0])


def read_coarse_targets(
    url: str,
    variable: str,
    grid: Grid,
    land: np.ndarray,
    start: dt.date,
    end: dt.date,
    min_land_fraction: float,
) -> CoarseTargets:
    """Read the coarse source over `start`..`end` (every day must be on its time axis; missing values are
    NaN) and align it to the run grid."""
    import pandas as pd

    ds = stores.open_zarr(url, chunks=None)
    stores.check_variables(ds, url, [variable], ("time", "lat", "lon"))
    clat, clon = ds["lat"].values, ds["lon"].values
    try:
        member = membership(grid, clat, clon)
    except ValueError as exc:
        raise stores.StoreError(f"{url}: {exc}") from None
    fine_lat_step = abs(float(grid.lat[1] - grid.lat[0])) if grid.nlat > 1 else np.inf
    if abs(float(clat[1] - clat[0])) < fine_lat_step * (1 - 1e-6):
        raise stores.StoreError(f"{url}: the coarse grid must not be finer than the run grid")
    days = pd.date_range(start, end, freq="D")
    have = pd.DatetimeIndex(ds["time"].values).normalize()
    if not days.isin(have).all():
        missing = days[~days.isin(have)]
        raise stores.StoreError(
            f"{url}: variable 'time' lacks {len(missing)} of the training days (first {missing[0].date()}); "
            "a coarse source must list every day, with NaN where it has no value"
        )
    values = ds[variable].transpose("time", "lat", "lon").sel(time=days.values).values  # (days, clat, clon)
    n_coarse = len(clat) * len(clon)
    flat_values = values.reshape(len(days), n_coarse).T.astype("float32")  # (coarse, days)
    used = np.flatnonzero(enough_land(member, land, n_coarse, min_land_fraction))
    used = used[np.isfinite(flat_values[used]).any(axis=1)]
    groups = [np.flatnonzero((member.ravel() == k) & land.ravel()) for k in used]
    width = max((len(g) for g in groups), default=0)
    members = np.full((len(used), width), -1, dtype="int64")
    for row, g in enumerate(groups):
        members[row, : len(g)] = g
    log.info("multiscale: %d coarse cells of %s hold %d run-grid land cells", len(used), url,
             int((members >= 0).sum()))  # fmt: skip
    return CoarseTargets(used, members, flat_values[used])


def rescale_to_reference(targets: CoarseTargets, reference: np.ndarray, min_overlap: int) -> CoarseTargets:
    """Each coarse series mapped to the mean and std of `reference` (fine cells, days) averaged over its
    fine cells, over the days both have (`targets.rescale`); a series that cannot be is dropped."""
    from somocloud.targets import rescale

    keep, values = [], []
    for row, fine in enumerate(targets.members):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN days stay NaN
            ref = np.nanmean(reference[fine[fine >= 0]], axis=0) if (fine >= 0).any() else None
        result = None if ref is None else rescale(targets.values[row], ref, min_overlap)
        if result is not None and result.values is not None:
            keep.append(row)
            values.append(result.values.astype("float32"))
    dropped = len(targets.members) - len(keep)
    if dropped:
        log.info(
            "multiscale: %d coarse cells could not be rescaled to the reference and are not used", dropped
        )
    index = np.asarray(keep, dtype="int64")
    return CoarseTargets(
        targets.coarse_ids[index],
        targets.members[index],
        np.stack(values) if values else np.zeros((0, targets.values.shape[1]), "float32"),
    )


@dataclass
class ArealLayerData:
    """One layer's areal samples (numpy only, shipped to the training tasks).

    Attributes:
        y: (coarse, days) standardised coarse target, NaN where missing.
        cell_std: (coarse,) std of the raw coarse series (m3 m-3), for NSE*.
        members: (coarse, m) indexes into the areal cells' input arrays, -1 padded.
        fit_coarse, fit_days: The samples: (coarse cell, training day) with a target and complete windows
            at every member cell.
        alpha: Weight of the in-situ term; the areal term gets 1 - alpha.
        per_batch: Coarse samples per optimiser step.
    """

    y: np.ndarray
    cell_std: np.ndarray
    members: np.ndarray
    fit_coarse: np.ndarray
    fit_days: np.ndarray
    alpha: float
    per_batch: int


def areal_layer_data(
    raw: np.ndarray,
    members: np.ndarray,
    ok_window: np.ndarray,
    mean: float,
    std: float,
    alpha: float,
    per_batch: int,
) -> ArealLayerData:
    """Samples and standardised targets of the areal term; `raw` (coarse, days) in m3 m-3, `ok_window`
    (areal cells, days) True where a cell's input window ending that day is complete."""
    padded = np.concatenate([ok_window, np.ones((1, ok_window.shape[1]), bool)])  # -1 → always fine
    complete = padded[members].all(axis=1)  # (coarse, days)
    coarse, days = np.nonzero(np.isfinite(raw) & complete)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a coarse cell without values: std NaN → 0
        cell_std = np.nan_to_num(np.nanstd(raw.astype("float64"), axis=1), nan=0.0)
    return ArealLayerData(
        y=((raw - mean) / std).astype("float32"),
        cell_std=cell_std.astype("float32"),
        members=members,
        fit_coarse=coarse,
        fit_days=days,
        alpha=alpha,
        per_batch=per_batch,
    )


@dataclass
class ArealBatch:
    """One step's coarse samples: the windows of their fine cells and what to compare their mean with."""

    x_dyn: np.ndarray
    """(n, seq_length, n_dyn) windows of the member cells, sample after sample."""
    x_stat: np.ndarray
    """(n, n_stat)."""
    owner: np.ndarray
    """(n,) which sample each window belongs to."""
    target: np.ndarray
    """(samples,) standardised coarse targets."""
    cell_std: np.ndarray
    """(samples,) std of each sample's coarse series (m3 m-3)."""


def areal_batch(
    data: ArealLayerData, x_dyn: np.ndarray, x_stat: np.ndarray, rng: np.random.Generator, seq_length: int
) -> ArealBatch:
    """`data.per_batch` random coarse samples with the input windows of all their fine cells."""
    from somocloud.train import gather_windows

    pick = rng.integers(0, len(data.fit_coarse), size=min(data.per_batch, len(data.fit_coarse)))
    coarse, days = data.fit_coarse[pick], data.fit_days[pick]
    members = data.members[coarse]  # (samples, m)
    valid = members >= 0
    counts = valid.sum(axis=1)
    xd, xs = gather_windows(x_dyn, x_stat, members[valid], np.repeat(days, counts), seq_length)
    return ArealBatch(
        xd, xs, np.repeat(np.arange(len(pick)), counts), data.y[coarse, days], data.cell_std[coarse]
    )


def areal_term(fine: Any, batch: ArealBatch, epsilon: float) -> Any:
    """NSE* of the mean of the fine-cell predictions `fine` (n,) per sample against the coarse targets."""
    import torch

    from somocloud.train import nse_star_loss

    owner = torch.from_numpy(batch.owner)
    n = len(batch.target)
    sums = torch.zeros(n, dtype=fine.dtype).index_add(0, owner, fine)
    counts = torch.zeros(n, dtype=fine.dtype).index_add(0, owner, torch.ones_like(fine))
    return nse_star_loss(
        sums / counts, torch.from_numpy(batch.target), torch.from_numpy(batch.cell_std), epsilon
    )
