"""The `predict` step: run every ensemble member of every layer over every land cell → the product Zarr.

Inputs: `forcing` (daily cube, `lookback_start`..`period.end`), `statics` (incl. `land_mask`) and the
`model` artifact. Output `product`, dims `(time, depth, lat, lon)` over `period.start`..`period.end`:
`soil_moisture` (ensemble mean) and `soil_moisture_spread` (ensemble population std), m3 m-3.

How it runs (DESIGN.md "Writing stores safely"):

1. Template: all metadata and coordinates are written with `to_zarr(compute=False)`; no data chunk
   exists yet. A template with the same provenance content id is kept (resume); one with another id
   (changed inputs or config) is replaced and its task markers are cleared first.
2. Tasks: one spatial tile (`predict.tile_size` cells square) × one block of `predict.time_chunk` days,
   i.e. exactly one product chunk per variable. A task reads the tile's forcing from `task_lookback`
   days before its first day to its last, runs every member of every layer in the model's inference mode
   (`somocloud.modes`: `exact`, one zero-state window of `seq_length` days per predicted day, the
   published method; or `blocked`, a warm-up then blocks of `predict_last_n` days) in batches of
   `predict.batch_windows` windows, writes its region and then its marker under `<product>.progress/`.
   A tile without land writes nothing (zarr 3 skips all-NaN chunks anyway) and is only marked.
3. Finalise: once every task has a marker, `complete: true` is set and metadata re-consolidated.

On a Dask cluster the model is loaded once per worker by a `WorkerPlugin`; `--parts i/N` runs a share of
the pending tasks serially in this process instead.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from somocloud import provenance, stores
from somocloud.config import PredictConfig, RunConfig
from somocloud.context import Context, select_parts, wait_for_first_part
from somocloud.grid import Grid, Tile
from somocloud.layers import (
    DEPTH_BOUNDS,
    DEPTHS,
    FORCING_VARIABLES,
    N_LAYERS,
    simulated_input,
    simulated_layer,
)
from somocloud.model.artifact import LoadedModel, ModelCard, load_artifact, read_manifest
from somocloud.model.features import Scaler, stack_inputs
from somocloud.modes import InferenceMode, get_mode, predict_windows, valid_windows

__all__ = ["predict", "predict_tile", "predict_windows", "valid_windows"]

log = logging.getLogger(__name__)

STEP = "predict"
DIMS = ("time", "depth", "lat", "lon")
DATA_VARS = ("soil_moisture", "soil_moisture_spread")
DERIVED_INPUTS = {"log_tp": "tp"}
"""Model inputs computed from a forcing variable (see `features.stack_inputs`)."""
FORCING_INPUTS = frozenset(FORCING_VARIABLES) | frozenset(DERIVED_INPUTS)
"""Dynamic input names `predict` can build from the forcing cube alone."""
BASE_CONTENT_ID = "somocloud_base_content_id"
"""Root attribute `extend` sets: the content id this step gave the product before it was extended."""
_WORKER_ATTR = "_somocloud_models"  # where the plugin keeps loaded models on a Dask worker
_CELL_METHODS = "time: mean depth: mean area: mean where land"

VARIABLE_ATTRS: dict[str, dict[str, str]] = {
    "soil_moisture": {
        "standard_name": "volume_fraction_of_condensed_water_in_soil",
        "long_name": "volumetric soil moisture (ensemble mean)",
        "units": "m3 m-3",
        "cell_methods": _CELL_METHODS,
    },
    "soil_moisture_spread": {
        "long_name": "ensemble standard deviation of volumetric soil moisture",
        "units": "m3 m-3",
        "cell_methods": _CELL_METHODS + " realization: standard_deviation",
    },
}


@dataclass(frozen=True)
class PredictTask:
    """One unit of work: a tile of cells × the product days [t0, t1) (indexes into the product's time)."""

    tile: Tile
    t0: int
    t1: int

    @property
    def id(self) -> str:
        # t1 too: extending a product recomputes a boundary task [t0, t1) under a new id.
        return f"{self.tile.id}-time-{self.t0:06d}-{self.t1:06d}"


@dataclass(frozen=True)
class TaskSpec:
    """What every task needs besides its `PredictTask`: store URLs and index bookkeeping (no credentials)."""

    product_url: str
    forcing_url: str
    statics_url: str
    model_url: str
    model_content_id: str
    product_content_id: str
    forcing_offset: int
    """Index in the forcing cube's time of the product's first day."""
    mode: str
    """Inference mode (`somocloud.modes`): `exact` or `blocked`."""
    lookback: int
    """Forcing days read before a task's first day (`task_lookback`)."""
    batch_windows: int
    """Windows per forward pass."""
    forcing_variables: tuple[str, ...]
    """Forcing variables read by the tasks."""
    static_variables: tuple[str, ...]
    """Static variables read by the tasks (without `land_mask`)."""


# --------------------------------------------------------------------------------------------- driver


def predict(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """Write (or resume) the product Zarr; returns `{"product": url}`.

    With `ctx.parts` (i, N) only the i-th of N fixed shares of all tasks runs (its unmarked tasks), in
    this process without Dask; the product is finalised only when every task of every part has its
    marker. The template must not be written by two parts at once: start one part first on a fresh
    product (later parts find the template and keep it)."""
    grid = Grid.from_config(cfg.grid)
    inputs = {name: cfg.store(name) for name in ("forcing", "statics", "model")}
    url = cfg.store("product")
    card, model_content_id = read_card(inputs["model"])
    check_card(card, cfg.predict.mode, inputs["model"])
    forcing_variables = required_forcing(card, inputs["model"])
    static_variables = tuple(sorted({n for lc in card.layers for n in lc.static_inputs}))
    lookback = task_lookback(card)
    forcing_offset = check_forcing(
        inputs["forcing"], grid, forcing_variables, cfg.period.start, cfg.period.end, lookback
    )
    check_statics(inputs["statics"], grid, static_variables)

    attrs = provenance.provenance_attrs(cfg, STEP, inputs)
    attrs |= {
        "inference_mode": card.inference_mode,
        "model_content_id": model_content_id,
        "complete": False,
        "Conventions": "CF-1.11",
        "title": f"somocloud soil moisture ({cfg.name})",
        "product_version": cfg.product_version,
    }
    days = product_days(cfg.period.start, cfg.period.end)
    template = product_template(grid, days, attrs)
    content_id = str(attrs[provenance.CONTENT_ID])
    wait_for_first_part(lambda: template_matches(url, content_id), f"the template of {url}", ctx,
                        cfg.predict.parts_wait_s)  # fmt: skip
    ensure_template(url, template, product_layout(len(days), grid, cfg.predict))

    tasks = plan_tasks(grid, len(days), cfg.predict.tile_size, cfg.predict.time_chunk)
    spec = TaskSpec(
        product_url=url,
        forcing_url=inputs["forcing"],
        statics_url=inputs["statics"],
        model_url=inputs["model"],
        model_content_id=model_content_id,
        product_content_id=str(attrs[provenance.CONTENT_ID]),
        forcing_offset=forcing_offset,
        mode=card.inference_mode,
        lookback=lookback,
        batch_windows=cfg.predict.batch_windows,
        forcing_variables=forcing_variables,
        static_variables=static_variables,
    )
    if run_plan(spec, tasks, tasks, cfg, ctx):
        finalise(url, tasks)
    return {"product": url}


def run_plan(
    spec: TaskSpec, tasks: Sequence[PredictTask], plan: Sequence[PredictTask], cfg: RunConfig, ctx: Context
) -> bool:
    """Run the unmarked `tasks` (on the cluster, or this process's share with `ctx.parts`); True when every
    task of `plan` (the product's whole task list) then has its marker, i.e. the product can be finalised."""
    url = spec.product_url
    markers = stores.markers_for(url)
    finished = markers.finished()
    pending = [t for t in tasks if t.id not in finished]
    if pending and stores.zarr_attrs(url).get("complete"):
        stores.update_zarr_attrs(url, {"complete": False})  # markers were removed: no longer complete
    if ctx.parts is not None:
        # Shares are cut from the full task list, so each part always owns the same tasks whatever
        # the others have finished; marked tasks within a share are skipped.
        share = select_parts(list(tasks), ctx.parts)
        mine = [t for t in share if t.id not in finished]
        log.info("%s: part %d/%d runs %d of its %d tasks (%d pending of %d in all)",
                 STEP, *ctx.parts, len(mine), len(share), len(pending), len(tasks))  # fmt: skip
        for task in mine:
            _log_result(run_task(task, spec))
        if len(markers.finished() & {t.id for t in plan}) < len(plan):
            log.info("%s: tasks of other parts are still pending; %s not finalised yet", STEP, url)
            return False
    elif pending:
        log.info("%s: %d of %d tasks pending", STEP, len(pending), len(tasks))
        run_distributed(spec, pending, ctx.dask(cfg.cluster), cfg.predict.gpu, ctx.show_progress)
    return True


def run_distributed(spec: TaskSpec, tasks: Sequence[PredictTask], client: Any, gpu: bool, show: bool) -> None:
    """Run `tasks` on the cluster: model loaded once per worker, one future per task."""
    from somocloud.progress import track

    client.register_plugin(plugin_class()(spec.model_url, spec.model_content_id, stores.runtime_options()))
    resources = {"GPU": 1} if gpu else None
    futures = client.map(run_task, list(tasks), spec=spec, pure=False, resources=resources)
    track(futures, STEP, show=show, on_result=_log_result)


def _log_result(result: Mapping[str, Any]) -> None:
    log.info("predict: part %s %s (%d cells, %d windows)",
             result["task"], result["status"], result.get("cells", 0), result.get("windows", 0))  # fmt: skip


def finalise(url: str, tasks: Sequence[PredictTask]) -> None:
    """Mark the product complete after checking that every task has its marker."""
    finished = stores.markers_for(url).finished()
    missing = [t.id for t in tasks if t.id not in finished]
    if missing:
        raise RuntimeError(
            f"{url}: {len(missing)} of {len(tasks)} predict tasks have no marker "
            f"(first: {', '.join(missing[:3])}); rerun `predict` to finish them"
        )
    stores.update_zarr_attrs(url, {"complete": True})
    log.info("predict: %s complete (%d tasks)", url, len(tasks))


# ------------------------------------------------------------------------------------ inputs checks


def read_card(model_url: str) -> tuple[ModelCard, str]:
    """The model card and content id of a complete artifact, without loading any weights."""
    manifest = read_manifest(model_url)
    return ModelCard.from_json(stores.read_text(stores.join(model_url, "model.json"))), str(
        manifest["content_id"]
    )


def check_card(card: ModelCard, mode: str, model_url: str) -> None:
    """The artifact must be meant for `mode` and its layers must be product depths."""
    if card.inference_mode != mode:
        raise ValueError(
            f"{model_url}/model.json: inference_mode is {card.inference_mode!r} but predict.mode is {mode!r}"
        )
    if mode == "blocked" and not 1 < card.predict_last_n < card.seq_length:
        raise ValueError(
            f"{model_url}/model.json: a blocked model needs 1 < predict_last_n < seq_length, got "
            f"predict_last_n {card.predict_last_n}, seq_length {card.seq_length}"
        )
    seen: set[int] = set()
    for k, lc in enumerate(card.layers, start=1):
        depth = int(np.argmin(np.abs(DEPTHS - lc.depth)))
        if depth in seen:
            raise ValueError(f"{model_url}/model.json: layer {k} repeats depth {lc.depth}")
        seen.add(depth)
        if not np.isclose(DEPTHS, lc.depth).any():
            raise ValueError(
                f"{model_url}/model.json: layer {k} has depth {lc.depth}, not one of {DEPTHS.tolist()}"
            )
        if not lc.members:
            raise ValueError(f"{model_url}/model.json: layer {k} has no ensemble members")
    if len(seen) < N_LAYERS:
        missing = [float(d) for i, d in enumerate(DEPTHS) if i not in seen]
        log.warning("predict: %s has no model for depths %s; they stay NaN", model_url, missing)


def required_forcing(card: ModelCard, model_url: str) -> tuple[str, ...]:
    """The forcing variables the model's dynamic inputs are built from (`sm_layer<j>` inputs, the layer
    cascade's simulations of the layers above, are made by `predict_tile`, not read)."""
    depth_of = [float(lc.depth) for lc in card.layers]
    needed = set()
    for k, lc in enumerate(card.layers, start=1):
        for name in lc.dynamic_inputs:
            upper = simulated_layer(name)
            if upper is not None:
                if not 1 <= upper <= N_LAYERS or not any(
                    np.isclose(d, DEPTHS[upper - 1]) for d in depth_of[: k - 1]
                ):
                    raise ValueError(
                        f"{model_url}/model.json: layer {k} takes {name!r} but the artifact has no model for "
                        f"that layer before it"
                    )
                continue
            if name not in FORCING_INPUTS:
                raise ValueError(
                    f"{model_url}/model.json: layer {k} dynamic input {name!r} is neither derived from the "
                    f"forcing cube nor a simulated layer (`sm_layer<j>`)"
                )
            needed.add(DERIVED_INPUTS.get(name, name))
    return tuple(sorted(needed))


def cascade_stages(card: ModelCard) -> int:
    """How many windows are chained back from a product day: 1 + the longest chain of `sm_layer<j>` inputs
    (3 for SoMo.ml's cascade, 1 without)."""
    stages: dict[int, int] = {}
    for lc in card.layers:
        own = int(np.argmin(np.abs(DEPTHS - lc.depth))) + 1
        uppers = [simulated_layer(n) for n in lc.dynamic_inputs]
        stages[own] = 1 + max((stages.get(j, 1) for j in uppers if j is not None), default=0)
    return max(stages.values(), default=1)


def task_lookback(card: ModelCard) -> int:
    """Forcing days a task reads before its first product day: its mode's window chain back through the
    cascade (exact: `stages x (seq_length - 1)`)."""
    return get_mode(card.inference_mode).lookback(card.seq_length, card.predict_last_n, cascade_stages(card))


def check_forcing(
    url: str, grid: Grid, variables: Sequence[str], start: dt.date, end: dt.date, lookback: int
) -> int:
    """Check the forcing cube (variables, dims, grid, daily days covering the `lookback` days before
    `start`); returns the time index of `start`."""
    ds = stores.open_zarr(url, chunks=None)
    stores.check_variables(ds, url, variables, ("time", "lat", "lon"))
    grid.check(ds, url, "forcing")
    first = start - dt.timedelta(days=lookback)
    needed = product_days(first, end)
    have = np.asarray(ds["time"].values).astype("datetime64[ns]")
    i0 = int(np.searchsorted(have, needed[0]))
    if i0 + len(needed) > len(have) or not np.array_equal(have[i0 : i0 + len(needed)], needed):
        raise ValueError(
            f"{url}: variable 'time' must hold every day from {first} (period.start minus the model's "
            f"lookback of {lookback} days) to {end}; rerun `forcing` with this config"
        )
    return i0 + lookback


def check_statics(url: str, grid: Grid, variables: Sequence[str]) -> None:
    """The statics store must hold `land_mask` and every static input on the run grid."""
    ds = stores.open_zarr(url, chunks=None)
    stores.check_variables(ds, url, ("land_mask", *variables), ("lat", "lon"))
    grid.check(ds, url, "statics")


# ------------------------------------------------------------------------------------- template


def product_days(start: dt.date, end: dt.date) -> np.ndarray:
    """Daily `datetime64[ns]` stamps at 00:00 UTC from `start` to `end` inclusive."""
    return pd.date_range(start, end, freq="D").values.astype("datetime64[ns]")


def product_layout(n_days: int, grid: Grid, cfg: PredictConfig) -> dict[str, tuple[int, ...]]:
    """Zarr `chunks` (and `shards`) of the data variables: one chunk, or one shard of inner chunks, per task.

    Clamped to the array so tiny products get no padding; an inner chunk is then cut to the largest size
    that divides its clamped shard."""
    outer = (
        min(cfg.time_chunk, n_days),
        N_LAYERS,
        min(cfg.tile_size, grid.nlat),
        min(cfg.tile_size, grid.nlon),
    )
    if not cfg.sharded:
        return {"chunks": outer}
    days, cells = cfg.chunk_days or cfg.time_chunk, cfg.chunk_cells or cfg.tile_size
    inner = tuple(
        _largest_divisor(size, at_most)
        for size, at_most in zip(outer, (days, N_LAYERS, cells, cells), strict=True)
    )
    return {"chunks": inner, "shards": outer}


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def product_template(grid: Grid, days: np.ndarray, attrs: Mapping[str, Any]) -> xr.Dataset:
    """The product's coordinates, CF metadata and lazy all-NaN data variables (nothing is computed)."""
    import dask.array as da

    shape = (len(days), N_LAYERS, grid.nlat, grid.nlon)
    # One dask chunk: the template is never computed, so its graph should stay one node per variable.
    variables = {
        name: (DIMS, da.full(shape, np.nan, dtype="float32", chunks=shape), dict(VARIABLE_ATTRS[name]))
        for name in DATA_VARS
    }
    coords: dict[str, Any] = {
        "time": ("time", days, {"standard_name": "time", "axis": "T", "long_name": "time"}),
        "depth": (
            "depth",
            DEPTHS.astype("float64"),
            {
                "standard_name": "depth",
                "long_name": "depth of the layer mid-point",
                "units": "m",
                "positive": "down",
                "axis": "Z",
                "bounds": "depth_bnds",
            },
        ),
        "depth_bnds": (("depth", "nv"), DEPTH_BOUNDS.astype("float64"), {"units": "m"}),
        **grid.coords(),
    }
    return xr.Dataset(variables, coords=coords, attrs=dict(attrs))


def template_matches(url: str, content_id: str) -> bool:
    """A product template exists at `url` and was made for `content_id` (or extended from it)."""
    if not stores.exists(stores.join(url, "zarr.json")):
        return False
    attrs = stores.zarr_attrs(url)
    return content_id in (attrs.get(provenance.CONTENT_ID), attrs.get(BASE_CONTENT_ID))


def ensure_template(url: str, template: xr.Dataset, layout: Mapping[str, tuple[int, ...]]) -> str:
    """Write the template unless one with the same content id exists; returns 'kept' or 'written'.

    Markers are cleared before a template is (re)written, so a crash in between leaves no marker
    pointing at a fresh, empty store."""
    content_id = template.attrs[provenance.CONTENT_ID]
    if template_matches(url, content_id):
        extended = stores.zarr_attrs(url).get(BASE_CONTENT_ID) == content_id  # `extend` added days to it
        log.info("predict: %s %s", "keeping the extended" if extended else "resuming", url)
        return "kept"
    if stores.exists(stores.join(url, "zarr.json")):
        log.info("predict: inputs or config changed since %s was started; rewriting it", url)
    stores.markers_for(url).clear()
    encoding: dict[str, dict[str, Any]] = {
        name: {**layout, "fill_value": np.float32("nan")} for name in DATA_VARS
    }
    # CF: coordinates and bounds carry no fill value.
    encoding |= {name: {"_FillValue": None} for name in ("depth", "depth_bnds", "lat", "lon")}
    stores.write_zarr(template, url, compute=False, encoding=encoding)
    log.info("predict: wrote the template of %s", url)
    return "written"


def plan_tasks(grid: Grid, n_days: int, tile_size: int, time_chunk: int) -> list[PredictTask]:
    """Every (tile, block of days) task, tile-major; each covers exactly one chunk of the product."""
    return [
        PredictTask(tile, t0, min(t0 + time_chunk, n_days))
        for tile in grid.tiles(tile_size)
        for t0 in range(0, n_days, time_chunk)
    ]


# ------------------------------------------------------------------------------------------ tasks


def run_task(task: PredictTask, spec: TaskSpec) -> dict[str, Any]:
    """Predict one tile × block of days, write its region, then its marker. Idempotent."""
    markers = stores.markers_for(spec.product_url)
    result: dict[str, Any] = {"task": task.id, "cells": 0, "windows": 0}
    if markers.done(task.id):
        return result | {"status": "skipped"}
    tile = task.tile
    statics = read_statics(spec.statics_url, tile, spec.static_variables)
    land = _as_mask(statics.pop("land_mask"))
    if not land.any():
        markers.mark(task.id, {"status": "sea", "product_content_id": spec.product_content_id})
        return result | {"status": "sea"}
    model = worker_model(spec.model_url, spec.model_content_id)
    lookback = spec.lookback
    forcing = read_forcing(
        spec.forcing_url,
        tile,
        spec.forcing_offset + task.t0 - lookback,
        spec.forcing_offset + task.t1,
        spec.forcing_variables,
    )
    mean, spread, n_windows = predict_tile(model, forcing, statics, land, spec.batch_windows)
    write_region(spec.product_url, task, mean, spread)
    info = {"status": "written", "cells": int(land.sum()), "windows": n_windows}
    markers.mark(task.id, info | {"product_content_id": spec.product_content_id, "finished_at": time.time()})
    return result | info


def read_statics(url: str, tile: Tile, variables: Sequence[str]) -> dict[str, np.ndarray]:
    """`land_mask` and `variables` of one tile as (lat, lon) arrays."""
    ds = stores.open_zarr(url, chunks=None)
    sub = ds[["land_mask", *variables]].isel(lat=slice(tile.i0, tile.i1), lon=slice(tile.j0, tile.j1))
    return {name: np.asarray(sub[name].transpose("lat", "lon").values) for name in ("land_mask", *variables)}


def read_forcing(url: str, tile: Tile, f0: int, f1: int, variables: Sequence[str]) -> dict[str, np.ndarray]:
    """Forcing days [f0, f1) of one tile as float32 (time, lat, lon) arrays."""
    ds = stores.open_zarr(url, chunks=None)
    sub = ds[list(variables)].isel(
        time=slice(f0, f1), lat=slice(tile.i0, tile.i1), lon=slice(tile.j0, tile.j1)
    )
    return {
        name: np.asarray(sub[name].transpose("time", "lat", "lon").values, dtype="float32")
        for name in variables
    }


def _as_mask(values: np.ndarray) -> np.ndarray:
    """A land mask as bool; a float mask counts non-zero finite values as land."""
    if values.dtype == bool:
        return values
    return np.isfinite(values) & (np.nan_to_num(values) != 0)


def write_region(url: str, task: PredictTask, mean: np.ndarray, spread: np.ndarray) -> None:
    """Write one task's chunk of both data variables (metadata untouched, so no re-consolidation)."""
    tile = task.tile
    block = xr.Dataset({"soil_moisture": (DIMS, mean), "soil_moisture_spread": (DIMS, spread)})
    region = {
        "time": slice(task.t0, task.t1),
        "depth": slice(0, N_LAYERS),
        "lat": slice(tile.i0, tile.i1),
        "lon": slice(tile.j0, tile.j1),
    }
    block.to_zarr(
        stores.zarr_url(url), region=region, mode="r+", consolidated=False, zarr_format=3,
        **stores.zarr_kwargs(url),
    )  # fmt: skip


# --------------------------------------------------------------------------------------- compute


def predict_tile(
    model: LoadedModel,
    forcing: Mapping[str, np.ndarray],
    statics: Mapping[str, np.ndarray],
    land: np.ndarray,
    batch_windows: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Ensemble mean and spread of one tile, in the model's inference mode.

    Args:
        model: the loaded artifact.
        forcing: forcing name → (steps, ni, nj); steps = the `task_lookback(card)` days, then the task's
            days (the first of which is a block start in blocked mode). With the cascade, each layer's
            ensemble-mean simulation over every step it has an output for becomes the `sm_layer<k>` input
            of the layers below.
        statics: static name → (ni, nj).
        land: (ni, nj) land mask.
        batch_windows: windows per forward pass.

    Returns:
        mean, spread: float32 (n_days, N_LAYERS, ni, nj), NaN over sea, on cells with a non-finite
        static input and on days whose output depends on a non-finite input; number of windows run."""
    card = model.card
    mode: InferenceMode = get_mode(card.inference_mode)
    lookback = task_lookback(card)
    steps, ni, nj = next(iter(forcing.values())).shape
    n_days = steps - lookback
    if n_days < 1:
        raise ValueError(
            f"{steps} forcing days are fewer than the model's lookback of {lookback} days "
            f"({card.inference_mode} mode, {cascade_stages(card)} chained layers) plus one"
        )
    mean = np.full((n_days, N_LAYERS, ni * nj), np.nan, dtype="float32")
    spread = np.full_like(mean, np.nan)
    cells = np.flatnonzero(land.ravel())
    dyn_fields = {name: arr.reshape(steps, ni * nj)[:, cells].T for name, arr in forcing.items()}
    stat_fields = {name: np.asarray(arr, dtype="float32").ravel()[cells] for name, arr in statics.items()}
    scaler: Scaler = card.scaler
    n_windows = 0
    for k, lc in enumerate(card.layers):
        x_d = scaler.apply(stack_inputs(dyn_fields, lc.dynamic_inputs), lc.dynamic_inputs)
        x_s = scaler.apply(stack_inputs(stat_fields, lc.static_inputs), lc.static_inputs)
        members, used = mode.layer_outputs(model, k, x_d, x_s, batch_windows, anchor=lookback)
        n_windows += used
        depth = int(np.argmin(np.abs(DEPTHS - lc.depth)))
        simulated = ensemble_mean(members)
        dyn_fields[simulated_input(depth + 1)] = simulated  # the input of the layers below (the cascade)
        mean[:, depth, cells] = simulated[:, -n_days:].T
        spread[:, depth, cells] = members[:, :, -n_days:].std(axis=0, dtype="float64").T  # population std
    shape = (n_days, N_LAYERS, ni, nj)
    return mean.reshape(shape), spread.reshape(shape), n_windows


def ensemble_mean(members: np.ndarray) -> np.ndarray:
    """(members, ...) → float32 mean over members (accumulated in float64); used by `predict` for the
    product and the cascade's inputs, and by `train` for the cascade's inputs, so both see the same values."""
    with np.errstate(invalid="ignore"):
        return members.mean(axis=0, dtype="float64").astype("float32")


# ----------------------------------------------------------------------------- models on workers


def inference_device() -> str:
    """'cuda' where this process sees a GPU, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.lru_cache(maxsize=2)
def cached_model(url: str, content_id: str, device: str) -> LoadedModel:
    """The artifact loaded once per process (fallback where no worker plugin holds it)."""
    model = load_artifact(url, device=device, fast=True)
    if model.content_id != content_id:
        raise RuntimeError(
            f"{url}: the model artifact changed while predict was running "
            f"(content id {model.content_id[:12]}…, expected {content_id[:12]}…); rerun predict"
        )
    return model


def worker_model(url: str, content_id: str) -> LoadedModel:
    """The model held by this Dask worker's plugin, else the per-process cached one."""
    try:
        from distributed import get_worker

        worker: Any = get_worker()
    except (ImportError, ValueError):  # not inside a Dask worker
        worker = None
    held = getattr(worker, _WORKER_ATTR, {}) if worker is not None else {}
    model = held.get((url, content_id))
    return model if model is not None else cached_model(url, content_id, inference_device())


@functools.cache
def plugin_class() -> type:
    """The `distributed.WorkerPlugin` that loads the model once per worker (built lazily so importing
    this module does not import distributed). Also importable as `somocloud.predict.ModelPlugin`."""
    from distributed import WorkerPlugin

    class ModelPlugin(WorkerPlugin):
        """Loads the artifact at worker start (and on every restarted worker)."""

        name = "somocloud-predict-model"

        def __init__(self, url: str, content_id: str, options: Mapping[str, Mapping[str, Any]]) -> None:
            self.url = url
            self.content_id = content_id
            self._options = {k: dict(v) for k, v in options.items()}  # storage options: never logged

        def __repr__(self) -> str:
            return f"ModelPlugin({self.url!r})"

        def setup(self, worker: Any) -> None:
            if self._options:
                stores.set_runtime_options(self._options)
            model = cached_model(self.url, self.content_id, inference_device())
            setattr(worker, _WORKER_ATTR, {(self.url, self.content_id): model})

        def teardown(self, worker: Any) -> None:
            setattr(worker, _WORKER_ATTR, {})

    ModelPlugin.__module__ = __name__
    ModelPlugin.__qualname__ = "ModelPlugin"
    return ModelPlugin


def __getattr__(name: str) -> Any:
    # `ModelPlugin` resolves lazily so pickles of the plugin refer to it by name.
    if name == "ModelPlugin":
        return plugin_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
