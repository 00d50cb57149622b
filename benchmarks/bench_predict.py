"""Prediction cost: exact mode against a per-day-window loop written the way the published code does it,
blocked against exact, and peak worker memory against domain size.

    .venv/bin/python benchmarks/bench_predict.py [--cells 16] [--loop-cells 16] [--days 365] [--hidden 128] [--seq 365]
        [--runs 3] [--memory-tiles 2] [--skip-memory] [--device cpu|cuda]

* **Compute** (one process, torch threads 1, so figures are per CPU core; random weights, 1 layer,
  1 member; cell-days/s = cells x days / seconds):
  - `published loop`: per cell, every day's `seq`-day window stacked by a Python loop over days, batches
    of 1024 windows through the EA-LSTM forward structured as the paper code's (`published_style_lstm`:
    per-step input and recurrent products, `torch.tanh`, every state kept) under `no_grad`,
    de-standardised and clipped: how SoMo.ml v1's `final_main.py`/`subs.py` predict a pixel.
  - `exact`: `somocloud.modes.Exact().layer_outputs`, what a `predict` task runs: every valid window of
    every cell, gathered from a strided view in batches of 4096, through `for_inference` (the EA-LSTM's
    gradient-free steps on CPU, in blocks of `ealstm.CPU_ROWS` rows; the fused `nn.LSTM` on CUDA).
  - `blocked`: `somocloud.modes.Blocked().layer_outputs` for a model trained on the last `seq` of `2 seq`
    steps (warm-up = block = `seq` days): one window per cell and block.
  Exact and the loop must agree to 1e-5 m3 m-3 (checked before timing). The median of `--runs` is printed.
  - `ceiling`: the rate if a window cost only its recurrent GEMMs (`torch.mm` of the same shape, timed
    alone): the bound for any fp32 exact recurrence on this core.
* **Memory**: `somocloud predict` (real CLI, LocalCluster of 1 worker process, 1 thread) on a world of
  `--memory-tiles`² tiles and on one 4x larger (2x per side), same days; the peak RSS of the worker
  process (sampled every 0.1 s) of each, and their ratio.
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

N_DYN, N_STAT = 6, 10


def _model(hidden: int, seq: int, last_n: int, mode: str, device: str) -> Any:
    import torch

    from somocloud.layers import DEPTHS
    from somocloud.model.artifact import LayerCard, LoadedModel, ModelCard
    from somocloud.model.ealstm import EALSTM, for_inference

    torch.manual_seed(0)
    net = EALSTM(N_DYN, N_STAT, hidden)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    lc = LayerCard(
        float(DEPTHS[0]), [f"d{i}" for i in range(N_DYN)], [f"s{i}" for i in range(N_STAT)], 0.25, 0.1
    )
    card = ModelCard(hidden, 0.5, seq, 5.0, mode, {"mean": {}, "std": {}}, [lc], predict_last_n=last_n)
    return LoadedModel("", card, [[for_inference(net, device)]], "", device), net


def published_loop(
    net: Any, x_d: np.ndarray, x_s: np.ndarray, seq: int, mean: float, std: float
) -> np.ndarray:
    """Per cell: a Python loop stacks each day's window, batches of 1024, the step-by-step EA-LSTM."""
    import torch

    n_cells, steps, _ = x_d.shape
    n_days = steps - seq + 1
    out = np.empty((n_cells, n_days), dtype="float32")
    net.eval()
    with torch.no_grad():
        for c in range(n_cells):
            windows = np.stack([x_d[c, d : d + seq] for d in range(n_days)])
            statics = np.repeat(x_s[c : c + 1], n_days, axis=0)
            for b0 in range(0, n_days, 1024):
                xd = torch.from_numpy(windows[b0 : b0 + 1024])
                xs = torch.from_numpy(statics[b0 : b0 + 1024])
                h = published_style_lstm(net.lstm, xd, xs)
                y = net.fc(h).squeeze(-1).numpy()
                out[c, b0 : b0 + 1024] = np.maximum(y * std + mean, 0.0)
    return out


def published_style_lstm(cell: Any, x_d: Any, x_s: Any) -> Any:
    """The EA-LSTM forward as the paper code structures it (Kratzert et al.'s `EALSTM.forward`, which
    SoMo.ml v1's `final_main.py` wraps): time-major input, per step `addmm(bias, h, W_hh) + mm(x_t, W_ih)`,
    chunk into f, o, g, `torch.tanh`, every step's h and c kept in lists and stacked at the end; the
    head then reads the last h."""
    import torch

    x = x_d.transpose(0, 1)
    steps, batch, _ = x.shape
    i = torch.sigmoid(torch.addmm(cell.bias_s.unsqueeze(0).expand(batch, -1), x_s, cell.weight_sh))
    h = x.new_zeros(batch, cell.hidden_size)
    c = x.new_zeros(batch, cell.hidden_size)
    bias = cell.bias.unsqueeze(0).expand(batch, -1)
    hs, cs = [], []
    for t in range(steps):
        gates = torch.addmm(bias, h, cell.weight_hh) + torch.mm(x[t], cell.weight_ih)
        f, o, g = gates.chunk(3, 1)
        c = torch.sigmoid(f) * c + i * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        hs.append(h)
        cs.append(c)
    return torch.stack(hs, 0).transpose(0, 1)[:, -1]


def gemm_ceiling(hidden: int, seq: int, reps: int = 300) -> float:
    """Cell-days/s if an exact window cost only its `seq` recurrent products h·W_hh ((rows, H) x (H, 3H),
    float32, the block shape the CPU path uses): no recurrence in fp32 can beat it."""
    import torch

    from somocloud.model.ealstm import CPU_ROWS

    h, w = torch.randn(CPU_ROWS, hidden), torch.randn(hidden, 3 * hidden)
    out = torch.empty(CPU_ROWS, 3 * hidden)
    for _ in range(20):
        torch.mm(h, w, out=out)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.mm(h, w, out=out)
    per_product = (time.perf_counter() - t0) / reps
    return CPU_ROWS / (per_product * seq)


def _timed(fn: Any, runs: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def compute(args: argparse.Namespace) -> None:
    import torch

    from somocloud.modes import Blocked, Exact

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    seq, days, cells = args.seq, args.days, args.cells
    x_d = rng.normal(size=(cells, days + seq, N_DYN)).astype("float32")
    x_s = rng.normal(size=(cells, N_STAT)).astype("float32")
    exact_in = np.ascontiguousarray(x_d[:, -(days + seq - 1) :])
    exact_model, net = _model(args.hidden, seq, 1, "exact", args.device)
    blocked_model, _ = _model(args.hidden, 2 * seq, seq, "blocked", args.device)
    mean, std = 0.25, 0.1

    ours = Exact().layer_outputs(exact_model, 0, exact_in[:2], x_s[:2], 4096, 0)[0][0][:, seq - 1 :]
    ref = published_loop(net, exact_in[:2], x_s[:2], seq, mean, std)
    diff = float(np.abs(ours - ref).max())
    print(f"exact vs published loop, 2 cells x {days} days: max |diff| {diff:.2e} m3 m-3")
    if diff > 1e-5:
        raise SystemExit("exact mode and the published loop disagree")

    cell_days = cells * days
    n_loop = min(args.loop_cells, cells)  # its cost is per cell: a subset gives its rate
    t_loop, _ = _timed(
        lambda: published_loop(net, exact_in[:n_loop], x_s[:n_loop], seq, mean, std), args.runs
    )
    t_loop *= cells / n_loop  # the whole domain's time at the measured rate
    t_exact, _ = _timed(lambda: Exact().layer_outputs(exact_model, 0, exact_in, x_s, 4096, 0), args.runs)
    blocked_in = np.ascontiguousarray(x_d[:, -(days + seq) :])  # the warm-up, then the days
    t_block, (out, windows) = _timed(
        lambda: Blocked().layer_outputs(blocked_model, 0, blocked_in, x_s, 4096, seq), args.runs
    )
    assert np.isfinite(out[0][:, -days:]).all()
    print(f"\ncompute: {cells} cells x {days} days, seq {seq}, hidden {args.hidden}, 1 member, torch threads 1, "
          f"{args.device}, median of {args.runs}")  # fmt: skip
    rows = [(f"published per-day-window loop ({n_loop} cells)", t_loop), ("exact (predict task)", t_exact),
            (f"blocked (warm-up {seq} + block {seq})", t_block)]  # fmt: skip
    for name, t in rows:
        print(f"  {name:<40} {t:8.3f} s  {cell_days / t:12,.0f} cell-days/s per core")
    print(
        f"  ceiling: the recurrent GEMM alone          {gemm_ceiling(args.hidden, seq):12,.0f} cell-days/s per core"
    )
    print(f"  exact / published loop:   {t_loop / t_exact:6.2f}x  (goal >= 3x)")
    print(f"  blocked / exact (cost):   {t_exact / t_block:6.1f}x cheaper  (goal >= 150x); {windows} windows")


# ----------------------------------------------------------------------------------------------- memory


def _write_world(root: Path, n_tiles: int, tile: int, days: int, seq: int, hidden: int) -> Path:
    import torch
    import xarray as xr
    import yaml

    from somocloud import stores
    from somocloud.config import config_from_dict
    from somocloud.grid import Grid
    from somocloud.layers import DEPTHS, DYNAMIC_INPUTS, FORCING_VARIABLES, STATIC_INPUTS
    from somocloud.model.artifact import LayerCard, ModelCard, save_artifact
    from somocloud.model.ealstm import EALSTM
    from somocloud.model.features import Scaler
    from somocloud.predict import product_days

    start = dt.date(2010, 1, 1)
    size = n_tiles * tile
    data = {
        "grid": {"resolution": 0.25, "lat_min": 40.0, "lat_max": 40 + size / 4, "lon_min": 0.0, "lon_max": size / 4},
        "period": {"start": str(start), "end": str(start + dt.timedelta(days=days - 1))},
        "stores": {"root": str(root)},
        "model": {"hidden_size": hidden, "seq_length": seq, "cascade": False},
        "predict": {"tile_size": tile, "time_chunk": days, "batch_windows": 4096},
        "cluster": {"kind": "local", "n_workers": 1, "threads_per_worker": 1},
    }  # fmt: skip
    cfg = config_from_dict(data)
    grid = Grid.from_config(cfg.grid)
    rng = np.random.default_rng(1)
    time_ = product_days(cfg.lookback_start, cfg.period.end)
    shape = (len(time_), *grid.shape)
    forcing = {n: rng.normal(size=shape).astype("float32") for n in FORCING_VARIABLES}
    forcing["tp"] = np.abs(forcing["tp"])
    ds = xr.Dataset(
        {n: (("time", "lat", "lon"), v) for n, v in forcing.items()}, coords={"time": time_, **grid.coords()}
    )
    stores.write_zarr(
        ds, cfg.store("forcing"), encoding={n: {"chunks": (len(time_), tile, tile)} for n in forcing}
    )
    statics = {n: rng.normal(size=grid.shape).astype("float32") for n in STATIC_INPUTS}
    sds = xr.Dataset(
        {n: (("lat", "lon"), v) for n, v in statics.items()}
        | {"land_mask": (("lat", "lon"), np.ones(grid.shape, bool))},
        coords=grid.coords(),
    )
    stores.write_zarr(sds, cfg.store("statics"))
    scaler = Scaler(
        {n: 0.0 for n in (*DYNAMIC_INPUTS, *STATIC_INPUTS)},
        {n: 1.0 for n in (*DYNAMIC_INPUTS, *STATIC_INPUTS)},
    )
    torch.manual_seed(0)
    weights, layers = {}, []
    for k in range(3):
        weights[f"layer{k + 1}/member0.pt"] = EALSTM(N_DYN, N_STAT, hidden).state_dict()
        layers.append(LayerCard(float(DEPTHS[k]), list(DYNAMIC_INPUTS), list(STATIC_INPUTS), 0.25, 0.1,
                                members=[f"layer{k + 1}/member0.pt"], seeds=[0]))  # fmt: skip
    save_artifact(
        cfg.store("model"), ModelCard(hidden, 0.5, seq, 5.0, "exact", scaler.to_dict(), layers), weights, {}
    )
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _peak_worker_rss(config: Path) -> tuple[float, float]:
    """Run `somocloud predict`; (wall s, peak RSS in GiB of the largest child process: the worker)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "somocloud", "predict", "-c", str(config), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parent = psutil.Process(proc.pid)
    peak: dict[int, int] = {}
    while proc.poll() is None:
        try:
            for p in parent.children(recursive=True):
                peak[p.pid] = max(peak.get(p.pid, 0), p.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"somocloud predict failed with exit code {proc.returncode}")
    return time.monotonic() - t0, max(peak.values(), default=0) / 2**30


def memory(args: argparse.Namespace) -> None:
    results = {}
    for factor in (1, 2):
        n = args.memory_tiles * factor
        root = Path(tempfile.mkdtemp(prefix=f"bench-predict-{n}-"))
        config = _write_world(root, n, 16, 60, 90, 32)
        results[n] = _peak_worker_rss(config)  # one run: a rerun would find every task marked
        wall, peak = results[n]
        print(
            f"memory: {n}x{n} tiles of 16x16 cells, 60 days: wall {wall:.1f} s, peak worker RSS {peak:.3f} GiB"
        )
    small, large = results[args.memory_tiles][1], results[2 * args.memory_tiles][1]
    print(f"  peak worker memory, 4x domain / 1x: {large / small:.3f}x  (goal <= 1.2x)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cells", type=int, default=16)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--seq", type=int, default=365)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument(
        "--loop-cells", type=int, default=16, help="cells the published loop runs (its rate is per cell)"
    )
    p.add_argument("--memory-tiles", type=int, default=2)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    load = "/".join(f"{v:.2f}" for v in psutil.getloadavg())
    print(
        f"machine: {psutil.cpu_count()} cores, {platform.processor() or platform.machine()}; load {load} at start"
    )
    compute(args)
    if not args.skip_memory:
        memory(args)


if __name__ == "__main__":
    main()
