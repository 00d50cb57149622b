"""Chaining the steps: `run` (every step of a config, in order) and `demo` (synthetic world + run)."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from somocloud import steps, stores
from somocloud.config import RunConfig
from somocloud.context import Context

log = logging.getLogger(__name__)


def run_steps(cfg: RunConfig, ctx: Context, names: Sequence[str] = steps.RUN_ORDER) -> dict[str, str]:
    """Run the named steps in order; returns every URL they wrote."""
    steps.check_outputs_writable(cfg, names)
    outputs: dict[str, str] = {}
    for i, name in enumerate(names, start=1):
        log.info("step %d/%d: %s", i, len(names), name)
        start = time.monotonic()
        outputs.update(steps.entry(name)(cfg, ctx))
        log.info("step %s done in %.1f s", name, time.monotonic() - start)
    return outputs


def run(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """Every step of the data flow for `cfg`, from the forcing build to publishing."""
    return run_steps(cfg, ctx)


def demo(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """Build the synthetic world, then run the whole pipeline on it."""
    return run_steps(cfg, ctx, ["synthetic", *steps.RUN_ORDER])


def summary(cfg: RunConfig, outputs: dict[str, str]) -> str:
    """Where the results are, and the held-out skill if it was evaluated."""
    lines = ["", "somocloud outputs:"]
    for key in ("product", "report", "stac", "catalog", "evaluation", "model"):
        if key in outputs:
            lines.append(f"  {key:<11} {outputs[key]}")
    summary_url = stores.join(cfg.store("evaluation"), "summary.json")
    if "evaluation" in outputs and stores.exists(summary_url):
        lines.append(f"  skill at held-out stations: see {summary_url}")
    lines.append("")
    product = cfg.store("product")
    chunks = ""
    if stores.exists(stores.join(product, "zarr.json")):  # one dask chunk per stored object (a shard)
        unit = stores.write_unit_chunks(stores.open_zarr(product, chunks=None))
        chunks = ", chunks=" + str({k: v for k, v in unit.items() if k in ("time", "lat", "lon")})
    lines.append(f'open it:  xarray.open_zarr("{product}"{chunks})')
    lines.append(f'     or:  intake.open_catalog("{cfg.store("catalog")}")')
    return "\n".join(lines)
