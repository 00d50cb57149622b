"""Reading the product: a 20-year series at one cell and one day's global map, for several chunk layouts.

    .venv/bin/python benchmarks/bench_product_read.py [--runs 5] [--years 20] [--layouts A,C]
        [--stores local,s3] [--workdir DIR]

The analyst's two questions cost very different things under different chunkings (docs/store-layout.md).
Each layout is a `predict` config (`tile_size`, `time_chunk`, `chunk_days`, `chunk_cells`); its product
template is written by `somocloud.predict` itself (`product_template`, `product_layout`,
`ensure_template`), so the encoding is exactly what `predict` writes. Two products per layout hold
`soil_moisture` (the spread has the same layout and is left out):

* a **map product** on the SoMo.ml v1 grid (0.25°, 600 x 1440, the 243,883 GLDAS land cells, sea NaN and
  never written) for one year: a one-day map touches only that year's shards, so this costs exactly
  what the 20-year global product would;
* a **series product** of `--years` years over a 2 x 2-task corner of that grid: a one-cell series
  touches only that cell's shards, so this costs what the global product would.

Values are a seasonal cycle plus float32 noise (full mantissas, so compression is close to real output).
Stores: `local` (a directory; reads come from the page cache) and `s3` (a moto `ThreadedMotoServer`
on loopback: every object is an HTTP request, without a real network's latency). Per layout and store:
the wall time of `xarray.open_zarr(url)` of the global map product (dask chunks by default, as an
analyst opens it), of loading the series (3 depths) and of loading the map (3 depths), median of `--runs`; and, counted by a wrapper
store on one read, the objects touched, the requests (a shard's index is one more ranged request) and
the bytes fetched (by zarr for the selection, without dask).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

GLDAS = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "gldas"
    / "GLDAS_NOAH025_3H.A20160101.0300.021.nc4"
)
SOMOML_GRID = {"resolution": 0.25, "lat_min": -60.0, "lat_max": 90.0, "lon_min": -180.0, "lon_max": 180.0}
LAYOUTS = {
    "A": {"tile_size": 16, "time_chunk": 365},
    "B": {"tile_size": 40, "time_chunk": 365},
    "C": {"tile_size": 40, "time_chunk": 365, "chunk_days": 73, "chunk_cells": 10},
    "D": {"tile_size": 40, "time_chunk": 365, "chunk_days": 73, "chunk_cells": 20},
    "E": {"tile_size": 40, "time_chunk": 365, "chunk_days": 5, "chunk_cells": 20},
}
MAP_DAY = 200


def describe(layout: dict[str, int]) -> str:
    outer = f"{layout['time_chunk']} d x {layout['tile_size']}²"
    if "chunk_days" not in layout:
        return f"chunk {outer} (one per task)"
    return f"shard {outer}, chunks {layout['chunk_days']} d x {layout['chunk_cells']}²"


def land_mask() -> np.ndarray:
    import xarray as xr

    with xr.open_dataset(GLDAS) as ds:
        sm = ds["SoilMoi0_10cm_inst"].isel(time=0)
        assert float(sm.lat[0]) < float(sm.lat[-1]) and sm.shape == (600, 1440)
        return np.isfinite(sm.values)


def synthetic_values(rng: np.random.Generator, t0: int, n_days: int, land: np.ndarray) -> np.ndarray:
    """(time, depth, lat, lon) float32 soil moisture, NaN over sea."""
    t = (np.arange(t0, t0 + n_days) / 365.25 * 2 * np.pi)[:, None, None, None]
    phase = np.linspace(0, np.pi, land.shape[1], dtype="float32")[None, None, None, :]
    values = 0.25 + 0.08 * np.sin(t + phase) + 0.02 * rng.standard_normal((n_days, 3, *land.shape))
    values = values.astype("float32")
    values[:, :, ~land] = np.nan
    return values


def write_product(url: str, layout: dict[str, int], grid_cfg: dict[str, float], land: np.ndarray,
                  start: dt.date, n_days: int, seed: int) -> None:  # fmt: skip
    """The template through `somocloud.predict`, then the values one task row (tile band x year) at a time."""
    import zarr

    from somocloud import stores
    from somocloud.config import PredictConfig
    from somocloud.grid import Grid
    from somocloud.predict import ensure_template, product_days, product_layout, product_template

    grid = Grid.from_config(_grid_config(grid_cfg))
    assert grid.shape == land.shape, (grid.shape, land.shape)
    predict_cfg = PredictConfig(**layout)
    days = product_days(start, start + dt.timedelta(days=n_days - 1))
    template = product_template(grid, days, {"somocloud_content_id": describe(layout)})
    ensure_template(url, template, product_layout(len(days), grid, predict_cfg))
    array = zarr.open_array(stores.zarr_url(url), path="soil_moisture", mode="r+", **_zarr_kwargs(url))
    rng = np.random.default_rng(seed)
    band, block = predict_cfg.tile_size, predict_cfg.time_chunk
    for t0 in range(0, n_days, block):
        t1 = min(t0 + block, n_days)
        for i0 in range(0, land.shape[0], band):
            rows = land[i0 : i0 + band]
            if rows.any():
                array[t0:t1, :, i0 : i0 + band, :] = synthetic_values(rng, t0, t1 - t0, rows)


def _grid_config(grid_cfg: dict[str, float]) -> Any:
    from somocloud.config import GridConfig

    return GridConfig(**grid_cfg)


def _zarr_kwargs(url: str) -> dict[str, Any]:
    from somocloud import stores

    opts = stores.storage_options(url)
    return {"storage_options": opts} if opts else {}


class Counted:
    """Requests, objects and bytes fetched through a zarr store."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.objects: set[str] = set()

    def add(self, key: str, buffer: Any) -> None:
        if not key.startswith("soil_moisture/c/"):
            return  # metadata and coordinates: read at open, whatever the layout
        self.requests += 1
        self.objects.add(key)
        self.bytes += 0 if buffer is None else len(buffer)


def counting_store(url: str, counted: Counted) -> Any:
    from zarr.storage import FsspecStore, LocalStore, WrapperStore

    from somocloud import stores

    if stores.protocol(url) == "file":
        base: Any = LocalStore(url, read_only=True)
    else:
        base = FsspecStore.from_url(url, storage_options=stores.storage_options(url), read_only=True)

    class Counting(WrapperStore[Any]):
        async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
            buffer = await self._store.get(key, prototype, byte_range)
            counted.add(key, buffer)
            return buffer

        async def get_partial_values(self, prototype: Any, key_ranges: Any) -> list[Any]:
            key_ranges = list(key_ranges)
            buffers = await self._store.get_partial_values(prototype, key_ranges)
            for (key, _), buffer in zip(key_ranges, buffers, strict=True):
                counted.add(key, buffer)
            return list(buffers)

    return Counting(base)


# How the reader opens the product: dask chunks of one task's block (the Intake catalog's and STAC's
# open arguments), xarray's default (the zarr chunks, inner chunks when sharded), or no dask at all.
DASK_CHUNKS = {
    "task": lambda layout: {
        "time": layout["time_chunk"],
        "lat": layout["tile_size"],
        "lon": layout["tile_size"],
    },
    "default": lambda layout: {},
    "none": lambda layout: None,
}


def measure(url: str, select: dict[str, int], chunks: dict[str, int] | None, runs: int) -> dict[str, Any]:
    """Open + read wall times (medians) and, on one more read through a counting store, what was fetched."""
    import xarray as xr

    from somocloud import stores

    opens, reads = [], []
    for _ in range(runs):
        t = time.perf_counter()
        ds = xr.open_zarr(stores.zarr_url(url), chunks=chunks, **_zarr_kwargs(url))
        opens.append(time.perf_counter() - t)
        t = time.perf_counter()
        values = ds["soil_moisture"].isel(select).values
        reads.append(time.perf_counter() - t)
    assert np.isfinite(values).any(), f"{url}: {select}: nothing read"
    counted = Counted()
    # zarr's own fetches for the selection (no dask, whose graph would not go through the wrapper)
    np.asarray(xr.open_zarr(counting_store(url, counted), chunks=None)["soil_moisture"].isel(select))
    return {
        "open_s": statistics.median(opens),
        "s": statistics.median(reads),
        "objects": len(counted.objects),
        "requests": counted.requests,
        "MB": counted.bytes / 1e6,
        "shape": values.shape,
    }


@contextmanager
def s3_bucket(name: str) -> Iterator[str]:
    """A fresh moto server and bucket per layout (moto keeps objects in memory)."""
    import logging
    import os

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": endpoint}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=name)
    try:
        yield f"s3://{name}"
    finally:
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def run_layout(
    key: str, store: str, workdir: Path, land: np.ndarray, years: int, runs: int, hows: list[str]
) -> dict[str, dict[str, Any]]:
    """Write the layout's two products, then measure both reads for each way of opening them."""
    layout = LAYOUTS[key]
    corner = 2 * layout["tile_size"]
    series_grid = SOMOML_GRID | {"lat_max": SOMOML_GRID["lat_min"] + corner * 0.25,
                                 "lon_max": SOMOML_GRID["lon_min"] + corner * 0.25}  # fmt: skip
    # the corner of the GLDAS grid is sea: put land everywhere in the series product
    series_land = np.ones((corner, corner), dtype=bool)
    n_series = (dt.date(2000 + years, 1, 1) - dt.date(2000, 1, 1)).days
    out: dict[str, dict[str, Any]] = {}
    with s3_bucket(f"bench-{key.lower()}") if store == "s3" else _local(workdir / key) as root:
        write_product(f"{root}/map.zarr", layout, SOMOML_GRID, land, dt.date(2001, 1, 1), 365, 1)
        write_product(
            f"{root}/series.zarr", layout, series_grid, series_land, dt.date(2000, 1, 1), n_series, 2
        )
        for how in hows:
            chunks = DASK_CHUNKS[how](layout)
            maps = measure(f"{root}/map.zarr", {"time": MAP_DAY}, chunks, runs)
            # a cell in the second task of each axis, off its chunk edges
            cell = {"lat": corner // 2 + corner // 5 + 1, "lon": corner // 2 + corner // 3 + 1}
            series = measure(f"{root}/series.zarr", cell, chunks, runs)
            assert series["shape"] == (n_series, 3) and maps["shape"] == (3, *land.shape)
            out[how] = {"open_s": maps["open_s"], "series": series, "map": maps}
    return out


@contextmanager
def _local(path: Path) -> Iterator[str]:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--years", type=int, default=20)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--stores", default="local,s3")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--dask-chunks", default="task", help=f"one or more of {','.join(DASK_CHUNKS)}")
    args = parser.parse_args(argv)
    import dask

    dask.config.set(scheduler="threads")
    land = land_mask()
    print(f"# {platform.node()} python {sys.version.split()[0]}; land cells {int(land.sum())}; "
          f"series {args.years} years; median of {args.runs}", flush=True)  # fmt: skip
    header = "| layout | store | dask chunks | open s | series s | objects | requests | MB | map s | objects | requests | MB |"
    print(header, flush=True)
    print("|" + "---|" * (header.count("|") - 1), flush=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for key in args.layouts.split(","):
            for store in args.stores.split(","):
                results = run_layout(
                    key, store, Path(tmp), land, args.years, args.runs, args.dask_chunks.split(",")
                )
                for how, r in results.items():
                    s, m = r["series"], r["map"]
                    print(f"| {key}: {describe(LAYOUTS[key])} | {store} | {how} | {r['open_s']:.3f} | {s['s']:.3f} | "
                          f"{s['objects']} | {s['requests']} | {s['MB']:.1f} | {m['s']:.2f} | {m['objects']} | "
                          f"{m['requests']} | {m['MB']:.0f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
