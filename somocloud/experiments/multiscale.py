"""Multiscale training on the synthetic world: does a coarse "satellite" help where there are no stations?

`python -m somocloud.experiments.multiscale --root /tmp/ms --out results.json` builds the demo's synthetic
world with a coarse satellite (`synthetic.coarse_factor`: the true layer-1 soil moisture averaged over
blocks of run-grid cells, with noise and gaps), holds out every station in one region
(`train.holdout_region`), then trains and predicts twice with everything else equal (same world, split,
seeds and budget):

* `insitu`: the in-situ term only (the product's default);
* `multiscale`: in-situ plus the areal term (`train.multiscale`, alpha 0.5, layer 1).

Both products are scored against the true soil moisture at every land cell of the station-free region
(r, anomaly r, ubRMSD per cell over the product period; medians reported) and, for reference, at the
land cells outside it. The results JSON holds the settings, per-cell scores and medians.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from somocloud import metrics, steps, stores
from somocloud.cli import embedded_config
from somocloud.config import MultiscaleConfig, RunConfig, load_config
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.layers import DEPTHS, N_LAYERS

log = logging.getLogger("somocloud.experiments.multiscale")

REGION = {"lat_min": 38.0, "lat_max": 42.0, "lon_min": -98.5, "lon_max": -97.0}
"""The station-free region: the demo world's eastern strip (6 of its 20 columns)."""
VARIANTS: dict[str, dict[str, Any] | None] = {"insitu": None, "multiscale": {"alpha": 0.5, "layers": [1]}}
"""The two trainings compared; the multiscale one with the config's other defaults (`MultiscaleConfig`)."""


def variant_config(
    base: RunConfig, name: str, variants: dict[str, dict[str, Any] | None] = VARIANTS
) -> RunConfig:
    """`base` with the variant's training and its own model and product stores."""
    root = base.stores.root.rstrip("/")
    multiscale = variants[name]
    train = base.train.model_copy(
        update={"multiscale": None if multiscale is None else MultiscaleConfig(**multiscale)}
    )
    stores_ = base.stores.model_copy(
        update={"model": f"{root}/model-{name}", "product": f"{root}/product-{name}/soil_moisture.zarr"}
    )
    return base.model_copy(update={"train": train, "stores": stores_})


def score_region(cfg: RunConfig, product_url: str) -> dict[str, Any]:
    """Per-cell skill of the product against the truth, inside and outside the region, per layer."""
    grid = Grid.from_config(cfg.grid)
    product = stores.open_zarr(product_url, chunks=None)["soil_moisture"].load()
    truth = stores.open_zarr(cfg.store("truth"), chunks=None)["soil_moisture"]
    truth = truth.sel(time=product["time"]).load()
    region = cfg.train.holdout_region
    assert region is not None
    lat, lon = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    inside = region.contains(lat, lon)
    land = np.isfinite(truth.values[0, 0])
    out: dict[str, Any] = {}
    n_min = cfg.evaluate.min_overlap_days
    for where, mask in (("region", inside & land), ("elsewhere", ~inside & land)):
        rows, cols = np.nonzero(mask)
        layers: dict[str, Any] = {}
        for k in range(N_LAYERS):
            sim = product.values[:, k, rows, cols].T  # (cells, days)
            obs = truth.values[:, k, rows, cols].T
            scores = {
                "r": metrics.pearson_r(sim, obs, n_min),
                "anomaly_r": metrics.anomaly_r(sim, obs, n_min),
                "ubrmsd": metrics.ubrmsd(sim, obs, n_min),
            }
            layers[str(k + 1)] = {
                "depth": float(DEPTHS[k]),
                "median": {n: float(np.nanmedian(v)) for n, v in scores.items()},
                "cells": {n: [round(float(x), 5) for x in v] for n, v in scores.items()},
            }
        out[where] = {"n_cells": int(mask.sum()), "layers": layers}
    return out


def run_experiment(
    root: str, overrides: list[str], multiscale: dict[str, Any] | None = None, build_world: bool = True
) -> dict[str, Any]:
    """Build the world once (unless `build_world` is False and it exists), then train, predict and score
    both variants; `multiscale` updates the multiscale variant's settings."""
    variants = dict(VARIANTS)
    variants["multiscale"] = {**(VARIANTS["multiscale"] or {}), **(multiscale or {})}
    base = load_config(
        embedded_config("demo.yaml"),
        [f"stores.root={root}", "synthetic.coarse_factor=4",
         *(f"train.holdout_region.{k}={v}" for k, v in REGION.items()), *overrides],
    )  # fmt: skip
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}
    with Context(show_progress=False) as ctx:
        for verb in ("synthetic", "forcing", "statics", "ingest", "targets"):
            if not build_world and stores.exists(stores.join(base.store("targets"), "zarr.json")):
                break
            t0 = time.perf_counter()
            steps.entry(verb)(base, ctx)
            timings[verb] = round(time.perf_counter() - t0, 1)
        for name in variants:
            cfg = variant_config(base, name, variants)
            for verb in ("train", "predict"):
                t0 = time.perf_counter()
                steps.entry(verb)(cfg, ctx)
                timings[f"{verb}-{name}"] = round(time.perf_counter() - t0, 1)
            split = stores.read_json(stores.join(cfg.store("model"), "split.json"))
            results[name] = score_region(cfg, cfg.store("product")) | {
                "train_cells": len(split["train_cells"]),
                "holdout_cells": len(split["holdout_cells"]),
            }
    return {
        "experiment": "multiscale",
        "config": base.resolved(),
        "region": REGION,
        "variants": variants,
        "results": results,
        "runtime_s": timings,
    }


def table(report: dict[str, Any]) -> str:
    lines = ["| layer | where | model | r | anomaly r | ubRMSD |", "|---|---|---|---|---|---|"]
    for k in map(str, range(1, N_LAYERS + 1)):
        for where in ("region", "elsewhere"):
            for name, res in report["results"].items():
                m = res[where]["layers"][k]["median"]
                lines.append(f"| {k} | {where} ({res[where]['n_cells']} cells) | {name} | {m['r']:.3f} | "
                             f"{m['anomaly_r']:.3f} | {m['ubrmsd']:.4f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m somocloud.experiments.multiscale", description=__doc__)
    parser.add_argument("--root", required=True, help="where the world and both runs are written")
    parser.add_argument("--out", help="results JSON")
    parser.add_argument("overrides", nargs="*", help="config overrides (key=value) for both variants")
    parser.add_argument(
        "--multiscale",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a train.multiscale setting of the multiscale variant (JSON value), repeatable",
    )
    parser.add_argument("--reuse-world", action="store_true", help="keep a world already built at --root")
    parser.add_argument("-v", action="store_true", help="log progress")
    args = parser.parse_args(argv)
    settings = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.multiscale)}
    logging.basicConfig(
        level=logging.INFO if args.v else logging.WARNING, format="%(asctime)s %(name)s: %(message)s"
    )
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(logging.WARNING)
    report = run_experiment(args.root, args.overrides, settings, build_world=not args.reuse_world)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
