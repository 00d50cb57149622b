"""Forcing build benchmark (run by hand, never in the test suite); figures are printed.

    .venv/bin/python benchmarks/bench_forcing.py [--parts io,memory,global] [--runs 3] [--root DIR]
        [--workers 2] [--threads 1]
        [--io-cells 200x300] [--io-days 60] [--io-chunk-hours 1] [--days-per-task 32] [--tile-size 40]
        [--mem-cells 40x60] [--mem-years 1,4] [--mem-chunk-hours 24]
        [--global-days 2] [--global-days-per-task 1] [--global-stage1-only]
        [--global-workers 16,64,256]

Every source is an hourly store in the ERA5 analysis-ready (ARCO) layout: dims time/latitude/longitude
(latitude descending, longitude 0-360), the ERA5 long names and units (`ERA5_UNITS`), one chunk = N
hours x the whole map, float32 with zarr 3's default codecs (bytes + zstd). Values are smooth fields
(latitude, diurnal and seasonal cycles, night-time zero radiation, sparse rain) plus noise, packed to 16
bits per value as ERA5's GRIB fields are, so the chunks compress like real ones (about 2:1). The run
grid is the SoMo.ml kind: 0.25-degree cells whose edges lie on the source's points (so the build samples
conservatively, as `configs/somoml-v1-global.yaml` does).

(1) io: a regional store (`--io-cells` run cells, one more source point each way, `--io-days` days)
    written once to local disk under `--root` and reused. Per run, on the same Dask LocalCluster
    (`--workers` processes x `--threads`): (a) the I/O bound: one task per day task of the build reading
    and decoding, with zarr to numpy, every chunk of every source variable the build reads (the same
    hour ranges, the stamp after each task included for accumulations) and discarding it; (b)
    `run_forcing_build` from scratch: stage 1 (day tasks) and stage 2 (tile tasks) timed around their
    waits, and the whole call; the workers' CPU seconds (psutil, all threads) beside each wall time.
    Bytes read (compressed, decoded), MB/s and build/bound ratio; median of `--runs`, bound and build
    alternating. Then one day task is rerun in this process (the intermediate is kept for this) with
    timers on read (zarr's own part apart from xarray + float64), hourly combination, daily
    aggregation, regridding and the intermediate's write, next to the I/O bound of the same task.
(2) memory: peak RSS of each Dask worker process (psutil, every 0.05 s) during the whole build for
    `--mem-years` years on a small grid (`--mem-cells`), a fresh cluster per period. The source is
    generated on read (below), so nothing is written but the build's own stores.
(3) global: a lazily generated 0.25-degree GLOBAL store (721 x 1440 points, all 11 ERA5 variables the
    build reads, 1 hour per chunk like the public ARCO-ERA5 store) served by a small fsspec file system
    (protocol `somobench://`) that returns the real zarr.json metadata and synthesises each chunk's bytes
    (encoded with the array's codecs) when asked; the workers get it through a WorkerPlugin. The build
    runs on the SoMo.ml grid (lat -60..90, lon -180..180, 600 x 1440 cells) for `--global-days` days
    (`--global-stage1-only` stops after the day tasks). Figures: the workers' CPU seconds per day, the
    share spent generating chunks (thread CPU time counted inside the file system), a timed day task in
    this process, peak worker RSS, and the cost of 20 years on `--global-workers` workers extrapolated
    from them (stage 2 from part (2)'s rechunking rate).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import fsspec
import numcodecs
import numpy as np
import psutil
import xarray as xr
from fsspec.spec import AbstractFileSystem

from somocloud import sampling, stores
from somocloud.config import ClusterConfig, RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.forcing import build as fbuild
from somocloud.forcing import sources as fsources
from somocloud.forcing.sources import ERA5_LEXICON, ERA5_UNITS
from somocloud.grid import Grid, Tile

RES = 0.25
PROTOCOL = "somobench"
VARIABLES = tuple(ERA5_UNITS)
"""The source variables the build reads (every ERA5 variable of the lexicon)."""
SUM_VARIABLES = frozenset(v for e in ERA5_LEXICON.values() if e.aggregation == "sum" for v in e.sources)
"""Accumulations: a day task also reads the stamp after its last hour for these."""
MB = 1e6
GENERATOR_VERSION = 2
"""Bumped whenever the generated values change (a kept regional store is then rewritten)."""

# ----------------------------------------------------------------------------------- the synthetic ERA5


@dataclass(frozen=True)
class Era5Spec:
    """An hourly ERA5-layout store: points north..south and west..east (inclusive, 0.25 degree)."""

    name: str
    north: float
    south: float
    west: float
    east: float
    start: str
    """First stamp (a date, 00 UTC)."""
    n_hours: int
    chunk_hours: int

    @property
    def lat(self) -> np.ndarray:
        return np.round(np.arange(self.north, self.south - RES / 2, -RES), 6)

    @property
    def lon(self) -> np.ndarray:
        return np.round(np.arange(self.west, self.east + RES / 2, RES), 6)

    @property
    def map_shape(self) -> tuple[int, int]:
        return self.lat.size, self.lon.size

    @property
    def n_chunks(self) -> int:
        return math.ceil(self.n_hours / self.chunk_hours)

    def chunk_hours_of(self, it: int) -> int:
        return min(self.chunk_hours, self.n_hours - it * self.chunk_hours)

    def chunk_nbytes(self, it: int) -> int:
        nlat, nlon = self.map_shape
        return self.chunk_hours_of(it) * nlat * nlon * 4


# GRIB-like 16-bit simple packing per variable: (reference value, range)
PACKING: dict[str, tuple[float, float]] = {
    "2m_temperature": (180.0, 160.0),
    "2m_dewpoint_temperature": (170.0, 160.0),
    "surface_pressure": (45000.0, 65000.0),
    "skin_temperature": (170.0, 180.0),
    "total_precipitation": (0.0, 0.05),
    "surface_solar_radiation_downwards": (0.0, 4.5e6),
    "surface_net_solar_radiation": (0.0, 4.0e6),
    "surface_net_thermal_radiation": (-1.5e6, 1.6e6),
    "volumetric_soil_water_layer_1": (0.0, 0.8),
    "volumetric_soil_water_layer_2": (0.0, 0.8),
    "volumetric_soil_water_layer_3": (0.0, 0.8),
}


@dataclass
class _Fields:
    """Per-process cache of a spec's smooth base fields and its noise pool."""

    lat: np.ndarray
    lon: np.ndarray
    coslat: np.ndarray  # (nlat, 1)
    sinlat: np.ndarray  # (nlat, 1)
    base: dict[str, np.ndarray]
    pool: np.ndarray


@lru_cache(maxsize=4)
def _fields(spec: Era5Spec) -> _Fields:
    lat, lon = spec.lat, spec.lon
    rlat, rlon = np.deg2rad(lat)[:, None], np.deg2rad(lon)[None, :]
    coslat, sinlat = np.cos(rlat).astype("float32"), np.sin(rlat).astype("float32")
    wave = (np.sin(3 * rlon) * np.cos(2 * rlat) + 0.5 * np.cos(5 * rlon + 1.0) * np.sin(3 * rlat)).astype(
        "float32"
    )
    base = {
        "2m_temperature": 250.0 + 45.0 * coslat + 4.0 * wave,
        "2m_dewpoint_temperature": 244.0 + 40.0 * coslat + 5.0 * wave,
        "skin_temperature": 251.0 + 47.0 * coslat + 5.0 * wave,
        "surface_pressure": 98000.0 + 2500.0 * wave,
        "surface_net_thermal_radiation": -2.4e5 + 6.0e4 * wave,
        "volumetric_soil_water_layer_1": 0.25 + 0.12 * wave,
        "volumetric_soil_water_layer_2": 0.27 + 0.11 * wave,
        "volumetric_soil_water_layer_3": 0.29 + 0.10 * wave,
    }
    n = lat.size * lon.size
    pool = np.random.default_rng(12345).standard_normal(2 * n + 4099, dtype="float32")
    return _Fields(lat, lon, coslat, sinlat, {k: v.astype("float32") for k, v in base.items()}, pool)


def hour_maps(spec: Era5Spec, var: str, h0: int, n_hours: int) -> np.ndarray:
    """(n_hours, nlat, nlon) float32 maps of `var` at stamps h0 .. h0 + n_hours - 1 (counted from
    `spec.start` 00 UTC): smooth field + cycles + noise, packed to 16 bits like ERA5's GRIB fields."""
    f = _fields(spec)
    nlat, nlon = spec.map_shape
    n = nlat * nlon
    k = VARIABLES.index(var)
    hours = np.arange(h0, h0 + n_hours)
    offsets = (hours * 7919 + k * 104729) % (f.pool.size - n)
    noise = np.stack([f.pool[o : o + n] for o in offsets]).reshape(n_hours, nlat, nlon)
    local_hour = ((hours % 24)[:, None] + f.lon[None, :] / 15.0) % 24.0
    sun = np.cos(2 * np.pi * (local_hour - 12.0) / 24.0).astype("float32")[:, None, :]  # (h, 1, nlon)
    season = np.sin(2 * np.pi * (hours / 24.0) / 365.25).astype("float32")[:, None, None]
    v: np.ndarray
    if var in ("2m_temperature", "2m_dewpoint_temperature", "skin_temperature"):
        amp = np.float32(8.0 if var == "skin_temperature" else 5.0)
        v = f.base[var] + (season * np.float32(10.0)) * f.sinlat + amp * sun + noise * np.float32(0.6)
    elif var == "surface_pressure":
        v = f.base[var] + noise * np.float32(120.0)
    elif var == "total_precipitation":
        v = np.maximum(noise - np.float32(1.3), np.float32(0.0)) * np.float32(1.5e-3)
    elif var in ("surface_solar_radiation_downwards", "surface_net_solar_radiation"):
        peak = np.float32(3.4e6 if var == "surface_solar_radiation_downwards" else 2.7e6)
        day = np.maximum(sun, np.float32(0.0)) * (f.coslat * peak)
        v = day * (np.float32(1.0) + np.float32(0.08) * noise)
    elif var == "surface_net_thermal_radiation":
        v = f.base[var] + noise * np.float32(3.0e4)
    else:  # soil water: slow
        v = f.base[var] + season * np.float32(0.03) + noise * np.float32(0.002)
    ref, span = PACKING[var]
    scale = np.float32(65535.0 / span)
    packed = np.clip(np.rint((v - np.float32(ref)) * scale), 0.0, 65535.0)
    return (packed / scale + np.float32(ref)).astype("float32")


def chunk_values(spec: Era5Spec, var: str, it: int) -> np.ndarray:
    """Time chunk `it` of `var`: (hours, nlat, nlon) float32."""
    return hour_maps(spec, var, it * spec.chunk_hours, spec.chunk_hours_of(it))


def build_metadata(spec: Era5Spec) -> dict[str, bytes]:
    """The store's metadata and coordinate chunks, as written by xarray (relative key → bytes)."""
    import dask.array

    times = np.datetime64(spec.start, "h") + np.arange(spec.n_hours).astype("timedelta64[h]")
    nlat, nlon = spec.map_shape
    data_vars = {
        var: (
            ("time", "latitude", "longitude"),
            dask.array.zeros(
                (spec.n_hours, nlat, nlon), dtype="float32", chunks=(spec.chunk_hours, nlat, nlon)
            ),
            {"units": ERA5_UNITS[var], "long_name": var.replace("_", " ")},
        )
        for var in VARIABLES
    }
    ds = xr.Dataset(
        data_vars,
        coords={
            "time": ("time", times.astype("datetime64[ns]")),
            "latitude": ("latitude", spec.lat, {"units": "degrees_north", "long_name": "latitude"}),
            "longitude": ("longitude", spec.lon, {"units": "degrees_east", "long_name": "longitude"}),
        },
    )
    encoding: dict[str, dict[str, Any]] = {v: {"chunks": (spec.chunk_hours, nlat, nlon)} for v in VARIABLES}
    encoding["time"] = {"units": "hours since 1900-01-01", "dtype": "int64"}
    url = f"memory://somobench-meta/{spec.name}-{os.getpid()}-{time.monotonic_ns()}"
    stores.write_zarr(ds, url, compute=False, encoding=encoding)
    fs, path = stores.filesystem(url)
    out = {}
    for f in fs.find(path):
        rel = f[len(path) :].lstrip("/")
        parts = rel.split("/")
        if parts[-1] == "zarr.json" or parts[0] not in VARIABLES:
            out[rel] = bytes(fs.cat_file(f))
    fs.rm(path, recursive=True)
    return out


def chunk_encoder(metadata: Mapping[str, bytes], var: str) -> Callable[[np.ndarray], bytes]:
    """Encode a chunk with the array's codecs (read from its zarr.json)."""
    meta = json.loads(metadata[f"{var}/zarr.json"])
    codecs = meta["codecs"]
    names = [c["name"] for c in codecs]
    if names != ["bytes", "zstd"] or codecs[0]["configuration"]["endian"] != "little":
        raise SystemExit(f"unexpected codecs for {var}: {codecs}")
    conf = codecs[1]["configuration"]
    zstd = numcodecs.Zstd(level=int(conf["level"]), checksum=bool(conf.get("checksum", False)))
    return lambda values: bytes(zstd.encode(np.ascontiguousarray(values, dtype="<f4")))


def chunk_key(var: str, it: int) -> str:
    return f"{var}/c/{it}/0/0"


# -------------------------------------------------------------------------------- the lazy file system

_LAZY: dict[str, tuple[Era5Spec, dict[str, bytes]]] = {}
_GEN_LOCK = threading.Lock()
_GEN_STATS = {"chunks": 0.0, "seconds": 0.0, "bytes": 0.0}


def generation_stats(reset: bool = False) -> dict[str, float]:
    """Chunks generated in this process, the thread-seconds spent on them and their encoded bytes."""
    with _GEN_LOCK:
        out = dict(_GEN_STATS)
        if reset:
            _GEN_STATS.update(chunks=0.0, seconds=0.0, bytes=0.0)
    return out


class LazyEra5FileSystem(AbstractFileSystem):
    """`somobench://<name>/...`: the zarr.json files and coordinate chunks of a registered spec as
    written, every data chunk generated (`chunk_values`) and encoded when read."""

    protocol = PROTOCOL
    root_marker = ""
    cachable = True

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        return str(path).removeprefix(f"{PROTOCOL}://").strip("/")

    @staticmethod
    def _split(path: str) -> tuple[Era5Spec, dict[str, bytes], str]:
        name, _, rel = path.partition("/")
        if name not in _LAZY:
            raise FileNotFoundError(path)
        spec, meta = _LAZY[name]
        return spec, meta, rel

    def _chunk(self, spec: Era5Spec, meta: Mapping[str, bytes], rel: str) -> bytes | None:
        parts = rel.split("/")
        if len(parts) != 5 or parts[0] not in VARIABLES or parts[1] != "c" or parts[3:] != ["0", "0"]:
            return None
        if not parts[2].isdigit():
            return None
        it = int(parts[2])
        if not 0 <= it < spec.n_chunks:
            return None
        start = time.thread_time()
        data = chunk_encoder(meta, parts[0])(chunk_values(spec, parts[0], it))
        with _GEN_LOCK:
            _GEN_STATS["chunks"] += 1
            _GEN_STATS["seconds"] += time.thread_time() - start
            _GEN_STATS["bytes"] += len(data)
        return data

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        spec, meta, rel = self._split(self._strip_protocol(path))
        data = meta.get(rel)
        if data is None:
            data = self._chunk(spec, meta, rel)
        if data is None:
            raise FileNotFoundError(path)
        return data[start:end]

    def _children(self, path: str) -> dict[str, str]:
        _spec, meta, rel = self._split(path)
        prefix = rel + "/" if rel else ""
        out = {}
        for key in meta:
            if key.startswith(prefix):
                head = key[len(prefix) :].split("/", 1)
                out[head[0]] = "file" if len(head) == 1 else "directory"
        return out

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        spec, meta, rel = self._split(path)
        if rel in meta:
            return {"name": path, "size": len(meta[rel]), "type": "file"}
        parts = rel.split("/")
        if (
            len(parts) == 5
            and parts[0] in VARIABLES
            and parts[1] == "c"
            and parts[2].isdigit()
            and int(parts[2]) < spec.n_chunks
        ):
            return {"name": path, "size": spec.chunk_nbytes(int(parts[2])), "type": "file"}
        if not rel or self._children(path):
            return {"name": path, "size": 0, "type": "directory"}
        raise FileNotFoundError(path)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        entries = [
            {"name": f"{path}/{child}", "size": 0, "type": kind}
            for child, kind in sorted(self._children(path).items())
        ]
        for e in entries:
            if e["type"] == "file":
                e["size"] = self.info(str(e["name"]))["size"]
        return entries if detail else [e["name"] for e in entries]


def register_lazy(spec: Era5Spec, meta: dict[str, bytes]) -> None:
    _LAZY[spec.name] = (spec, meta)
    fsspec.register_implementation(PROTOCOL, LazyEra5FileSystem, clobber=True)


def lazy_plugin(items: Sequence[tuple[Era5Spec, dict[str, bytes]]]) -> Any:
    from distributed.diagnostics.plugin import WorkerPlugin

    class RegisterLazyStores(WorkerPlugin):
        name = "somobench-lazy-era5"

        def __init__(self, items: Sequence[tuple[Era5Spec, dict[str, bytes]]]) -> None:
            self.items = list(items)

        def setup(self, worker: Any) -> None:
            for spec, meta in self.items:
                register_lazy(spec, meta)

    return RegisterLazyStores(items)


def write_store(spec: Era5Spec, path: Path) -> None:
    """The spec's store on local disk, chunk files written directly (the same bytes the lazy store serves);
    reused when a store of the same spec is there."""
    stamp = path / "bench-spec.json"
    want = {**asdict(spec), "generator": GENERATOR_VERSION}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    shutil.rmtree(path, ignore_errors=True)
    meta = build_metadata(spec)
    for rel, data in meta.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_bytes(data)
    encoders = {var: chunk_encoder(meta, var) for var in VARIABLES}

    def one(item: tuple[str, int]) -> int:
        var, it = item
        target = path / chunk_key(var, it)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = encoders[var](chunk_values(spec, var, it))
        target.write_bytes(data)
        return len(data)

    from concurrent.futures import ThreadPoolExecutor

    start = time.perf_counter()
    with ThreadPoolExecutor(2) as pool:
        total = sum(pool.map(one, [(v, it) for v in VARIABLES for it in range(spec.n_chunks)]))
    stamp.write_text(json.dumps(want))
    raw = spec.n_hours * spec.map_shape[0] * spec.map_shape[1] * 4 * len(VARIABLES)
    print(
        f"  wrote {path}: {total / 2**30:.2f} GiB compressed, {raw / 2**30:.2f} GiB decoded "
        f"({raw / total:.2f}:1) in {time.perf_counter() - start:.0f} s"
    )


def check_store(url: str, spec: Era5Spec) -> None:
    """Sanity: the store opens through `stores.open_zarr` and a chunk decodes to the generator's values."""
    ds = stores.open_zarr(url, chunks=None)
    it = min(1, spec.n_chunks - 1)
    var = "2m_dewpoint_temperature"
    got = ds[var].isel(time=slice(it * spec.chunk_hours, it * spec.chunk_hours + 1)).values
    want = chunk_values(spec, var, it)[:1]
    if not np.array_equal(got, want):
        raise SystemExit(f"{url}: chunk {it} of {var} does not decode to the generated values")
    if ds[var].attrs.get("units") != ERA5_UNITS[var]:
        raise SystemExit(f"{url}: wrong units on {var}")


# --------------------------------------------------------------------------------------------- helpers


def region_spec(
    name: str,
    cells: tuple[int, int],
    south: float,
    west: float,
    first_day: dt.date,
    n_days: int,
    chunk_hours: int,
) -> tuple[Era5Spec, dict[str, float]]:
    """A source covering a run grid of `cells` 0.25-degree cells from (south, west): one point more each
    way. Returns the spec (first day + n_days days + one day for the closing stamp) and the grid."""
    nlat, nlon = cells
    grid = {
        "resolution": RES,
        "lat_min": south,
        "lat_max": south + nlat * RES,
        "lon_min": west,
        "lon_max": west + nlon * RES,
    }
    spec = Era5Spec(
        name,
        south + nlat * RES,
        south,
        west,
        west + nlon * RES,
        first_day.isoformat(),
        (n_days + 1) * 24,
        chunk_hours,
    )
    return spec, grid


def make_config(
    root: Path,
    source_url: str,
    grid: Mapping[str, float],
    first_day: dt.date,
    n_days: int,
    days_per_task: int,
    tile_size: int,
    workers: int,
    threads: int,
) -> RunConfig:
    """A run config whose forcing days are exactly first_day .. first_day + n_days - 1."""
    return config_from_dict(
        {
            "grid": dict(grid),
            "period": {
                "start": (first_day + dt.timedelta(days=1)).isoformat(),
                "end": (first_day + dt.timedelta(days=n_days - 1)).isoformat(),
            },
            "model": {"seq_length": 2},
            "stores": {"root": str(root), "forcing_source": source_url},
            "forcing": {"days_per_task": days_per_task, "tile_size": tile_size, "keep_intermediate": True},
            "cluster": {"kind": "local", "n_workers": workers, "threads_per_worker": threads},
        }
    )


def start_client(workers: int, threads: int) -> Any:
    from somocloud.cluster import make_client

    client = make_client(ClusterConfig(kind="local", n_workers=workers, threads_per_worker=threads))
    client.run(_warm_up)
    return client


def _warm_up() -> None:
    import somocloud.forcing  # noqa: F401  (the imports a first task would otherwise pay)


def stop_client(client: Any) -> None:
    cluster = client.cluster
    client.close()
    cluster.close()


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of the processes (all their threads) so far."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


@contextlib.contextmanager
def stage_timer(pids: Sequence[int]) -> Iterator[dict[str, float]]:
    """Wall seconds the build waits on each stage (`_track` is called right after the stage's
    submission) and the workers' CPU seconds meanwhile (`<label> cpu`)."""
    times: dict[str, float] = {}
    original = fbuild._track

    def timed(futures: list[Any], label: str, show: bool) -> list[dict[str, str]]:
        start, cpu = time.perf_counter(), cpu_seconds(pids)
        try:
            return original(futures, label, show)
        finally:
            times[label] = time.perf_counter() - start
            times[f"{label} cpu"] = cpu_seconds(pids) - cpu
            times[f"{label} start"], times[f"{label} stop"] = start, time.perf_counter()

    fbuild._track = timed
    try:
        yield times
    finally:
        fbuild._track = original


def task_seconds(task_stream: Sequence[Mapping[str, Any]], prefix: str) -> float:
    """Compute seconds of the tasks whose key starts with `prefix`."""
    total = 0.0
    for rec in task_stream:
        if str(rec.get("key", "")).strip("('").startswith(prefix):
            total += sum(
                s["stop"] - s["start"] for s in rec.get("startstops", []) if s["action"] == "compute"
            )
    return total


class _Stop(Exception):
    pass


@contextlib.contextmanager
def _stop_before_stage2(active: bool) -> Iterator[None]:
    """Stop the build once its day tasks are done: the tile tasks are chosen by `select_parts` on the
    tiles only after every day task is marked."""
    original = fbuild.select_parts

    def select(items: list[Any], parts: Any) -> list[Any]:
        if active and items and isinstance(items[0], Tile):
            raise _Stop
        return original(items, parts)

    fbuild.select_parts = select
    try:
        yield
    finally:
        fbuild.select_parts = original


def run_build(cfg: RunConfig, client: Any, stage1_only: bool = False) -> dict[str, Any]:
    """The whole build from scratch (its outputs removed first): wall, stage waits, task compute seconds.
    With `stage1_only` the build is stopped before its tile tasks."""
    from distributed import get_task_stream

    shutil.rmtree(cfg.stores.root, ignore_errors=True)
    report = None
    pids = list(client.run(os.getpid).values())
    with stage_timer(pids) as stages, get_task_stream(client) as ts, _stop_before_stage2(stage1_only):
        start = time.perf_counter()
        with contextlib.suppress(_Stop):
            report = fbuild.run_forcing_build(cfg, Context(show_progress=False, client=client))
        wall = time.perf_counter() - start
    if report is not None and not report.complete:
        raise SystemExit("the build did not complete")
    return {
        "wall": wall,
        "stage1": stages.get("forcing", float("nan")),
        "stage2": stages.get("forcing rechunk", float("nan")),
        "stage1_cpu": stages.get("forcing cpu", float("nan")),
        "stage2_cpu": stages.get("forcing rechunk cpu", float("nan")),
        "stage1_window": (stages.get("forcing start", 0.0), stages.get("forcing stop", 0.0)),
        "stage2_window": (stages.get("forcing rechunk start", 0.0), stages.get("forcing rechunk stop", 0.0)),
        "stage1_task_s": task_seconds(ts.data, "run_day_task"),
        "stage2_task_s": task_seconds(ts.data, "run_tile_task"),
        "day_tasks": float(len(report.day_tasks_run)) if report else float("nan"),
        "tile_tasks": float(len(report.tile_tasks_run)) if report else 0.0,
    }


@contextlib.contextmanager
def timers() -> Iterator[dict[str, float]]:
    """Wall seconds in the parts of a day task run in this process (functions patched for the duration)."""
    import zarr

    spent: dict[str, float] = {
        "read": 0.0, "zarr": 0.0, "combine": 0.0, "aggregate": 0.0, "regrid": 0.0, "write": 0.0
    }  # fmt: skip
    patches: list[tuple[Any, str, Any]] = [
        (zarr.Array, "get_orthogonal_selection", "zarr"),
        (zarr.Array, "get_basic_selection", "zarr"),
        (fsources.Era5Hourly, "_read", "read"),
        (fsources.LexiconEntry, "hourly", "combine"),
        (fsources, "aggregate_day", "aggregate"),
        (sampling.GridSampler, "apply", "regrid"),
        (stores, "write_zarr", "write"),
    ]
    originals = []
    for owner, attr, label in patches:
        fn = getattr(owner, attr)
        originals.append((owner, attr, fn))

        def wrapped(*args: Any, _fn: Any = fn, _label: str = label, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                spent[_label] += time.perf_counter() - start

        setattr(owner, attr, wrapped)
    try:
        yield spent
    finally:
        for owner, attr, fn in originals:
            setattr(owner, attr, fn)


def profile_day_task(cfg: RunConfig, spec: Era5Spec, task_index: int = 0) -> dict[str, float]:
    """Rerun one day task of a finished build (intermediate kept) in this process, with `timers`; the
    `read` figure includes the waits on zarr's I/O threads, `generate` is the thread time spent making
    chunks (lazy stores only, inside `read`)."""
    grid = Grid.from_config(cfg.grid)
    source_plans = fbuild.plan_sources(cfg, grid)
    forcing_url = cfg.store("forcing")
    plan = fbuild.Plan(
        sources=source_plans,
        intermediate_url=fbuild.intermediate_url(forcing_url),
        forcing_url=forcing_url,
        reference_url=cfg.store("reference_sm"),
        min_hours=cfg.forcing.min_hours_per_day,
        build_key=fbuild.build_key(cfg, source_plans),
    )
    n_days = (cfg.period.end - cfg.lookback_start).days + 1
    task = fbuild.plan_day_tasks(cfg.lookback_start, n_days, cfg.forcing.days_per_task)[task_index]
    markers = stores.markers_for(plan.intermediate_url)
    stores.remove(markers.url(task.id))
    generation_stats(reset=True)
    with timers() as spent:
        start, cpu = time.perf_counter(), time.process_time()
        result = fbuild.run_day_task(task, plan, {})
        spent["total"] = time.perf_counter() - start
        spent["cpu"] = time.process_time() - cpu
    if result["status"] != "written":
        raise SystemExit(f"profiled day task was not run: {result}")
    spent["generate"] = generation_stats()["seconds"]
    spent["days"] = float(task.stop - task.start)
    step = max(24, spec.chunk_hours)
    start = time.perf_counter()
    read_day_task(plan.sources[0].url, io_ranges(0, task.start, task.stop), step)
    spent["bound"] = time.perf_counter() - start
    return spent


def print_profile(spent: Mapping[str, float]) -> None:
    parts = ("read", "combine", "aggregate", "regrid", "write")
    total = spent["total"]
    other = total - sum(spent[p] for p in parts)
    cells = ", ".join(f"{p} {spent[p]:.2f} s ({100 * spent[p] / total:.0f} %)" for p in parts)
    print(
        f"  one day task ({spent['days']:.0f} days) rerun in this process: {total:.2f} s wall, "
        f"{spent['cpu']:.2f} s CPU (all threads) = {cells}, other {other:.2f} s ({100 * other / total:.0f} %)"
    )
    gen = (
        f"; chunk generation (thread CPU, inside zarr) {spent['generate']:.2f} s" if spent["generate"] else ""
    )
    print(
        f"    read = zarr fetch + decode + selection {spent['zarr']:.2f} s, xarray + float64 "
        f"{spent['read'] - spent['zarr']:.2f} s{gen}; the I/O bound of the same task here: "
        f"{spent['bound']:.2f} s"
    )


# ------------------------------------------------------------------------------------------- (1) io


def read_day_task(url: str, ranges: Sequence[tuple[str, int, int]], step: int) -> int:
    """The I/O bound task: read and decode hours [h0, h1) of each variable with zarr, `step` hours at a
    time, discarding the arrays; returns the decoded bytes."""
    import zarr

    group = zarr.open_group(stores.zarr_store(url, read_only=True), mode="r")
    nbytes = 0
    for var, h0, h1 in ranges:
        arr = group[var]
        for a in range(h0, h1, step):
            nbytes += np.asarray(arr[a : min(a + step, h1)]).nbytes  # type: ignore[index]
    return nbytes


def io_ranges(first_hour: int, start: int, stop: int) -> list[tuple[str, int, int]]:
    """The hours a day task for days [start, stop) reads of each variable (plus the closing stamp of
    accumulations)."""
    h0, h1 = first_hour + 24 * start, first_hour + 24 * stop
    return [(v, h0, h1 + (1 if v in SUM_VARIABLES else 0)) for v in VARIABLES]


def chunks_touched(spec: Era5Spec, ranges: Sequence[tuple[str, int, int]]) -> list[tuple[str, int]]:
    return [
        (var, it)
        for var, h0, h1 in ranges
        for it in range(h0 // spec.chunk_hours, (h1 - 1) // spec.chunk_hours + 1)
    ]


def bench_io(args: argparse.Namespace, root: Path) -> None:
    print("\n(1) build throughput against reading + decoding the same hourly chunks")
    first_day = dt.date(2020, 1, 1)
    spec, grid = region_spec("region", args.io_cells, 30.0, 0.0, first_day, args.io_days, args.io_chunk_hours)
    src = root / "era5-region.zarr"
    write_store(spec, src)
    check_store(str(src), spec)
    cfg = make_config(
        root / "out-io",
        str(src),
        grid,
        first_day,
        args.io_days,
        args.days_per_task,
        args.tile_size,
        args.workers,
        args.threads,
    )
    tasks = fbuild.plan_day_tasks(first_day, args.io_days, args.days_per_task)
    task_ranges = [io_ranges(0, t.start, t.stop) for t in tasks]
    touched = [c for r in task_ranges for c in chunks_touched(spec, r)]
    compressed = sum((src / chunk_key(v, it)).stat().st_size for v, it in touched)
    decoded = sum(spec.chunk_nbytes(it) for _, it in touched)
    selected = sum(
        (h1 - h0) * spec.map_shape[0] * spec.map_shape[1] * 4 for r in task_ranges for _, h0, h1 in r
    )
    step = max(spec.chunk_hours, 24)
    nlat, nlon = spec.map_shape
    print(
        f"  source {nlat} x {nlon} points, {args.io_days} days, {spec.chunk_hours} h per chunk; run grid "
        f"{args.io_cells[0]} x {args.io_cells[1]} cells (conservative); {len(tasks)} day tasks of "
        f"{args.days_per_task} days; cluster {args.workers} workers x {args.threads} thread(s)"
    )
    print(
        f"  chunks read: {len(touched)}, {compressed / MB:.0f} MB compressed, {decoded / MB:.0f} MB decoded "
        "(local disk, page cache warm)"
    )
    client = start_client(args.workers, args.threads)
    pids = list(client.run(os.getpid).values())
    bound: list[float] = []
    bound_cpu: list[float] = []
    builds: list[dict[str, float]] = []
    try:
        for run in range(args.runs):
            order = ("bound", "build") if run % 2 == 0 else ("build", "bound")
            for what in order:
                if what == "bound":
                    start, cpu = time.perf_counter(), cpu_seconds(pids)
                    futures = client.map(
                        read_day_task, [str(src)] * len(tasks), task_ranges, step=step, pure=False
                    )
                    got = sum(client.gather(futures))
                    bound.append(time.perf_counter() - start)
                    bound_cpu.append(cpu_seconds(pids) - cpu)
                    if got != selected:
                        raise SystemExit(f"I/O bound read {got} bytes, expected {selected}")
                else:
                    builds.append(run_build(cfg, client))
            b = builds[-1]
            print(
                f"  run {run + 1}: bound {bound[-1]:.2f} s ({decoded / MB / bound[-1]:.0f} MB/s, "
                f"{bound_cpu[-1]:.1f} CPU-s); build stage 1 {b['stage1']:.2f} s "
                f"({decoded / MB / b['stage1']:.0f} MB/s, {b['stage1_cpu']:.1f} CPU-s), stage 2 "
                f"{b['stage2']:.2f} s, whole {b['wall']:.2f} s"
            )
    finally:
        stop_client(client)
    med = {k: statistics.median(b[k] for b in builds) for k, v in builds[0].items() if isinstance(v, float)}
    t_bound, c_bound = statistics.median(bound), statistics.median(bound_cpu)
    print(f"  median of {args.runs} (workers' CPU seconds in brackets):")
    print(
        f"    I/O bound (zarr read + decode, {len(tasks)} tasks): {t_bound:.2f} s ({c_bound:.1f} CPU-s), "
        f"{decoded / MB / t_bound:.0f} MB/s decoded, {compressed / MB / t_bound:.0f} MB/s compressed"
    )
    print(
        f"    build stage 1 (day tasks): {med['stage1']:.2f} s ({med['stage1_cpu']:.1f} CPU-s), "
        f"{decoded / MB / med['stage1']:.0f} MB/s decoded, {compressed / MB / med['stage1']:.0f} MB/s "
        f"compressed -> {100 * t_bound / med['stage1']:.0f} % of the I/O bound (goal >= 50 %; by CPU "
        f"seconds {100 * c_bound / med['stage1_cpu']:.0f} %)"
    )
    print(
        f"    build stage 2 ({med['tile_tasks']:.0f} tile tasks): {med['stage2']:.2f} s "
        f"({med['stage2_cpu']:.1f} CPU-s); whole build {med['wall']:.2f} s, {decoded / MB / med['wall']:.0f} "
        f"MB/s -> {100 * t_bound / med['wall']:.0f} % of the I/O bound"
    )
    spent = profile_day_task(cfg, spec)
    print_profile(spent)


# --------------------------------------------------------------------------------------- (2) memory


class RssSampler:
    """Peak RSS of given processes, sampled in a thread."""

    def __init__(self, pids: Sequence[int], every: float = 0.05) -> None:
        self.procs = [psutil.Process(p) for p in pids]
        self.every = every
        self.peak = dict.fromkeys(pids, 0)
        self.peak_sum = 0
        self.series: list[tuple[float, int]] = []
        """(perf_counter, RSS of the largest worker) per sample."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = largest = 0
            for p in self.procs:
                with contextlib.suppress(psutil.Error):
                    rss = p.memory_info().rss
                    self.peak[p.pid] = max(self.peak[p.pid], rss)
                    total += rss
                    largest = max(largest, rss)
            self.peak_sum = max(self.peak_sum, total)
            self.series.append((time.perf_counter(), largest))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, stop: float) -> int:
        """Peak RSS of the largest worker between two perf_counter stamps."""
        return max((rss for t, rss in self.series if start <= t <= stop), default=0)


def bench_memory(args: argparse.Namespace, root: Path) -> float:
    """Returns stage 2's rate (bytes of daily values per worker CPU second) on the longest period."""
    print("\n(2) peak worker memory against the length of the period")
    results = []
    stage2_rate = 0.0
    for years in args.mem_years:
        first_day = dt.date(2001, 1, 1)
        n_days = (dt.date(2001 + years, 1, 1) - first_day).days
        spec, grid = region_spec(
            f"mem{years}y", args.mem_cells, 30.0, 0.0, first_day, n_days, args.mem_chunk_hours
        )
        meta = build_metadata(spec)
        register_lazy(spec, meta)
        url = f"{PROTOCOL}://{spec.name}"
        check_store(url, spec)
        cfg = make_config(
            root / f"out-mem-{years}y",
            url,
            grid,
            first_day,
            n_days,
            args.days_per_task,
            args.tile_size,
            args.workers,
            args.threads,
        )
        client = start_client(args.workers, args.threads)
        try:
            client.register_plugin(lazy_plugin([(spec, meta)]))
            pids = list(client.run(os.getpid).values())
            idle = max(psutil.Process(p).memory_info().rss for p in pids)
            with RssSampler(pids) as sampler:
                b = run_build(cfg, client)
            peak = max(sampler.peak.values())
        finally:
            stop_client(client)
        results.append((years, peak, idle))
        stage2_rate = n_days * args.mem_cells[0] * args.mem_cells[1] * 9 * 4 / b["stage2_cpu"]
        print(
            f"  {years} year(s), {n_days} days, {args.mem_cells[0]} x {args.mem_cells[1]} cells, "
            f"{spec.chunk_hours} h chunks, tile {args.tile_size}, {args.days_per_task} days per task: build "
            f"{b['wall']:.1f} s (stage 1 {b['stage1']:.1f} s, stage 2 {b['stage2']:.1f} s); peak RSS of the "
            f"largest worker {peak / 2**20:.0f} MiB (idle after imports {idle / 2**20:.0f} MiB; during stage 1 "
            f"{sampler.peak_between(*b['stage1_window']) / 2**20:.0f}, during stage 2 "
            f"{sampler.peak_between(*b['stage2_window']) / 2**20:.0f} MiB), sum of workers "
            f"{sampler.peak_sum / 2**20:.0f} MiB"
        )
        shutil.rmtree(cfg.stores.root, ignore_errors=True)
    if len(results) >= 2:
        (y0, p0, i0), (y1, p1, i1) = results[0], results[-1]
        print(
            f"  ratio {y1} y / {y0} y: peak {p1 / p0:.2f}x (goal <= 1.2x); above idle "
            f"{(p1 - i1) / 2**20:.0f} / {(p0 - i0) / 2**20:.0f} MiB = {(p1 - i1) / max(p0 - i0, 1):.2f}x"
        )
    return stage2_rate


# --------------------------------------------------------------------------------------- (3) global


def generation_cost(spec: Era5Spec, meta: Mapping[str, bytes], repeats: int = 3) -> tuple[float, float]:
    """Seconds to generate and to encode one hour chunk, averaged over the variables (this process)."""
    gen = enc = 0.0
    for var in VARIABLES:
        encode = chunk_encoder(meta, var)
        for r in range(repeats):
            t0 = time.perf_counter()
            values = chunk_values(spec, var, 5 + r)
            t1 = time.perf_counter()
            encode(values)
            t2 = time.perf_counter()
            gen += t1 - t0
            enc += t2 - t1
    n = repeats * len(VARIABLES)
    return gen / n, enc / n


def bench_global(args: argparse.Namespace, root: Path, stage2_rate: float | None) -> None:
    print("\n(3) quasi-global run grid on a lazily generated global 0.25-degree hourly store")
    first_day = dt.date(2020, 1, 1)
    n_days = args.global_days
    spec = Era5Spec("global", 90.0, -90.0, 0.0, 359.75, first_day.isoformat(), (n_days + 1) * 24, 1)
    meta = build_metadata(spec)
    register_lazy(spec, meta)
    url = f"{PROTOCOL}://{spec.name}"
    check_store(url, spec)
    grid = {"resolution": RES, "lat_min": -60.0, "lat_max": 90.0, "lon_min": -180.0, "lon_max": 180.0}
    cfg = make_config(
        root / "out-global",
        url,
        grid,
        first_day,
        n_days,
        args.global_days_per_task,
        args.tile_size,
        args.workers,
        args.threads,
    )
    gen, enc = generation_cost(spec, meta)
    chunks_per_day = 24 * len(VARIABLES)
    print(
        f"  source 721 x 1440 points, {len(VARIABLES)} variables, 1 h chunks "
        f"({spec.chunk_nbytes(0) / MB:.2f} MB decoded); run grid 600 x 1440 cells (conservative); {n_days} "
        f"days, {args.global_days_per_task} day(s) per task, tile {args.tile_size}; cluster {args.workers} "
        f"workers x {args.threads} thread(s) (processes; the file system reaches the workers by a WorkerPlugin)"
    )
    print(
        f"  generating one hour chunk here: {1000 * gen:.1f} ms values + {1000 * enc:.1f} ms zstd encode, "
        f"{chunks_per_day * (gen + enc):.1f} s per day of source ({chunks_per_day} chunks)"
    )
    client = start_client(args.workers, args.threads)
    try:
        client.register_plugin(lazy_plugin([(spec, meta)]))
        pids = list(client.run(os.getpid).values())
        client.run(generation_stats, True)
        with RssSampler(pids) as rss:
            b = run_build(cfg, client, stage1_only=args.global_stage1_only)
        gstats = client.run(generation_stats)
    finally:
        stop_client(client)
    g_sec = sum(st["seconds"] for st in gstats.values())
    g_chunks = sum(st["chunks"] for st in gstats.values())
    g_bytes = sum(st["bytes"] for st in gstats.values())
    c1 = b["stage1_cpu"]
    print(
        f"  stage 1: {b['stage1']:.1f} s wall, {b['stage1_task_s']:.1f} task-s, {c1:.1f} CPU-s of the workers "
        f"for {n_days} days = {c1 / n_days:.1f} CPU-s per day; chunks generated in the workers: {g_chunks:.0f} "
        f"({g_bytes / MB:.0f} MB compressed) in {g_sec:.1f} CPU-s = {100 * g_sec / c1:.0f} % of stage 1's CPU"
    )
    if not args.global_stage1_only:
        print(
            f"  stage 2: {b['stage2']:.1f} s wall, {b['stage2_cpu']:.1f} CPU-s for {b['tile_tasks']:.0f} tiles; "
            f"whole build {b['wall']:.1f} s; peak RSS of the largest worker {max(rss.peak.values()) / 2**30:.2f} "
            "GiB"
        )
        print_profile(profile_day_task(cfg, spec))
    else:
        print(f"  peak RSS of the largest worker {max(rss.peak.values()) / 2**30:.2f} GiB")
    days20 = 7305
    own = max(c1 - g_sec, 0.0) / n_days
    src_per_day = g_bytes / max(g_chunks, 1) * chunks_per_day
    print(
        f"  20 years ({days20} days), stage 1: {own:.1f} CPU-s per day without the generation; assuming one "
        "core per worker at this CPU's speed and linear scaling (no shared bottleneck):"
    )
    for n in args.global_workers:
        print(
            f"    {n:4d} workers: {days20 * own / n / 3600:6.1f} h ({days20 * c1 / n_days / n / 3600:.1f} h with "
            f"the generation); the store must deliver {src_per_day * n / max(own, 1e-9) / MB:.0f} MB/s compressed"
        )
    if stage2_rate:
        inter = days20 * 600 * 1440 * 9 * 4
        print(
            f"  stage 2 at 20 years rechunks {inter / 1e9:.0f} GB of daily values; at part (2)'s "
            f"{stage2_rate / MB:.0f} MB per CPU-s (4-year tiles) that is "
            + ", ".join(f"{inter / stage2_rate / n / 3600:.2f} h on {n}" for n in args.global_workers)
        )


# ------------------------------------------------------------------------------------------------ main


def _cells(text: str) -> tuple[int, int]:
    a, b = text.lower().split("x")
    return int(a), int(b)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", default="io,memory,global", help="comma-separated: io, memory, global")
    p.add_argument("--root", default=None, help="working folder (the regional store is kept there)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--days-per-task", type=int, default=32)
    p.add_argument("--tile-size", type=int, default=40)
    p.add_argument("--io-cells", type=_cells, default=(200, 300))
    p.add_argument("--io-days", type=int, default=60)
    p.add_argument("--io-chunk-hours", type=int, default=1)
    p.add_argument("--mem-cells", type=_cells, default=(40, 60))
    p.add_argument("--mem-years", type=_ints, default=[1, 4])
    p.add_argument("--mem-chunk-hours", type=int, default=24)
    p.add_argument("--global-days", type=int, default=2)
    p.add_argument("--global-days-per-task", type=int, default=1)
    p.add_argument("--global-stage1-only", action="store_true")
    p.add_argument("--global-workers", type=_ints, default=[16, 64, 256])
    args = p.parse_args(argv)
    root = Path(args.root or tempfile.mkdtemp(prefix="somo-bench-forcing-"))
    root.mkdir(parents=True, exist_ok=True)
    parts = set(args.parts.split(","))
    print(f"bench_forcing: root {root}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    if "io" in parts:
        bench_io(args, root)
    stage2_rate = bench_memory(args, root) if "memory" in parts else None
    if "global" in parts:
        bench_global(args, root, stage2_rate)


if __name__ == "__main__":
    # Run as the module `bench_forcing` (benchmarks/ is on sys.path), so the file system, the plugin and
    # the task functions pickle by reference and the workers import them from the same file.
    import bench_forcing

    bench_forcing.main()
