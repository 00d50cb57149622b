"""The lookback permutation experiment of SoMo.ml-EU: how many recent days of input the skill rests on.

For every held-out cell and every day whose whole input window lies in the product period, the window's
days are shuffled in time, all but the last n; the model (every member of the layer, ensemble mean)
then predicts from the shuffled window. Skill against the reference (the truth where it exists, else
the station targets) is computed per cell and its median taken, for n from 1 to `seq_length` on a log
scale. With n = `seq_length` nothing is shuffled.

The days of a window move together: every input of a day (forcing, and with the cascade the layers
above) stays with that day. The cascade inputs are the product's own series of the layers above, as
`predict` feeds them in exact mode. Called by `evaluate` (`evaluate.lookback`), written to
`<evaluation>/lookback.json`, drawn by `report`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from somocloud import metrics, stores
from somocloud.config import RunConfig
from somocloud.layers import DEPTHS, FORCING_VARIABLES, layer_label, simulated_layer
from somocloud.model.features import stack_inputs

log = logging.getLogger(__name__)


def kept_days(seq_length: int, n: int = 8) -> list[int]:
    """About `n` log-spaced window lengths from 1 to `seq_length` (both included)."""
    return sorted({int(v) for v in np.round(np.geomspace(1, seq_length, n))} | {seq_length})


def lookback_curve(
    cfg: RunConfig,
    product: xr.Dataset,
    cells: np.ndarray,
    reference: np.ndarray,
    reference_name: str,
    min_n: int,
) -> dict[str, Any]:
    """The curve as JSON-able data.

    Args:
        cfg: the run (model, forcing and statics stores; `seed`).
        product: the product (time, depth, lat, lon).
        cells: (n, 2) [row, col] held-out cells.
        reference: (n, depth, time) reference series on the product's days.
        reference_name: 'truth' or 'targets'.
        min_n: fewest paired anomaly days for a cell's score."""
    import torch

    from somocloud.model.artifact import load_artifact

    model = load_artifact(cfg.store("model"), device="cpu")
    card = model.card
    seq = card.seq_length
    rows, cols = xr.DataArray(cells[:, 0], dims="cell"), xr.DataArray(cells[:, 1], dims="cell")
    times = product["time"].values
    forcing = stores.open_zarr(cfg.store("forcing")).sel(time=times)
    fields = {
        n: forcing[n].isel(lat=rows, lon=cols).transpose("cell", "time").values for n in FORCING_VARIABLES
    }
    simulated = product["soil_moisture"].isel(lat=rows, lon=cols).transpose("cell", "depth", "time").values
    statics = stores.open_zarr(cfg.store("statics"), chunks=None).isel(lat=rows, lon=cols)
    kept = kept_days(seq)
    rng = np.random.default_rng(cfg.seed)
    n_cells, n_days = len(cells), len(times)
    out: dict[str, list[float | None]] = {}
    for k, lc in enumerate(card.layers):
        depth = int(np.argmin(np.abs(DEPTHS - lc.depth)))
        dyn = dict(fields)
        for name in lc.dynamic_inputs:
            above = simulated_layer(name)
            if above is not None:
                dyn[name] = simulated[:, above - 1]
        x_d = card.scaler.apply(stack_inputs(dyn, lc.dynamic_inputs), lc.dynamic_inputs)  # (cell, time, f)
        x_s = card.scaler.apply(
            stack_inputs({n: statics[n].values for n in lc.static_inputs}, lc.static_inputs), lc.static_inputs
        )
        windows = np.lib.stride_tricks.sliding_window_view(x_d, seq, axis=1).transpose(0, 1, 3, 2)
        windows = windows.reshape(
            -1, seq, x_d.shape[-1]
        )  # (cell x window, seq, f), window w ends on day w+seq-1
        statics_w = np.repeat(x_s, n_days - seq + 1, axis=0)
        ok = np.isfinite(windows).all(axis=(1, 2)) & np.isfinite(statics_w).all(axis=1)
        # the clean windows, their statics and positions: gathered once per layer, not once per n
        clean, clean_statics, where = windows[ok], torch.from_numpy(statics_w[ok]), np.flatnonzero(ok)
        curve: list[float | None] = []
        for n in kept:
            shuffled = _shuffle_all_but_last(clean, n, rng)
            sim = np.full(len(windows), np.nan, dtype="float64")
            with torch.no_grad():
                for b0 in range(0, len(clean), 4096):
                    xd = torch.from_numpy(shuffled[b0 : b0 + 4096])
                    xs = clean_statics[b0 : b0 + 4096]
                    sim[where[b0 : b0 + 4096]] = model.predict(k, xd, xs).mean(0).numpy()
            series = np.full((n_cells, n_days), np.nan)
            series[:, seq - 1 :] = sim.reshape(n_cells, -1)
            score = metrics.anomaly_r(series, reference[:, depth], min_n)
            curve.append(float(np.nanmedian(score)) if np.isfinite(score).any() else None)
        out[layer_label(depth)] = curve
        log.info(
            "lookback: layer %d: %s",
            depth + 1,
            ", ".join(f"{n}:{v}" for n, v in zip(kept, curve, strict=True)),
        )
    return {
        "kept_days": kept,
        "layers": out,
        "metric": f"median anomaly r against the {reference_name}",
        "reference": reference_name,
        "n_cells": n_cells,
        "seq_length": seq,
        "description": f"{n_cells} held-out cells, days from the {seq}th of the product on, seed {cfg.seed}.",
    }


def _shuffle_all_but_last(windows: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of (windows, seq, f) with each window's first `seq - n` days in a random order of their own."""
    out = windows.copy()
    m = windows.shape[1] - n
    if m > 1:
        order = np.argsort(rng.random((len(windows), m)), axis=1)
        out[:, :m] = np.take_along_axis(windows[:, :m], order[..., None], axis=1)
    return out


def memory_days(cfg: RunConfig) -> Sequence[float] | None:
    """The synthetic truth's e-folding memory per layer, where the truth store records it."""
    import json

    url = cfg.store("truth")
    if not stores.exists(stores.join(url, "zarr.json")):
        return None
    value = stores.zarr_attrs(url).get("memory_days")
    return json.loads(value) if isinstance(value, str) else value
