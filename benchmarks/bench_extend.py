"""What `extend --until` costs against predicting the whole, longer period again.

    .venv/bin/python benchmarks/bench_extend.py --root /tmp/bench-extend --days 30 --runs 3

Builds the demo world with sources that reach `--days` past the product's end, trains once, predicts the
product (2020-01-01 .. 2021-12-31 minus `--days`), then times, `--runs` times on a fresh copy of that
product each:

* `extend`: `extend --until` the world's last day (its forcing for the new days, the appended tasks and
  the recomputed block the old end cut short);
* `whole`: `forcing` + `predict` of the whole period into a new product, the alternative without extend.

It also counts the product's chunk objects that `extend` rewrote. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import time
from pathlib import Path

from somocloud import steps
from somocloud.cli import embedded_config
from somocloud.config import load_config
from somocloud.context import Context
from somocloud.extend import extend

END = dt.date(2021, 12, 31)


def _objects(product: Path) -> dict[str, int]:
    root = product / "soil_moisture"
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", default="/tmp/bench-extend")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    root = Path(args.root)
    old_end = END - dt.timedelta(days=args.days)
    world = load_config(embedded_config("demo.yaml"), [f"stores.root={root}"])
    cfg = load_config(embedded_config("demo.yaml"), [f"stores.root={root}", f"period.end={old_end}",
                                                    f"period.train_end={old_end}", f"extend.until={END}"])  # fmt: skip
    times: dict[str, list[float]] = {"extend": [], "whole": [], "predict_old": []}
    rewritten: list[int] = []
    with Context(show_progress=False) as ctx:
        steps.entry("synthetic")(world, ctx)
        for verb in ("forcing", "statics", "ingest", "targets", "train"):
            steps.entry(verb)(cfg, ctx)
        t0 = time.perf_counter()
        steps.entry("predict")(cfg, ctx)
        times["predict_old"].append(time.perf_counter() - t0)
        product = Path(cfg.store("product"))
        pristine = root / "pristine"
        shutil.rmtree(pristine, ignore_errors=True)
        shutil.copytree(product, pristine / "product.zarr")
        shutil.copytree(str(product) + ".progress", pristine / "product.zarr.progress")
        before = _objects(product)
        for run in range(args.runs):
            for name in ("product.zarr", "product.zarr.progress"):
                target = product if name == "product.zarr" else Path(str(product) + ".progress")
                shutil.rmtree(target, ignore_errors=True)
                shutil.copytree(pristine / name, target)
            for extension in root.glob("work/*-until-*.zarr*"):
                shutil.rmtree(extension)  # its forcing is built anew each run
            t0 = time.perf_counter()
            extend(cfg, ctx)
            times["extend"].append(time.perf_counter() - t0)
            after = _objects(product)
            rewritten.append(sum(1 for k, v in before.items() if after.get(k) != v))
            whole = load_config(embedded_config("demo.yaml"), [
                f"stores.root={root}", f"period.train_end={old_end}", f"stores.model={cfg.store('model')}",
                f"stores.forcing={root}/whole-{run}/forcing.zarr", f"stores.reference_sm={root}/whole-{run}/ref.zarr",
                f"stores.product={root}/whole-{run}/product.zarr",
            ])  # fmt: skip
            t0 = time.perf_counter()
            steps.entry("forcing")(whole, ctx)
            steps.entry("predict")(whole, ctx)
            times["whole"].append(time.perf_counter() - t0)
    print(json.dumps({
        "new_days": args.days,
        "product_days_before": (old_end - dt.date(2020, 1, 1)).days + 1,
        "median_s": {k: round(statistics.median(v), 1) for k, v in times.items()},
        "runs_s": {k: [round(x, 1) for x in v] for k, v in times.items()},
        "chunk_objects_before": len(before),
        "rewritten_by_extend": rewritten,
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
