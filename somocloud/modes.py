"""Inference modes: how a layer's members turn a series of inputs into one output per day.

* `exact` (SoMo.ml, the published method): every day is the last output of its own zero-state window of
  `seq_length` days. Cost: `seq_length` LSTM steps per output.
* `blocked`, for models trained with `model.predict_last_n` = n > 1: days are cut into blocks of n days
  anchored at a fixed day (a task's first product day, which `predict.time_chunk` keeps a multiple of n
  from the product's start, so every task cuts the same blocks); each block is the last n outputs of one
  zero-state window that starts `warm_up = seq_length - n` days before the block. Cost:
  `seq_length / n` steps per output (2 at warm-up = block = 365). A different method from `exact`: a
  product is one mode, recorded in its attributes.

A mode gives the forcing days a task needs before its first product day (`lookback`) and a layer's
outputs aligned with its input steps (`layer_outputs`). `predict` (product) and `train` (the cascade's
simulations of the upper layers) both call it, so a deeper layer is trained on what it gets at inference.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from somocloud.model.artifact import LoadedModel


class InferenceMode(Protocol):
    name: str

    def lookback(self, seq_length: int, predict_last_n: int, stages: int) -> int:
        """Input days needed before a task's first output day, with `stages` layers chained (the cascade)."""
        ...

    def layer_outputs(
        self,
        model: LoadedModel,
        layer: int,
        x_d: np.ndarray,
        x_s: np.ndarray,
        batch_windows: int,
        anchor: int,
    ) -> tuple[np.ndarray, int]:
        """Every member of `layer` over standardised inputs x_d (cells, steps, n_dyn) and x_s (cells, n_stat),
        NaN allowed.

        Returns (members, cells, steps) float32 in m3 m-3, aligned with the steps of x_d (NaN where a day has
        no output: too early, or a non-finite input in what the output depends on), and the windows run.
        `anchor` is a step on which a block starts (blocked mode; ignored by exact)."""
        ...


def _as_tensors(
    model: LoadedModel, x_d: np.ndarray, x_s: np.ndarray
) -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Inputs on the model's device with zeros where non-finite (only masked outputs see them, and no NaN
    enters a batch), plus the finite masks (cells, steps) and (cells,)."""
    import torch

    finite_d = np.isfinite(x_d)
    finite_s = np.isfinite(x_s)
    xd = torch.from_numpy(np.where(finite_d, x_d, 0.0).astype("float32")).to(model.device)
    xs = torch.from_numpy(np.where(finite_s, x_s, 0.0).astype("float32")).to(model.device)
    return xd, xs, finite_d.all(axis=-1), finite_s.all(axis=-1)


def bad_counts(finite_steps: np.ndarray) -> np.ndarray:
    """(cells, steps + 1) cumulative count of non-finite steps: steps [a, b) are clean where
    counts[:, b] == counts[:, a]."""
    bad = ~finite_steps
    return np.concatenate(
        [np.zeros((bad.shape[0], 1), dtype="int64"), np.cumsum(bad, axis=1, dtype="int64")], axis=1
    )


def valid_windows(bad_step: np.ndarray, seq_length: int) -> np.ndarray:
    """(cells, steps) bool of bad steps → (cells, steps - seq_length + 1): windows without a bad step."""
    counts = bad_counts(~bad_step)
    return (counts[:, seq_length:] - counts[:, :-seq_length]) == 0


def predict_windows(
    model: LoadedModel, layer: int, x_d: np.ndarray, x_s: np.ndarray, batch_windows: int
) -> tuple[np.ndarray, int]:
    """Every member on every valid zero-state window of `layer` (exact mode).

    Returns (members, cells, steps - seq_length + 1) float32 in m3 m-3 (entry j: the window ending on step
    j + seq_length - 1), NaN where the window or the statics hold a non-finite value; the windows run."""
    import torch

    from somocloud.model.features import window_view

    seq = model.card.seq_length
    n_cells, steps, _ = x_d.shape
    n_members = len(model.members[layer])
    out = np.full((n_members, n_cells, steps - seq + 1), np.nan, dtype="float32")
    xd, xs, finite_d, finite_s = _as_tensors(model, x_d, x_s)
    valid = valid_windows(~finite_d, seq) & finite_s[:, None]
    ci, di = np.nonzero(valid)
    if ci.size == 0:
        return out, 0
    windows = window_view(xd, seq)  # (cells, days, seq, n_dyn) view, no copy
    for b0 in range(0, ci.size, batch_windows):
        bc, bd = ci[b0 : b0 + batch_windows], di[b0 : b0 + batch_windows]
        c = torch.from_numpy(bc).to(model.device)
        d = torch.from_numpy(bd).to(model.device)
        y = model.predict(layer, windows[c, d], xs[c])  # gathers one (batch, seq, n_dyn) copy
        out[:, bc, bd] = y.float().cpu().numpy()
    return out, int(ci.size)


class Exact:
    name = "exact"

    def lookback(self, seq_length: int, predict_last_n: int, stages: int) -> int:
        return stages * (seq_length - 1)

    def layer_outputs(
        self,
        model: LoadedModel,
        layer: int,
        x_d: np.ndarray,
        x_s: np.ndarray,
        batch_windows: int,
        anchor: int,
    ) -> tuple[np.ndarray, int]:
        seq = model.card.seq_length
        members, used = predict_windows(model, layer, x_d, x_s, batch_windows)
        out = np.full((members.shape[0], x_d.shape[0], x_d.shape[1]), np.nan, dtype="float32")
        out[:, :, seq - 1 :] = members
        return out, used


class Blocked:
    name = "blocked"

    @staticmethod
    def shape(seq_length: int, predict_last_n: int) -> tuple[int, int]:
        """(warm-up, block) days of a model trained on the last `predict_last_n` of `seq_length` steps."""
        if not 1 < predict_last_n < seq_length:
            raise ValueError(
                f"blocked inference needs a model trained with 1 < predict_last_n < seq_length, got "
                f"predict_last_n {predict_last_n}, seq_length {seq_length}"
            )
        return seq_length - predict_last_n, predict_last_n

    def lookback(self, seq_length: int, predict_last_n: int, stages: int) -> int:
        # The deepest layer's first block needs `warm_up` days of inputs; each layer above must have
        # simulated those days, i.e. start whole blocks earlier (blocks stay on the same anchor).
        warm, block = self.shape(seq_length, predict_last_n)
        return (stages - 1) * math.ceil(warm / block) * block + warm

    def layer_outputs(
        self,
        model: LoadedModel,
        layer: int,
        x_d: np.ndarray,
        x_s: np.ndarray,
        batch_windows: int,
        anchor: int,
    ) -> tuple[np.ndarray, int]:
        import torch

        warm, block = self.shape(model.card.seq_length, model.card.predict_last_n)
        n_cells, steps, n_dyn = x_d.shape
        n_members = len(model.members[layer])
        out = np.full((n_members, n_cells, steps), np.nan, dtype="float32")
        first = warm + (anchor - warm) % block  # the first block start with a whole warm-up
        starts = np.arange(first, steps, block)
        if starts.size == 0:
            return out, 0
        xd, xs, finite_d, finite_s = _as_tensors(model, x_d, x_s)
        # Pad the end so the last (partial) block runs a whole window: outputs never depend on later steps.
        pad = int(starts[-1] + block - steps)
        if pad > 0:
            xd = torch.cat([xd, xd.new_zeros(n_cells, pad, n_dyn)], dim=1)
        counts = bad_counts(finite_d)
        # A block runs where its warm-up and first day are clean and the statics finite.
        ok = (counts[:, starts + 1] == counts[:, starts - warm]) & finite_s[:, None]
        ci, bi = np.nonzero(ok)
        per_batch = max(1, batch_windows)
        for b0 in range(0, ci.size, per_batch):
            bc, bs = ci[b0 : b0 + per_batch], starts[bi[b0 : b0 + per_batch]]
            steps_idx = torch.from_numpy(bs[:, None] - warm + np.arange(warm + block)[None, :]).to(
                model.device
            )
            rows_t = torch.from_numpy(bc).to(model.device)
            y = model.predict(layer, xd[rows_t[:, None], steps_idx], xs[rows_t], last_n=block)
            days = bs[:, None] + np.arange(block)[None, :]  # (batch, block) output steps
            keep = days < steps
            y_np = y.float().cpu().numpy()  # (members, batch, block)
            rows = np.broadcast_to(bc[:, None], days.shape)
            out[:, rows[keep], days[keep]] = y_np[:, keep]
        # An output is valid only while every input since the window's start is finite.
        day = np.arange(steps)
        block_start = first + np.floor_divide(day - first, block) * block
        window_start = np.clip(block_start - warm, 0, steps)
        dirty = counts[:, day + 1] != counts[:, window_start]
        out[:, dirty | (day < first)[None, :]] = np.nan
        return out, int(ci.size)


MODES: dict[str, InferenceMode] = {"exact": Exact(), "blocked": Blocked()}
"""Inference modes by `predict.mode` name."""


def get_mode(name: str) -> InferenceMode:
    try:
        return MODES[name]
    except KeyError:
        raise ValueError(f"unknown inference mode {name!r}; known: {sorted(MODES)}") from None
