"""In-situ ingestion benchmark (run by hand, never in the test suite); figures are printed.

    .venv/bin/python benchmarks/bench_ingest.py [--files 1000] [--days 365] [--step-hours 1]
        [--sample 50] [--runs 5] [--ingest-runs 3] [--root DIR]

(a) Files → daily QC'd series, one file at a time, on the same files: somocloud's
    `somocloud.insitu.process_file` (read + QC + daily means) against the `ismn` package (1.5.x:
    `ismn.filehandlers.DataFile` reading metadata and data, then the same QC and daily aggregation with
    pandas on its DataFrame). Two sets: `--sample` synthetic station files, and the two real
    one-year hourly COSMOS header+values files of the ismn package's fixtures
    (/work/shared/data/ismn, if present), each read `--sample // 2` times. Every run reads every file
    of a set once with each implementation; the per-file time of a run is its total / files; the
    median over `--runs` runs is printed, with the speed-up. The daily series of both are compared.
(b) The real `ingest` step over `--files` synthetic station files through the CLI
    (`python -m somocloud ingest`) on a Dask LocalCluster of 2 single-threaded workers: wall time of
    the command, the step's own time (its log line, cluster start included) and peak memory, sampled
    every 0.1 s as the summed RSS of the command and all its children (scheduler, nannies, workers)
    and as the largest single process; median of `--ingest-runs`.

The station files are written once under `--root` (default: a new temporary folder) by the synthetic
world's ISMN writer (`somocloud.synthetic.ismn.station_files`), hourly by default like most ISMN
networks, for stations placed on a grid with enough land cells; writing stops at exactly `--files`.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import yaml

from somocloud.config import IngestConfig, config_from_dict
from somocloud.insitu import process_file

REAL_FILES = (
    Path("/work/shared/data/ismn/Data_seperate_files_header_20170810_20180809"),
    [
        "COSMOS/ARM-1/COSMOS_COSMOS_ARM-1_sm_0.000000_0.190000_Cosmic-ray-Probe_20170810_20180809.stm",
        "COSMOS/Barrow-ARM/COSMOS_COSMOS_Barrow-ARM_sm_0.000000_0.210000_Cosmic-ray-Probe_20170810_20180809.stm",
    ],
)
SENSORS_PER_STATION = 2.45
"""Mean sensors per synthetic station (from `somocloud.synthetic.ismn.DEPTH_PATTERNS`)."""


# ------------------------------------------------------------------------------------------ files


def write_station_files(root: Path, n_files: int, days: int, step_hours: int, seed: int = 11) -> list[str]:
    """Exactly `n_files` synthetic ISMN header+values files under `root`; their paths relative to it.

    Reuses the files of an earlier call with the same parameters (a `params.json` beside them)."""
    from somocloud.synthetic import generate_world
    from somocloud.synthetic import ismn as synth_ismn

    params = {"files": n_files, "days": days, "step_hours": step_hours, "seed": seed}
    marker = root / "params.json"
    if marker.exists() and json.loads(marker.read_text()) == params:
        return sorted(str(p.relative_to(root)) for p in root.rglob("*.stm"))
    n_stations = math.ceil(n_files / SENSORS_PER_STATION * 1.25)
    side = math.ceil(math.sqrt(n_stations / 0.4))  # about 65 % of the cells are land
    start = dt.date(2019, 1, 1)
    cfg = config_from_dict(
        {
            "grid": {"resolution": 0.25, "lat_min": 30.0, "lat_max": 30.0 + 0.25 * side,
                     "lon_min": -100.0, "lon_max": -100.0 + 0.25 * side},
            "period": {"start": str(start), "end": str(start + dt.timedelta(days=days - 1))},
            "model": {"seq_length": 2},
            "synthetic": {"seed": seed, "n_stations": n_stations, "subdaily_step_hours": step_hours,
                          "spinup_days": 30},
        }
    )  # fmt: skip
    t0 = time.perf_counter()
    world = generate_world(cfg)
    truth = world.truth
    day0 = dt.date.fromisoformat(str(world.days[0]))
    written: list[str] = []
    for index, station in enumerate(world.stations):
        cell = truth[:, :, station.row, station.col]
        for rel, text in synth_ismn.station_files(station, cell, day0, cfg.synthetic, index).items():
            if len(written) == n_files:
                break
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(rel)
    if len(written) < n_files:
        raise SystemExit(f"only {len(written)} files from {len(world.stations)} stations; raise n_stations")
    marker.write_text(json.dumps(params))
    size = sum((root / r).stat().st_size for r in written) / 2**20
    print(f"wrote {n_files} station files ({size:.0f} MiB) under {root} in {time.perf_counter() - t0:.0f} s")
    return sorted(written)


# ----------------------------------------------------------------------------- (a) per-file reading


def ismn_daily(iroot: Any, rel: str, cfg: IngestConfig) -> pd.Series:
    """The `ismn` package's reading of one series, then the same QC and daily means with pandas."""
    from ismn.filehandlers import DataFile

    df = DataFile(iroot, rel).read_data()
    value, flag = df.iloc[:, 0], df.iloc[:, 1]
    # Accepted flags (combined ones such as C02,D04 are not in the list), possible values, -9999 out.
    ok = flag.isin(cfg.quality_flags) & value.between(0.0, 1.0)
    good = value[ok]
    by_day = good.groupby(good.index.floor("D"))
    count = by_day.count()
    daily = by_day.mean()[count >= cfg.min_obs_per_day]
    return daily if len(daily) >= cfg.min_days else daily.iloc[:0]


def ours_daily(root: Path, rel: str, cfg: IngestConfig) -> pd.Series:
    """somocloud's file → daily QC'd series."""
    result = process_file(str(root / rel), rel, cfg)
    if len(result.series) != 1:
        raise RuntimeError(f"{rel}: {len(result.series)} series, rejected {result.rejected}")
    series = result.series[0]
    return series.daily if series.kept else series.daily.iloc[:0]


def per_file(root: Path, rels: list[str], runs: int, label: str) -> dict[str, float]:
    """Median per-file seconds of both implementations over `runs` runs, and the largest difference."""
    from ismn.base import IsmnRoot

    cfg = IngestConfig()
    iroot = IsmnRoot(root)
    # one untimed pass each: imports, page cache, pandas' first-call costs
    for rel in rels[:2]:
        ismn_daily(iroot, rel, cfg), ours_daily(root, rel, cfg)
    t_ismn: list[float] = []
    t_ours: list[float] = []
    for run in range(runs):
        order = [("ismn", t_ismn), ("ours", t_ours)]
        for name, times in order if run % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            for rel in rels:
                ismn_daily(iroot, rel, cfg) if name == "ismn" else ours_daily(root, rel, cfg)
            times.append((time.perf_counter() - t0) / len(rels))
    worst, n_days = 0.0, 0
    for rel in dict.fromkeys(rels):
        a, b = ismn_daily(iroot, rel, cfg), ours_daily(root, rel, cfg)
        if not a.index.equals(b.index):
            raise SystemExit(f"{label} {rel}: days differ ({len(a)} ismn, {len(b)} somocloud)")
        worst = max(worst, float(np.max(np.abs(a.to_numpy() - b.to_numpy()), initial=0.0)))
        n_days += len(a)
    out = {"ismn": statistics.median(t_ismn), "ours": statistics.median(t_ours), "diff": worst}
    print(
        f"(a) {label}: {len(rels)} files, median of {runs} runs: ismn {out['ismn'] * 1e3:.1f} ms/file, "
        f"somocloud {out['ours'] * 1e3:.1f} ms/file, speed-up {out['ismn'] / out['ours']:.1f}x "
        f"(runs ismn {', '.join(f'{t * 1e3:.1f}' for t in t_ismn)}; "
        f"somocloud {', '.join(f'{t * 1e3:.1f}' for t in t_ours)} ms); "
        f"identical days, max |daily difference| {worst:.1e} over {n_days} daily values"
    )
    return out


# ------------------------------------------------------------------------------------ (b) ingest


@dataclasses.dataclass
class IngestRun:
    wall: float
    step: float
    peak_tree: float
    peak_single: float
    series: int


def ingest_once(files_root: Path, work: Path) -> IngestRun:
    cfg = {
        "stores": {"root": str(work), "ismn": str(files_root)},
        "cluster": {"kind": "local", "n_workers": 2, "threads_per_worker": 1},
    }
    cfg_file = work / "bench-ingest.yaml"
    work.mkdir(parents=True, exist_ok=True)
    cfg_file.write_text(yaml.safe_dump(cfg))
    err = work / "stderr.txt"
    start = time.monotonic()
    with err.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "somocloud", "ingest", "-c", str(cfg_file), "--no-progress"],
            stdout=subprocess.DEVNULL,
            stderr=fh,
        )
        parent = psutil.Process(proc.pid)
        peak_total = peak_single = 0.0
        while proc.poll() is None:
            try:
                rss = [p.memory_info().rss for p in [parent, *parent.children(recursive=True)]]
            except psutil.Error:
                rss = []
            if rss:
                peak_total, peak_single = max(peak_total, sum(rss)), max(peak_single, max(rss))
            time.sleep(0.1)
    wall = time.monotonic() - start
    log = err.read_text()
    if proc.returncode != 0:
        raise SystemExit(f"ingest failed ({proc.returncode}):\n{log[-3000:]}")
    step = re.search(r"ingest finished in ([0-9.]+) s", log)
    kept = re.search(r"(\d+) (?:series )?kept", log)
    return IngestRun(
        wall, float(step.group(1)) if step else math.nan, peak_total / 2**30, peak_single / 2**30,
        int(kept.group(1)) if kept else -1,
    )  # fmt: skip


def bench_ingest(files_root: Path, work: Path, runs: int, n_files: int) -> None:
    results = [ingest_once(files_root, work) for _ in range(runs)]
    for i, r in enumerate(results, 1):
        print(
            f"(b) run {i}: wall {r.wall:.1f} s (step {r.step:.1f} s), peak RSS tree {r.peak_tree:.2f} GiB, "
            f"largest process {r.peak_single:.2f} GiB, {r.series} series kept"
        )
    med = {
        k: statistics.median(getattr(r, k) for r in results)
        for k in ("wall", "step", "peak_tree", "peak_single")
    }
    print(
        f"(b) ingest of {n_files} station files, LocalCluster 2 workers x 1 thread, median of {runs}: "
        f"wall {med['wall']:.1f} s (step {med['step']:.1f} s incl. cluster start), "
        f"peak RSS tree {med['peak_tree']:.2f} GiB, largest process {med['peak_single']:.2f} GiB"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=1000, help="station files for (b)")
    p.add_argument("--days", type=int, default=365, help="days per station record (before gaps)")
    p.add_argument("--step-hours", type=int, default=1, help="interval of the records")
    p.add_argument("--sample", type=int, default=50, help="files per set in (a)")
    p.add_argument("--runs", type=int, default=5, help="runs of (a)")
    p.add_argument("--ingest-runs", type=int, default=3, help="runs of (b)")
    p.add_argument("--root", default=None, help="working folder (files are kept and reused)")
    p.add_argument("--skip-ingest", action="store_true", help="only (a)")
    args = p.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="somo-bench-ingest-"))
    files_root = root / "ismn"
    files_root.mkdir(parents=True, exist_ok=True)
    print(f"python {sys.version.split()[0]}, {psutil.cpu_count()} CPUs, root {root}")
    rels = write_station_files(files_root, args.files, args.days, args.step_hours)
    step = max(1, len(rels) // args.sample)
    per_file(files_root, rels[::step][: args.sample], args.runs, "synthetic station files")
    real_root, real_rels = REAL_FILES
    if real_root.exists():
        per_file(real_root, real_rels * max(1, args.sample // 2), args.runs, "real COSMOS files (x sample/2)")
    if not args.skip_ingest:
        bench_ingest(files_root, root / "run", args.ingest_runs, len(rels))


if __name__ == "__main__":
    main()
