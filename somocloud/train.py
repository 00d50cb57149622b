"""The `train` step: forcing + statics + targets → the `model` artifact (EA-LSTM members per layer).

What it does, in order:

1. Split: the cells with any finite target are shuffled with `cfg.seed`; `train.holdout_fraction` of
   them are held out for `evaluate` (`split.json`) and never read again here: their forcing, statics and
   targets play no part in scalers or weights. With `train.holdout_region` (the transfer experiment) the
   cells inside that box are held out instead.
2. Inputs: only the training cells' pixels are read from the forcing cube (one vectorised point
   selection), for the training days plus the `seq_length - 1` days before them, and held once in memory
   as (cells, time, features). A sample is (cell, day) with a finite target, a fully finite input window
   of `seq_length` days ending that day and finite statics; windows are gathered by index per batch.
3. Standardisation: one global mean/std per input name (training cells and days only), one target
   mean/std per layer (SoMo.ml's global z-scoring).
4. Loss NSE*: mean over the batch of (ŷ − y)² / (s_c + ε)², y and ŷ standardised, s_c the std of the raw
   target (m3 m-3) at the sample's cell over the training period. ε (`train.nse_epsilon`, default 0.05) is
   in the target's unit. It was chosen by a measurement on real stations (docs/uscrn-experiment.md): USCRN
   per-station daily stds span 0.01-0.11 m3 m-3, and held-out skill was best at ε = 0.05 among 0.005,
   0.02, 0.05 and 0.1. At 0.05 a quiet station (s = 0.02) weighs (0.16/0.07)² ≈ 5x a lively one
   (s = 0.11); at 0.005 that is 21x, which over-weights near-constant series.
   With `model.predict_last_n` = n > 1 (models for `blocked` inference) a sample is a complete window
   whose last n days hold some target, ŷ is the head on each of the last n hidden states, and the mean
   runs over the finite targets among them.
5. The layer cascade (`model.cascade`): layers are trained in order; after layer k's members are
   trained, their ensemble-mean simulation at the training cells on every day with a complete window
   (`simulate_layer`, the same code path as `predict`) becomes the input `sm_layer<k>` of the layers
   below. Observed targets are never fed as inputs, so a deeper layer learns from what it will be given
   at inference. The forcing is read `model.stages x (seq_length - 1)` days before the first training day
   so that even the first training window of layer 3 sees simulated (not missing) upper layers.
6. Members: `train.n_members` per layer, each an independent Dask task with seed
   `train.seed + 1000 * layer + member` (layer 1-based); Adam, gradient-norm clipping, a random subset of
   at most `train.max_windows_per_epoch` windows per epoch, and a validation loss per epoch on the windows
   of `train.validation_fraction` of the training cells (not fitted).

The same config and seed give bit-identical weights on CPU: every random draw is seeded, torch runs with
deterministic algorithms, and the training tasks of one worker process run one at a time (torch's RNG
and thread pool are per process).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr

from somocloud import provenance, stores
from somocloud.config import Region, RunConfig
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.layers import (
    DEPTHS,
    DYNAMIC_INPUTS,
    N_LAYERS,
    STATIC_INPUTS,
    layer_dynamic_inputs,
    simulated_layer,
)
from somocloud.model.artifact import LayerCard, ModelCard, save_artifact
from somocloud.model.features import Scaler, stack_inputs
from somocloud.multiscale import ArealLayerData, areal_batch, areal_term

log = logging.getLogger(__name__)

STEP = "train"
SEED_LAYER_STRIDE = 1000
"""Member m of layer k trains with seed `train.seed + SEED_LAYER_STRIDE * k + m`."""
TARGET_VARIABLE = "soil_moisture"

# Training tasks of one worker process run one at a time: torch's global RNG (initialisation, dropout) and
# its thread pool are per process, so concurrent tasks in one process would not be reproducible.
_TORCH_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------------
# Split and sample selection (pure numpy)


def split_cells(cells: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out a share of cells, deterministically.

    Args:
        cells: (n, 2) int array of [row, col], one row per cell with any target.
        fraction: Share to hold out; at least one cell when > 0 and there are two cells or more, and
            never all of them.
        seed: Seed of the shuffle (`cfg.seed`).

    Returns:
        (train, holdout) as (n_train, 2) and (n_holdout, 2) arrays, each sorted by row then column.
    """
    cells = _sorted_cells(np.asarray(cells, dtype="int64").reshape(-1, 2))
    n = len(cells)
    n_hold = 0
    if fraction > 0 and n >= 2:
        n_hold = min(max(round(fraction * n), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    hold = np.zeros(n, dtype=bool)
    hold[order[:n_hold]] = True
    return cells[~hold], cells[hold]


def split_by_region(cells: np.ndarray, grid: Grid, region: Region) -> tuple[np.ndarray, np.ndarray]:
    """The transfer split: cells whose centres lie in `region` are held out, the others train.

    Returns (train, holdout) like `split_cells`; a region holding none or all of the cells is an error."""
    cells = _sorted_cells(np.asarray(cells, dtype="int64").reshape(-1, 2))
    inside = region.contains(grid.lat[cells[:, 0]], grid.lon[cells[:, 1]])
    if not inside.any() or inside.all():
        raise ValueError(
            f"train.holdout_region {region.model_dump()} holds {int(inside.sum())} of the {len(cells)} target "
            "cells: it must hold some, and leave some to train on"
        )
    return cells[~inside], cells[inside]


def _sorted_cells(cells: np.ndarray) -> np.ndarray:
    return cells[np.lexsort((cells[:, 1], cells[:, 0]))] if len(cells) else cells


def pick_validation(n_cells: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask over the training cells marking the validation cells (none when fraction is 0 or
    there are fewer than two cells; else at least one and never all)."""
    mask = np.zeros(n_cells, dtype=bool)
    if fraction > 0 and n_cells >= 2:
        n_val = min(max(round(fraction * n_cells), 1), n_cells - 1)
        mask[np.random.default_rng([seed, 1]).permutation(n_cells)[:n_val]] = True
    return mask


def valid_window_ends(finite: np.ndarray, seq_length: int) -> np.ndarray:
    """Which windows of `seq_length` steps are entirely finite.

    Args:
        finite: (cells, steps) bool, True where every input of that step is finite.
        seq_length: Window length.

    Returns:
        (cells, steps - seq_length + 1) bool; entry j covers steps j .. j + seq_length - 1.
    """
    bad = np.concatenate([np.zeros((finite.shape[0], 1), dtype="int64"), np.cumsum(~finite, axis=1)], axis=1)
    return np.asarray((bad[:, seq_length:] - bad[:, : bad.shape[1] - seq_length]) == 0)


def gather_windows(
    x_dyn: np.ndarray, x_stat: np.ndarray, cells: np.ndarray, days: np.ndarray, seq_length: int
) -> tuple[np.ndarray, np.ndarray]:
    """The input windows of samples (cell index, training-day index), gathered from the arrays.

    `x_dyn` (cells, days + seq_length - 1, n_dyn) starts `seq_length - 1` days before the first training
    day, so the window of training day j is rows j .. j + seq_length - 1. Returns (batch, seq_length,
    n_dyn) and (batch, n_stat) copies."""
    steps = days[:, None] + np.arange(seq_length)[None, :]
    return x_dyn[cells[:, None], steps], x_stat[cells]


def nse_star_loss(y_hat: Any, y: Any, cell_std: Any, epsilon: float) -> Any:
    """NSE* (Kratzert et al. 2019): mean of (ŷ − y)² / (s_c + ε)² over the batch (torch tensors).

    y, ŷ are standardised; `cell_std` s_c and ε are in the raw target unit (m3 m-3). With
    `predict_last_n` > 1, y and ŷ are (batch, n), `cell_std` (batch,), and the mean is over the finite
    targets (neuralhydrology's masked NSE)."""
    if y.dim() == 1:
        return (((y_hat - y) / (cell_std + epsilon)) ** 2).mean()
    finite = y.isfinite()
    weight = (cell_std + epsilon)[:, None].expand_as(y)
    return (((y_hat[finite] - y[finite]) / weight[finite]) ** 2).mean()


def window_targets(y: np.ndarray, cells: np.ndarray, days: np.ndarray, last_n: int) -> np.ndarray:
    """The targets of windows ending on training days `days`: (batch,) for last_n 1, else (batch, last_n)
    over days d - last_n + 1 .. d (NaN before the first training day and where missing)."""
    if last_n == 1:
        return y[cells, days]
    steps = days[:, None] - last_n + 1 + np.arange(last_n)[None, :]
    out = y[cells[:, None], np.maximum(steps, 0)]
    out[steps < 0] = np.nan
    return out


def any_target_in_last_n(finite: np.ndarray, last_n: int) -> np.ndarray:
    """(cells, days) bool: some target among days d - last_n + 1 .. d is finite."""
    count = np.cumsum(finite, axis=1)
    before = np.zeros_like(count)
    before[:, last_n:] = count[:, :-last_n]
    return np.asarray(count - before > 0)


# ----------------------------------------------------------------------------------------------------
# Data handed to the training tasks


@dataclass(frozen=True)
class Settings:
    """Hyper-parameters of one member's training (plain values, shipped to the workers)."""

    n_static: int
    hidden_size: int
    dropout: float
    initial_forget_bias: float
    seq_length: int
    epochs: int
    batch_size: int
    learning_rate: float
    max_windows_per_epoch: int | None
    grad_clip: float
    nse_epsilon: float
    threads: int
    learning_rate_schedule: tuple[tuple[int, float], ...] = ()
    early_stopping_patience: int | None = None
    predict_last_n: int = 1
    static_noise_std: float = 0.0
    """Std of Gaussian noise on each training window's standardised statics (0: none, SoMo.ml). Only the
    USCRN experiment sets it: it lowered every score there (docs/uscrn-experiment.md, session 6)."""

    def rate(self, epoch: int) -> float:
        """The learning rate of 1-based `epoch`."""
        rate = self.learning_rate
        for first, value in self.learning_rate_schedule:
            if epoch >= first:
                rate = value
        return rate

    @classmethod
    def from_config(cls, cfg: RunConfig) -> Settings:
        m, t = cfg.model, cfg.train
        return cls(
            n_static=len(STATIC_INPUTS),
            hidden_size=m.hidden_size,
            dropout=m.dropout,
            initial_forget_bias=m.initial_forget_bias,
            seq_length=m.seq_length,
            epochs=t.epochs,
            batch_size=t.batch_size,
            learning_rate=t.learning_rate,
            max_windows_per_epoch=t.max_windows_per_epoch,
            grad_clip=t.grad_clip,
            nse_epsilon=t.nse_epsilon,
            threads=t.threads or 1,
            learning_rate_schedule=tuple(t.learning_rate_schedule.items()),
            early_stopping_patience=t.early_stopping_patience,
            predict_last_n=m.predict_last_n,
        )


@dataclass
class LayerData:
    """One layer's targets and samples over the training cells (numpy only).

    Attributes:
        y: (cells, days) standardised target, NaN where missing.
        cell_std: (cells,) std of the raw target per cell over the training period (m3 m-3).
        fit_cells, fit_days: Indexes of the fitted samples (cell, training day).
        val_cells, val_days: Indexes of the validation samples (a fixed subset, capped like an epoch).
    """

    y: np.ndarray
    cell_std: np.ndarray
    fit_cells: np.ndarray
    fit_days: np.ndarray
    val_cells: np.ndarray
    val_days: np.ndarray
    areal: ArealLayerData | None = None
    """The areal term's samples (`train.multiscale`), whose inputs are the `areal_x_*` arrays."""


@dataclass(frozen=True)
class MemberSpec:
    """Which member a task trains."""

    layer: int
    """1-based layer."""
    member: int
    seed: int


@dataclass
class MemberResult:
    """What a training task returns: the weights and its losses per epoch."""

    spec: MemberSpec
    state: dict[str, Any]
    train_loss: list[float]
    val_loss: list[float | None]
    val_loss_initial: float | None
    n_fit: int
    n_val: int
    best_epoch: int | None = None
    """1-based epoch whose weights were kept (early stopping), None when the last epoch's were."""

    def __repr__(self) -> str:  # the progress log prints results; keep tensors out of it
        last = self.train_loss[-1] if self.train_loss else float("nan")
        return f"MemberResult(layer={self.spec.layer}, member={self.spec.member}, train_loss={last:.4g})"


# ----------------------------------------------------------------------------------------------------
# The training task


def _mean_loss(net: Any, data: LayerData, x_dyn: np.ndarray, x_stat: np.ndarray, s: Settings) -> float | None:
    """Mean NSE* over the validation windows in eval mode, or None without any."""
    import torch

    n = len(data.val_cells)
    if n == 0:
        return None
    net.eval()
    total = 0.0
    with torch.no_grad():
        for i0 in range(0, n, s.batch_size):
            c, d = data.val_cells[i0 : i0 + s.batch_size], data.val_days[i0 : i0 + s.batch_size]
            xd, xs = gather_windows(x_dyn, x_stat, c, d, s.seq_length)
            loss = nse_star_loss(
                net(torch.from_numpy(xd), torch.from_numpy(xs), s.predict_last_n),
                torch.from_numpy(window_targets(data.y, c, d, s.predict_last_n)),
                torch.from_numpy(data.cell_std[c]),
                s.nse_epsilon,
            )
            total += float(loss) * len(c)
    return total / n


def train_member(
    spec: MemberSpec,
    data: LayerData,
    x_dyn: np.ndarray,
    x_stat: np.ndarray,
    settings: Settings,
    areal_x_dyn: np.ndarray | None = None,
    areal_x_stat: np.ndarray | None = None,
) -> MemberResult:
    """Train one EA-LSTM member on CPU (a Dask task): Adam, gradient-norm clip, NSE* loss; with
    `data.areal`, every step's loss is `alpha` x the in-situ NSE* + (1 - alpha) x the areal NSE* of a
    batch of coarse samples (`multiscale.areal_loss`).

    Args:
        spec: Layer, member and seed.
        data: The layer's standardised targets, cell stds and sample indexes.
        x_dyn: (cells, days + seq_length - 1, n_dyn) standardised dynamic inputs of the training cells
            (n_dyn includes the simulated soil moisture of the layers above, with the cascade).
        x_stat: (cells, n_stat) standardised statics of the training cells.
        settings: Hyper-parameters.
        areal_x_dyn, areal_x_stat: Like `x_dyn` and `x_stat`, at the areal cells (with `data.areal`).

    Raises:
        FloatingPointError: The loss became non-finite.
    """
    import torch

    from somocloud.model.ealstm import EALSTM, release_workspace

    s = settings
    with _TORCH_LOCK:
        torch.set_num_threads(s.threads)
        torch.manual_seed(spec.seed)
        torch.use_deterministic_algorithms(True)
        rng = np.random.default_rng(spec.seed)
        net = EALSTM(x_dyn.shape[-1], s.n_static, s.hidden_size, s.dropout, s.initial_forget_bias)
        optimiser = torch.optim.Adam(net.parameters(), lr=s.learning_rate)
        n_fit = len(data.fit_cells)
        per_epoch = min(n_fit, s.max_windows_per_epoch or n_fit)
        val_initial = _mean_loss(net, data, x_dyn, x_stat, s)
        train_loss: list[float] = []
        val_loss: list[float | None] = []
        best: tuple[float, int, dict[str, Any]] | None = None  # (loss, epoch, weights) for early stopping
        for epoch in range(s.epochs):
            for group in optimiser.param_groups:
                group["lr"] = s.rate(epoch + 1)
            net.train()
            order = rng.permutation(n_fit)[:per_epoch]
            total = 0.0
            for i0 in range(0, per_epoch, s.batch_size):
                idx = order[i0 : i0 + s.batch_size]
                c, d = data.fit_cells[idx], data.fit_days[idx]
                xd, xs = gather_windows(x_dyn, x_stat, c, d, s.seq_length)
                areal = None
                if data.areal is not None and areal_x_dyn is not None and areal_x_stat is not None:
                    # One forward for both terms: the fused recurrence keeps one workspace per backward.
                    areal = areal_batch(data.areal, areal_x_dyn, areal_x_stat, rng, s.seq_length)
                    xd, xs = np.concatenate([xd, areal.x_dyn]), np.concatenate([xs, areal.x_stat])
                if s.static_noise_std > 0:  # drawn only when on, so the default keeps its random stream
                    xs = xs + rng.normal(0.0, s.static_noise_std, xs.shape).astype(xs.dtype)
                optimiser.zero_grad()
                out = net(torch.from_numpy(xd), torch.from_numpy(xs), s.predict_last_n)
                loss = nse_star_loss(
                    out[: len(c)],
                    torch.from_numpy(window_targets(data.y, c, d, s.predict_last_n)),
                    torch.from_numpy(data.cell_std[c]),
                    s.nse_epsilon,
                )
                if areal is not None and data.areal is not None:
                    fine = out[len(c) :] if out.dim() == 1 else out[len(c) :, -1]
                    alpha = data.areal.alpha
                    loss = alpha * loss + (1 - alpha) * areal_term(fine, areal, s.nse_epsilon)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"layer {spec.layer} member {spec.member}: non-finite NSE* loss in epoch {epoch + 1}"
                    )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), s.grad_clip)
                optimiser.step()
                total += float(loss.detach()) * len(idx)
            train_loss.append(total / per_epoch)
            val_loss.append(_mean_loss(net, data, x_dyn, x_stat, s))
            log.debug(
                "layer %d member %d epoch %d: %s / %s",
                spec.layer,
                spec.member,
                epoch + 1,
                train_loss[-1],
                val_loss[-1],
            )
            current = val_loss[-1]
            if s.early_stopping_patience is not None and current is not None:
                if best is None or current < best[0]:
                    best = (current, epoch + 1, {k: v.detach().clone() for k, v in net.state_dict().items()})
                elif epoch + 1 - best[1] >= s.early_stopping_patience:
                    break
        if best is not None:
            state, best_epoch = best[2], best[1]
        else:
            state, best_epoch = {k: v.detach().clone() for k, v in net.state_dict().items()}, None
        release_workspace()
    return MemberResult(
        spec, state, train_loss, val_loss, val_initial, n_fit, len(data.val_cells), best_epoch
    )


# ----------------------------------------------------------------------------------------------------
# Reading the inputs


def train_period(cfg: RunConfig) -> tuple[dt.date, dt.date]:
    """The training days: `period.train_start/end`, defaulting to `period.start/end`."""
    p = cfg.period
    start, end = p.train_start or p.start, p.train_end or p.end
    if start < p.start or end > p.end or end < start:
        raise ValueError(
            f"period.train_start..train_end ({start}..{end}) must be a non-empty range inside "
            f"period.start..period.end ({p.start}..{p.end})"
        )
    return start, end


def _days(start: dt.date, end: dt.date) -> np.ndarray:
    return np.arange(np.datetime64(start, "D"), np.datetime64(end, "D") + 1).astype("datetime64[ns]")


def _select_days(ds: xr.Dataset, url: str, start: dt.date, end: dt.date) -> xr.Dataset:
    """`ds` on exactly the days start..end, or a clear error naming the store and the first missing day."""
    if "time" not in ds.coords:
        raise ValueError(f"{url}: no `time` coordinate")
    want = _days(start, end)
    sub = ds.sel(time=slice(want[0], want[-1]))
    have = sub["time"].values.astype("datetime64[ns]")
    if have.shape != want.shape or not np.array_equal(have, want):
        missing = np.setdiff1d(want, have)
        first = str(missing[0])[:10] if missing.size else "(irregular or duplicate days)"
        raise ValueError(f"{url}: `time` must cover every day {start}..{end}; first missing day {first}")
    return sub


@dataclass
class Targets:
    """The targets store's cells and values.

    Attributes:
        cells: (n, 2) [row, col] of every cell in the store.
        values: (n, days, layers) raw soil moisture over the training period (m3 m-3).
        any_target: (n,) True where the cell has any finite target in the whole store.
    """

    cells: np.ndarray
    values: np.ndarray
    any_target: np.ndarray


def read_targets(url: str, grid: Grid, start: dt.date, end: dt.date) -> Targets:
    """Read the `targets` store (cell, time, depth) and check it against the grid and the layers."""
    ds = stores.open_zarr(url, chunks=None)
    stores.check_variables(ds, url, [TARGET_VARIABLE], ("cell", "time", "depth"))
    for name in ("row", "col"):
        if name not in ds.coords or ds[name].dims != ("cell",):
            raise ValueError(f"{url}: per-cell coordinate `{name}` (dim `cell`) is missing")
    depth = ds["depth"].values if "depth" in ds.coords else np.array([])
    if depth.shape != DEPTHS.shape or not np.allclose(depth, DEPTHS):
        raise ValueError(f"{url}: `depth` is {depth.tolist()}, expected {DEPTHS.tolist()}")
    cells = np.stack([ds["row"].values, ds["col"].values], axis=1).astype("int64")
    outside = (cells[:, 0] < 0) | (cells[:, 0] >= grid.nlat) | (cells[:, 1] < 0) | (cells[:, 1] >= grid.nlon)
    if outside.any():
        i = int(np.argmax(outside))
        raise ValueError(f"{url}: cell {i} has row/col {cells[i].tolist()} outside the {grid.shape} run grid")
    if len(np.unique(cells, axis=0)) != len(cells):
        raise ValueError(f"{url}: the same (row, col) appears in more than one cell")
    sm = ds[TARGET_VARIABLE].transpose("cell", "time", "depth").load()
    any_target = np.isfinite(sm.values).any(axis=(1, 2))
    values = _select_days(sm.to_dataset(), url, start, end)[TARGET_VARIABLE].values.astype("float32")
    return Targets(cells, values, any_target)


def read_pixels(
    url: str,
    names: list[str],
    rows: np.ndarray,
    cols: np.ndarray,
    grid: Grid,
    days: tuple[dt.date, dt.date] | None = None,
) -> dict[str, np.ndarray]:
    """Variables at the given pixels only (one vectorised point selection): (cell, time) or (cell,).

    Args:
        url: A grid store: dims (time, lat, lon) when `days` is given, else (lat, lon).
        names: Variables to read.
        rows, cols: Grid indexes of the pixels.
        grid: The run grid (the store's lat/lon are checked against it).
        days: First and last day to read, all of which must be present.
    """
    ds = stores.open_zarr(url)
    stores.check_variables(ds, url, names, ("time", "lat", "lon") if days else ("lat", "lon"))
    grid.check(ds, url)
    sub = ds[names]
    if days is not None:
        sub = _select_days(sub, url, *days)
    point = {"lat": xr.DataArray(rows, dims="cell"), "lon": xr.DataArray(cols, dims="cell")}
    # The threaded scheduler reads in this process (which holds the storage options), not on the cluster.
    picked = sub.isel(point).compute(scheduler="threads")
    order = ("cell", "time") if days else ("cell",)
    return {n: picked[n].transpose(*order).values.astype("float32") for n in names}


def _forcing_variables(names: tuple[str, ...]) -> list[str]:
    """The forcing variables behind the model's dynamic inputs (`log_tp` is made from `tp`)."""
    return list(dict.fromkeys("tp" if n == "log_tp" else n for n in names))


# ----------------------------------------------------------------------------------------------------
# The step


@dataclass
class Prepared:
    """Everything the training stages need, built on the client (numpy only).

    `x_forcing` covers `lead + seq_length - 1` days before the first training day (`lead` =
    `(model.stages - 1) * (seq_length - 1)`: the days the cascade's upper layers need to be simulated on
    before the first window of the layers below), then every training day."""

    train_cells: np.ndarray
    holdout_cells: np.ndarray
    validation: np.ndarray
    x_forcing: np.ndarray
    x_stat: np.ndarray
    ok_static: np.ndarray
    y_raw: np.ndarray
    lead: int
    scaler: Scaler
    target_mean: list[float]
    target_std: list[float]
    summary: list[dict[str, Any]] = field(default_factory=list)
    areal: ArealRaw | None = None
    """The areal term's raw data (`train.multiscale`); its inputs standardised in `areal_x_*`."""
    areal_x_forcing: np.ndarray | None = None
    areal_x_stat: np.ndarray | None = None


def _layer_data(
    raw: np.ndarray,
    ok_window: np.ndarray,
    ok_static: np.ndarray,
    validation: np.ndarray,
    mean: float,
    std: float,
    cap: int | None,
    seed: int,
    last_n: int = 1,
) -> tuple[LayerData, dict[str, Any]]:
    """Samples and standardised targets of one layer; `raw` is (cells, days) in m3 m-3. A sample is a
    complete input window whose last `last_n` days hold at least one finite target."""
    valid = any_target_in_last_n(np.isfinite(raw), last_n) & ok_window & ok_static[:, None]
    cells, days = np.nonzero(valid)
    is_val = validation[cells]
    val_cells, val_days = cells[is_val], days[is_val]
    if cap is not None and len(val_cells) > cap:  # a fixed subset, the same for every member and epoch
        keep = np.sort(np.random.default_rng([seed, 2]).permutation(len(val_cells))[:cap])
        val_cells, val_days = val_cells[keep], val_days[keep]
    with np.errstate(invalid="ignore"), _quiet():
        cell_std = np.nanstd(raw.astype("float64"), axis=1)
    data = LayerData(
        y=((raw - mean) / std).astype("float32"),
        cell_std=np.nan_to_num(cell_std, nan=0.0).astype("float32"),
        fit_cells=cells[~is_val],
        fit_days=days[~is_val],
        val_cells=val_cells,
        val_days=val_days,
    )
    summary = {
        "windows": len(cells),
        "fit_windows": int((~is_val).sum()),
        "val_windows": len(val_cells),
        "cells": len(np.unique(cells)),
    }
    return data, summary


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's all-NaN RuntimeWarnings (cells without data give NaN, handled by the callers)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


@dataclass
class RawData:
    """The training cells' raw inputs and targets as read (before any scaler is fitted)."""

    train_cells: np.ndarray
    holdout_cells: np.ndarray
    dyn_raw: np.ndarray
    """(cells, lead + seq_length - 1 + days, n_dyn) forcing-derived dynamic inputs."""
    stat_raw: np.ndarray
    """(cells, n_stat)."""
    y_raw: np.ndarray
    """(cells, days, layers) targets, m3 m-3."""
    lead: int
    areal: ArealRaw | None = None
    """The coarse targets and their fine cells' inputs (`train.multiscale`)."""


@dataclass
class ArealRaw:
    """The areal term's raw data: the fine land cells of the used coarse cells and the coarse targets."""

    cells: np.ndarray
    """(n, 2) [row, col] of the areal cells."""
    dyn_raw: np.ndarray
    """(n, lead + seq_length - 1 + days, n_dyn)."""
    stat_raw: np.ndarray
    """(n, n_stat)."""
    members: np.ndarray
    """(coarse, m) indexes into `cells`, -1 padded."""
    y_raw: dict[int, np.ndarray]
    """Layer → (coarse, days) coarse targets, m3 m-3 (rescaled to that layer's reference when configured)."""


def read_training_data(cfg: RunConfig) -> RawData:
    """Split the cells and read the training cells' forcing, statics and targets (held-out cells' never)."""
    grid = Grid.from_config(cfg.grid)
    start, end = train_period(cfg)
    seq = cfg.model.seq_length
    lead = (cfg.model.stages - 1) * (seq - 1)
    t_url, f_url, s_url = cfg.store("targets"), cfg.store("forcing"), cfg.store("statics")

    targets = read_targets(t_url, grid, start, end)
    if not targets.any_target.any():
        raise ValueError(f"{t_url}: `{TARGET_VARIABLE}` has no finite value, nothing to train on")
    with_targets = targets.cells[targets.any_target]
    if cfg.train.holdout_region is not None:
        train_cells, holdout_cells = split_by_region(with_targets, grid, cfg.train.holdout_region)
    else:
        train_cells, holdout_cells = split_cells(with_targets, cfg.train.holdout_fraction, cfg.seed)
    # Rows of the targets store for the training cells, in the split's order.
    index = {(int(r), int(c)): i for i, (r, c) in enumerate(targets.cells)}
    rows_in_store = np.array([index[(int(r), int(c))] for r, c in train_cells], dtype="int64")
    y_raw = targets.values[rows_in_store]  # (cells, days, layers); held-out cells dropped here
    for k in range(N_LAYERS):
        if not np.isfinite(y_raw[:, :, k]).any():
            raise ValueError(
                f"{t_url}: layer {k + 1} (depth {DEPTHS[k]} m) has no finite target at a training cell"
            )
    rows, cols = train_cells[:, 0], train_cells[:, 1]
    forcing = read_pixels(
        f_url,
        _forcing_variables(DYNAMIC_INPUTS),
        rows,
        cols,
        grid,
        days=(start - dt.timedelta(days=lead + seq - 1), end),
    )
    statics = read_pixels(s_url, list(STATIC_INPUTS), rows, cols, grid)
    return RawData(
        train_cells=train_cells,
        holdout_cells=holdout_cells,
        dyn_raw=stack_inputs(forcing, DYNAMIC_INPUTS),
        stat_raw=stack_inputs(statics, STATIC_INPUTS),
        y_raw=y_raw,
        lead=lead,
        areal=read_areal(cfg, grid, lead) if cfg.train.multiscale is not None else None,
    )


def read_areal(cfg: RunConfig, grid: Grid, lead: int) -> ArealRaw:
    """The coarse targets of `train.multiscale` and the inputs of every run-grid land cell under them."""
    import pandas as pd

    from somocloud.multiscale import read_coarse_targets, rescale_to_reference
    from somocloud.targets import load_reference

    ms = cfg.train.multiscale
    assert ms is not None
    start, end = train_period(cfg)
    seq = cfg.model.seq_length
    statics_ds = stores.open_zarr(cfg.store("statics"), chunks=None)
    stores.check_variables(statics_ds, cfg.store("statics"), ["land_mask"], ("lat", "lon"))
    land_mask = np.nan_to_num(np.asarray(statics_ds["land_mask"].values, dtype="float64")) > 0
    coarse = read_coarse_targets(
        cfg.store("coarse_targets"), ms.variable, grid, land_mask, start, end, ms.min_land_fraction
    )
    if len(coarse.members) == 0:
        raise ValueError(
            f"{cfg.store('coarse_targets')}: no coarse cell with values over the run grid's land"
        )
    flat = coarse.fine_cells
    rows, cols = np.divmod(flat, grid.nlon)
    members = np.where(coarse.members >= 0, np.searchsorted(flat, coarse.members), -1)
    y_raw: dict[int, np.ndarray] = {}
    if ms.rescale_to_reference:
        ref = load_reference(cfg.store("reference_sm"), grid, rows, cols, pd.date_range(start, end, freq="D"))
        for k in ms.layers:
            scaled = rescale_to_reference(
                type(coarse)(coarse.coarse_ids, members, coarse.values), ref[:, :, k - 1],
                cfg.targets.min_overlap_days,
            )  # fmt: skip
            y_raw[k] = _align(scaled.coarse_ids, scaled.values, coarse.coarse_ids)
    else:
        y_raw = {k: coarse.values for k in ms.layers}
    forcing = read_pixels(cfg.store("forcing"), _forcing_variables(DYNAMIC_INPUTS), rows, cols, grid,
                          days=(start - dt.timedelta(days=lead + seq - 1), end))  # fmt: skip
    statics = read_pixels(cfg.store("statics"), list(STATIC_INPUTS), rows, cols, grid)
    log.info("train: multiscale: %d coarse cells over %d areal cells, alpha %.2f, layers %s",
             len(members), len(flat), ms.alpha, ms.layers)  # fmt: skip
    return ArealRaw(
        cells=np.stack([rows, cols], axis=1),
        dyn_raw=stack_inputs(forcing, DYNAMIC_INPUTS),
        stat_raw=stack_inputs(statics, STATIC_INPUTS),
        members=members,
        y_raw=y_raw,
    )


def _align(ids: np.ndarray, values: np.ndarray, all_ids: np.ndarray) -> np.ndarray:
    """`values` (rows for `ids`) placed in the rows of `all_ids`, NaN rows for ids left out."""
    out = np.full((len(all_ids), values.shape[1] if values.ndim == 2 else 0), np.nan, dtype="float32")
    out[np.searchsorted(all_ids, ids)] = values
    return out


def fit_prepared(cfg: RunConfig, raw: RawData, cells: np.ndarray | None = None) -> Prepared:
    """Fit the input scalers and target statistics on the training cells `cells` (indexes into
    `raw.train_cells`; all by default, a cross-validation fold's training cells otherwise) and standardise."""
    pick = np.arange(len(raw.train_cells)) if cells is None else np.asarray(cells)
    dyn_raw, stat_raw, y_raw = raw.dyn_raw[pick], raw.stat_raw[pick], raw.y_raw[pick]
    with _quiet():
        scaler = Scaler.fit(
            {n: dyn_raw[:, raw.lead :, i] for i, n in enumerate(DYNAMIC_INPUTS)}
            | {n: stat_raw[:, i] for i, n in enumerate(STATIC_INPUTS)}
        )
    means, stds = [], []
    for k in range(N_LAYERS):
        values = y_raw[:, :, k].astype("float64")
        with _quiet():
            mean, std = float(np.nanmean(values)), float(np.nanstd(values))
        means.append(mean)
        stds.append(std if std > 0 and np.isfinite(std) else 1.0)  # a constant target stays finite
    return Prepared(
        train_cells=raw.train_cells[pick],
        holdout_cells=raw.holdout_cells,
        validation=pick_validation(len(pick), cfg.train.validation_fraction, cfg.seed),
        x_forcing=scaler.apply(dyn_raw, DYNAMIC_INPUTS),
        x_stat=scaler.apply(stat_raw, STATIC_INPUTS),
        ok_static=np.isfinite(stat_raw).all(axis=1),
        y_raw=y_raw,
        lead=raw.lead,
        scaler=scaler,
        target_mean=means,
        target_std=stds,
        areal=raw.areal,
        areal_x_forcing=None if raw.areal is None else scaler.apply(raw.areal.dyn_raw, DYNAMIC_INPUTS),
        areal_x_stat=None if raw.areal is None else scaler.apply(raw.areal.stat_raw, STATIC_INPUTS),
    )


def prepare(cfg: RunConfig) -> Prepared:
    """Read the training data and fit scalers on every training cell."""
    return fit_prepared(cfg, read_training_data(cfg))


def fit_layers(cfg: RunConfig, ctx: Context, prep: Prepared) -> list[list[MemberResult]]:
    """Train every layer's members, in order (with the cascade a layer's inputs hold the simulations of
    the layers above); results per layer."""
    results: list[list[MemberResult]] = []
    simulated: dict[int, np.ndarray] = {}
    simulated_areal: dict[int, np.ndarray] = {}
    areal_layers = cfg.train.multiscale.layers if cfg.train.multiscale and prep.areal is not None else []
    for k in range(1, N_LAYERS + 1):
        x_full, data = layer_stage(cfg, prep, k, simulated)
        x_dyn = np.ascontiguousarray(x_full[:, prep.lead :])
        areal_full = None
        if prep.areal_x_forcing is not None and (k in areal_layers or any(j > k for j in areal_layers)):
            areal_full = layer_inputs(cfg, prep.scaler, k, prep.areal_x_forcing, simulated_areal)
        areal_x = None
        if k in areal_layers and areal_full is not None:
            data.areal, areal_x = areal_stage(cfg, prep, k, areal_full)
        results.append(run_members(cfg, ctx, k, data, x_dyn, prep.x_stat, areal_x, prep.areal_x_stat))
        if cfg.model.cascade and k < N_LAYERS:
            simulated[k] = simulate_layer(cfg, prep, k, results[-1], x_full, prep.x_stat)
            if areal_full is not None and any(j > k for j in areal_layers):
                assert prep.areal_x_stat is not None
                simulated_areal[k] = simulate_layer(cfg, prep, k, results[-1], areal_full, prep.areal_x_stat)
    return results


def areal_stage(
    cfg: RunConfig, prep: Prepared, layer: int, areal_full: np.ndarray
) -> tuple[ArealLayerData, np.ndarray]:
    """The areal samples of `layer` and the areal cells' dynamic inputs over the training windows' days."""
    from somocloud.multiscale import areal_layer_data

    ms, areal = cfg.train.multiscale, prep.areal
    assert ms is not None and areal is not None and prep.areal_x_stat is not None
    seq = cfg.model.seq_length
    x_dyn = np.ascontiguousarray(areal_full[:, prep.lead :])
    ok = (
        valid_window_ends(np.isfinite(x_dyn).all(axis=2), seq)
        & np.isfinite(prep.areal_x_stat).all(axis=1)[:, None]
    )
    data = areal_layer_data(
        areal.y_raw[layer], areal.members, ok, prep.target_mean[layer - 1], prep.target_std[layer - 1],
        ms.alpha, ms.coarse_per_batch,
    )  # fmt: skip
    if len(data.fit_coarse) == 0:
        raise ValueError(
            f"{cfg.store('coarse_targets')}: layer {layer} has no areal sample: no coarse value on a day on "
            "which every fine cell of its coarse cell has a complete input window"
        )
    prep.summary[-1] |= {
        "areal_samples": len(data.fit_coarse),
        "areal_coarse_cells": len(np.unique(data.fit_coarse)),
    }
    return data, x_dyn


def simulate_cells(
    cfg: RunConfig,
    prep: Prepared,
    results: Sequence[Sequence[MemberResult]],
    dyn_raw: np.ndarray,
    stat_raw: np.ndarray,
) -> np.ndarray:
    """(cells, days, layers) ensemble-mean simulation at other cells (e.g. a held-out fold) with the
    members in `results` and the scalers of `prep`, over the training days (the cascade included)."""
    x_forcing = prep.scaler.apply(dyn_raw, DYNAMIC_INPUTS)
    x_stat = prep.scaler.apply(stat_raw, STATIC_INPUTS)
    n_days = dyn_raw.shape[1] - prep.lead - cfg.model.seq_length + 1
    out = np.full((dyn_raw.shape[0], n_days, N_LAYERS), np.nan, dtype="float32")
    simulated: dict[int, np.ndarray] = {}
    for k in range(1, N_LAYERS + 1):
        x_full = layer_inputs(cfg, prep.scaler, k, x_forcing, simulated)
        simulated[k] = simulate_layer(cfg, prep, k, results[k - 1], x_full, x_stat)
        out[:, :, k - 1] = simulated[k][:, -n_days:]
    return out


def layer_inputs(
    cfg: RunConfig, scaler: Scaler, layer: int, x_forcing: np.ndarray, simulated: dict[int, np.ndarray]
) -> np.ndarray:
    """Layer `layer`'s standardised dynamic inputs: the forcing inputs, then (cascade) the standardised
    simulations `simulated[j]` (m3 m-3) of the layers above it, in `layer_dynamic_inputs` order."""
    names = layer_dynamic_inputs(layer, cfg.model.cascade)[len(DYNAMIC_INPUTS) :]
    if not names:
        return x_forcing
    columns = [scaler.apply(simulated[_upper(n)][..., None], [n]) for n in names]
    return np.concatenate([x_forcing, *columns], axis=2)


def _upper(name: str) -> int:
    layer = simulated_layer(name)
    if layer is None:
        raise ValueError(f"{name!r} is not a simulated-layer input")
    return layer


def layer_stage(
    cfg: RunConfig, prep: Prepared, layer: int, simulated: dict[int, np.ndarray]
) -> tuple[np.ndarray, LayerData]:
    """Layer `layer`'s (1-based) standardised dynamic inputs over the training windows' days and its samples.

    With the cascade the inputs end with `sm_layer<j>` of every layer above: the ensemble-mean simulation
    of layer j's trained members (`simulate_layer`), never the observed targets, standardised with scaler
    entries fitted here on the training cells (added to `prep.scaler`)."""
    seq = cfg.model.seq_length
    for name in layer_dynamic_inputs(layer, cfg.model.cascade)[len(DYNAMIC_INPUTS) :]:
        if name not in prep.scaler.mean:  # fitted on the training days only
            sim = simulated[_upper(name)]
            with _quiet():
                fitted = Scaler.fit({name: sim[:, prep.lead + seq - 1 :]})
            prep.scaler.mean[name], prep.scaler.std[name] = fitted.mean[name], fitted.std[name]
    x_full = layer_inputs(cfg, prep.scaler, layer, prep.x_forcing, simulated)
    x_dyn = np.ascontiguousarray(x_full[:, prep.lead :])  # (cells, seq - 1 + days, n_dyn)
    ok_window = valid_window_ends(np.isfinite(x_dyn).all(axis=2), seq)
    data, info = _layer_data(
        prep.y_raw[:, :, layer - 1],
        ok_window,
        prep.ok_static,
        prep.validation,
        prep.target_mean[layer - 1],
        prep.target_std[layer - 1],
        cfg.train.max_windows_per_epoch,
        cfg.seed,
        cfg.model.predict_last_n,
    )
    if len(data.fit_cells) == 0:
        raise ValueError(
            f"{cfg.store('targets')}: layer {layer} (depth {DEPTHS[layer - 1]} m) has no training window: no "
            f"training cell has a finite target together with a finite {seq}-day window in "
            f"{cfg.store('forcing')} and finite statics in {cfg.store('statics')}"
        )
    prep.summary.append(info)
    return x_full, data


def simulate_layer(
    cfg: RunConfig,
    prep: Prepared,
    layer: int,
    results: Sequence[MemberResult],
    x_full: np.ndarray,
    x_stat: np.ndarray,
) -> np.ndarray:
    """The ensemble-mean simulation (m3 m-3, clipped at 0) of `layer` at the training cells on every day
    of `x_full` that has an output in the run's inference mode (NaN before), as `predict` computes it."""
    from somocloud.model.artifact import LoadedModel, build_network
    from somocloud.modes import get_mode
    from somocloud.predict import ensemble_mean

    card = LayerCard(
        depth=float(DEPTHS[layer - 1]),
        dynamic_inputs=list(layer_dynamic_inputs(layer, cfg.model.cascade)),
        static_inputs=list(STATIC_INPUTS),
        target_mean=prep.target_mean[layer - 1],
        target_std=prep.target_std[layer - 1],
    )
    nets = [
        build_network(card, cfg.model.hidden_size, cfg.model.dropout, cfg.model.initial_forget_bias, r.state)
        for r in results
    ]
    model_card = _model_card(cfg, prep, [card])
    model = LoadedModel("", model_card, [nets], "")
    # Blocked mode: the product's blocks start on period.start (and every block length after it); x_full
    # starts lead + seq_length - 1 days before the first training day.
    anchor = prep.lead + cfg.model.seq_length - 1 + (cfg.period.start - train_period(cfg)[0]).days
    with _TORCH_LOCK:
        members, _ = get_mode(cfg.predict.mode).layer_outputs(
            model, 0, x_full, x_stat, cfg.predict.batch_windows, anchor
        )
    return ensemble_mean(members)


def member_specs(cfg: RunConfig) -> list[MemberSpec]:
    """Every (layer, member) task with its seed."""
    return [
        MemberSpec(k, m, cfg.train.seed + SEED_LAYER_STRIDE * k + m)
        for k in range(1, N_LAYERS + 1)
        for m in range(cfg.train.n_members)
    ]


def run_members(
    cfg: RunConfig,
    ctx: Context,
    layer: int,
    data: LayerData,
    x_dyn: np.ndarray,
    x_stat: np.ndarray,
    areal_x_dyn: np.ndarray | None = None,
    areal_x_stat: np.ndarray | None = None,
) -> list[MemberResult]:
    """Train every member of `layer` as an independent Dask task; results in member order."""
    from somocloud.progress import track

    client = ctx.dask(cfg.cluster)
    specs = [s for s in member_specs(cfg) if s.layer == layer]
    settings = Settings.from_config(cfg)
    # The big arrays travel once to every worker, not once per task. hash=False: a content-hashed key
    # repeats when the same arrays are scattered again (the next layer's statics, a rerun), and a key
    # still being released by the scheduler then fails the new tasks with "lost dependencies".
    x_dyn_f = client.scatter(x_dyn, broadcast=True, hash=False)
    x_stat_f = client.scatter(x_stat, broadcast=True, hash=False)
    data_f = client.scatter(data, broadcast=True, hash=False)
    areal: dict[str, Any] = {}
    if data.areal is not None and areal_x_dyn is not None:
        areal = {
            "areal_x_dyn": client.scatter(areal_x_dyn, broadcast=True, hash=False),
            "areal_x_stat": client.scatter(areal_x_stat, broadcast=True, hash=False),
        }
    futures = client.map(
        train_member,
        specs,
        data=data_f,
        x_dyn=x_dyn_f,
        x_stat=x_stat_f,
        settings=settings,
        pure=False,
        **areal,
    )
    done = track(futures, f"{STEP} layer {layer}", show=ctx.show_progress)
    by_spec = {r.spec: r for r in done}
    return [by_spec[s] for s in specs]


def _prepare_output(url: str) -> None:
    """Clear a previous artifact at `url` (so no stale member files remain); refuse to clear anything else."""
    if not stores.exists(url):
        return
    is_artifact = stores.exists(stores.join(url, "manifest.json")) or stores.exists(
        stores.join(url, "model.json")
    )
    if is_artifact:
        stores.remove(url)
    elif stores.list_files(url):
        raise FileExistsError(
            f"model store {url} exists and is not a model artifact; refusing to overwrite it"
        )


def _metrics(cfg: RunConfig, prep: Prepared, results: list[MemberResult]) -> dict[str, Any]:
    layers: dict[str, Any] = {}
    for k in range(1, N_LAYERS + 1):
        members = {
            str(r.spec.member): {
                "seed": r.spec.seed,
                "train_loss": r.train_loss,
                "val_loss": r.val_loss,
                "val_loss_initial": r.val_loss_initial,
                "best_epoch": r.best_epoch,
            }
            for r in results
            if r.spec.layer == k
        }
        layers[str(k)] = {
            "depth": float(DEPTHS[k - 1]),
            **prep.summary[k - 1],
            "target_mean": prep.target_mean[k - 1],
            "target_std": prep.target_std[k - 1],
            "members": members,
        }
    return {
        "loss": "nse_star",
        "nse_epsilon": cfg.train.nse_epsilon,
        "epochs": cfg.train.epochs,
        "validation_cells": prep.train_cells[prep.validation].tolist(),
        "layers": layers,
    }


def train(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """The `train` step: write the model artifact to `cfg.store("model")`.

    Returns:
        {"model": url}.
    """
    if ctx.parts is not None:
        log.warning("train: --parts is ignored; the artifact needs every member, all are trained")
    url = cfg.store("model")
    inputs = {name: cfg.store(name) for name in ("forcing", "statics", "targets")}
    raw = read_training_data(cfg)
    log.info("train: %d training cells, %d held out", len(raw.train_cells), len(raw.holdout_cells))
    cv = None
    if cfg.train.cv_folds > 1:
        from somocloud.crossval import cross_validate

        cv = cross_validate(cfg, ctx, raw)
    prep = fit_prepared(cfg, raw)
    results = [r for layer in fit_layers(cfg, ctx, prep) for r in layer]

    layer_cards = []
    weights: dict[str, dict[str, Any]] = {}
    for k in range(1, N_LAYERS + 1):
        mine = [r for r in results if r.spec.layer == k]
        files = [f"layer{k}/member{r.spec.member}.pt" for r in mine]
        weights.update({f: r.state for f, r in zip(files, mine, strict=True)})
        layer_cards.append(
            LayerCard(
                depth=float(DEPTHS[k - 1]),
                dynamic_inputs=list(layer_dynamic_inputs(k, cfg.model.cascade)),
                static_inputs=list(STATIC_INPUTS),
                target_mean=prep.target_mean[k - 1],
                target_std=prep.target_std[k - 1],
                members=files,
                seeds=[r.spec.seed for r in mine],
            )
        )
    card = _model_card(cfg, prep, layer_cards)
    split = {"train_cells": prep.train_cells.tolist(), "holdout_cells": prep.holdout_cells.tolist()}
    _prepare_output(url)
    content_id = save_artifact(
        url,
        card,
        weights,
        documents={
            "config.json": cfg.resolved(),
            "split.json": split,
            "metrics.json": _metrics(cfg, prep, results),
            **({"cv.json": cv} if cv is not None else {}),
            "provenance.json": provenance.provenance_attrs(cfg, STEP, inputs),
        },
    )
    for k in range(1, N_LAYERS + 1):
        final = [r.train_loss[-1] for r in results if r.spec.layer == k]
        val = [r.val_loss[-1] for r in results if r.spec.layer == k]
        log.info(
            "train: layer %d: %d windows, final train NSE* %s, validation NSE* %s",
            k,
            prep.summary[k - 1]["windows"],
            _fmt(final),
            _fmt(val),
        )
    log.info("train: wrote model artifact %s (content id %s)", url, content_id)
    return {"model": url}


def _model_card(cfg: RunConfig, prep: Prepared, layers: list[LayerCard]) -> ModelCard:
    return ModelCard(
        hidden_size=cfg.model.hidden_size,
        dropout=cfg.model.dropout,
        seq_length=cfg.model.seq_length,
        initial_forget_bias=cfg.model.initial_forget_bias,
        inference_mode=cfg.predict.mode,
        input_scaler=prep.scaler.to_dict(),
        layers=layers,
        predict_last_n=cfg.model.predict_last_n,
    )


def _fmt(values: Sequence[float | None]) -> str:
    return "[" + ", ".join("-" if v is None else f"{v:.4g}" for v in values) + "]"
