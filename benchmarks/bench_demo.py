"""Wall time and peak memory of `somocloud demo` (the README's first command), whole process tree.

    .venv/bin/python benchmarks/bench_demo.py [--runs 3] [--root /tmp/somo-bench]

Peak memory is sampled every 0.2 s as the summed RSS of the CLI process and all its children (the Dask
workers), and as the largest single process."""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import psutil


def run_once(root: str) -> tuple[float, float, float]:
    shutil.rmtree(root, ignore_errors=True)
    start = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "somocloud", "demo", "--root", root, "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    parent = psutil.Process(proc.pid)
    peak_total = peak_single = 0.0
    while proc.poll() is None:
        try:
            procs = [parent, *parent.children(recursive=True)]
            rss = [p.memory_info().rss for p in procs if p.is_running()]
        except psutil.Error:
            rss = []
        if rss:
            peak_total = max(peak_total, sum(rss))
            peak_single = max(peak_single, max(rss))
        time.sleep(0.2)
    if proc.returncode != 0:
        raise SystemExit(f"demo failed with exit code {proc.returncode}")
    return time.monotonic() - start, peak_total / 2**30, peak_single / 2**30


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--root", default=tempfile.mkdtemp(prefix="somo-bench-"))
    args = p.parse_args()
    results = [run_once(args.root) for _ in range(args.runs)]
    for i, (wall, tot, single) in enumerate(results, 1):
        print(f"run {i}: wall {wall:.1f} s, peak RSS tree {tot:.2f} GiB, largest process {single:.2f} GiB")
    print(
        f"median of {args.runs}: wall {statistics.median(r[0] for r in results):.1f} s, "
        f"peak RSS tree {statistics.median(r[1] for r in results):.2f} GiB, "
        f"largest process {statistics.median(r[2] for r in results):.2f} GiB"
    )


if __name__ == "__main__":
    main()
