"""The forcing build: sources → daily map-chunked intermediate → pixel-chunked `forcing` and
`reference_sm` cubes.

Every canonical variable comes from `forcing.source` (store `stores.forcing_source`) unless
`forcing.variables` names another source and store for it; each source store is validated and given its
sampler onto the run grid (`somocloud.sampling`) before anything is written (`plan_sources`).

Hourly ERA5 is stored one map per chunk, so a pixel's time series can only be had by reading every map.
The build therefore works in two stages of idempotent Dask tasks, each writing a disjoint,
chunk-aligned region of a Zarr whose template (metadata and coordinates) was written first, and each
leaving a marker (`stores.markers_for(url)`) after its data so that a rerun skips it:

1. *Day tasks* (`forcing.days_per_task` days each): read the task's hours from the source once,
   aggregate to daily values inside the task and write one time-block of the intermediate
   `<forcing>.daily-maps.zarr`. Each task owns one Zarr shard of shape
   `(days_per_task, all lat, all lon)`; inside the shard the data are chunked `(days_per_task,
   tile_size, tile_size)`, so stage 2 reads only the tiles it needs instead of whole maps.
2. *Tile tasks* (one per `forcing.tile_size` x `tile_size` tile of the run grid): read the tile's column
   of every shard and write one chunk `(all days, tile, tile)` of `forcing` and of `reference_sm`.

A store whose build key (the sources' URLs and content ids, grid, days and the chunking knobs; see
`build_key`) differs from the current one is rewritten from its template and its markers are cleared. The
content id of a foreign Zarr store is the hash of its metadata (`provenance.fingerprint`): a new version
of a source belongs at a new URL (data rewritten in place under identical metadata is not noticed). When a day task is
(re)written, every tile marker is cleared too (each tile reads every day). Once both final stores are
complete the intermediate and its markers are deleted (`forcing.keep_intermediate: true` keeps them; a
kept intermediate with an unmarked day task makes the next run redo that task and the tiles). With
`--parts i/N` each process runs its share of each stage; stage 2 starts only when every day task is
marked, and a final invocation without `--parts` completes whatever is left.

Memory per worker: a day task holds `days_per_task` daily maps of every variable on the run grid plus
one read block of hourly maps (`_READ_BUDGET_BYTES` per variable, at least one day); a tile task holds one
variable's full series of one tile at a time. Neither depends on the period length except through the
tile's series (tile_size² × days × 4 bytes: 47 MB for a 40 x 40 tile over 20 years).

Missing hours: a cell's day with fewer than `forcing.min_hours_per_day` valid (non-NaN) hours is NaN;
see `somocloud.forcing.sources` for how partial days are aggregated.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from somocloud import __version__, provenance, stores
from somocloud.config import RunConfig
from somocloud.context import Context, select_parts
from somocloud.forcing.sources import HourlySource, LexiconEntry, get_source
from somocloud.grid import Grid, Tile
from somocloud.layers import FORCING_VARIABLES, REFERENCE_VARIABLES
from somocloud.sampling import GridSampler

log = logging.getLogger(__name__)

STEP = "forcing"
INTERMEDIATE_SUFFIX = ".daily-maps.zarr"
BUILD_KEY_ATTR = "somocloud_forcing_build_key"
"""Root attribute holding the build key of the stores this build writes (see `build_key`)."""
DIMS = ("time", "lat", "lon")


def intermediate_url(forcing_url: str) -> str:
    """Where the daily map-chunked intermediate of `forcing_url` lives (a sibling store)."""
    return forcing_url.rstrip("/") + INTERMEDIATE_SUFFIX


@dataclass(frozen=True)
class DayTask:
    """Days [start, stop) of the daily time axis, starting on `first_day`."""

    start: int
    stop: int
    first_day: dt.date

    @property
    def id(self) -> str:
        return f"days-{self.first_day:%Y%m%d}-{self.stop - self.start:04d}"


@dataclass(frozen=True)
class SourcePlan:
    """The canonical variables one source store provides, and how its cells make the run grid's."""

    label: str
    """Input name in the provenance attributes (`forcing_source`, or `forcing_source.<names>`)."""
    source: str
    url: str
    names: tuple[str, ...]
    sampler: GridSampler


@dataclass(frozen=True)
class Plan:
    """What every task needs to know; small and picklable (no storage options in it)."""

    sources: tuple[SourcePlan, ...]
    intermediate_url: str
    forcing_url: str
    reference_url: str
    min_hours: int
    build_key: str


@dataclass
class BuildReport:
    """What a forcing build did: the URLs written and which tasks ran or were skipped."""

    urls: dict[str, str]
    complete: bool = False
    day_tasks_run: list[str] = field(default_factory=list)
    day_tasks_skipped: list[str] = field(default_factory=list)
    tile_tasks_run: list[str] = field(default_factory=list)
    tile_tasks_skipped: list[str] = field(default_factory=list)


def build_forcing(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """Build the daily `forcing` and `reference_sm` cubes from the hourly source; returns their URLs."""
    return run_forcing_build(cfg, ctx).urls


def run_forcing_build(cfg: RunConfig, ctx: Context) -> BuildReport:
    """The forcing build with a report of the tasks it ran (see the module docstring)."""
    grid = Grid.from_config(cfg.grid)
    first_day, last_day = cfg.lookback_start, cfg.period.end
    days = pd.date_range(first_day, last_day, freq="D").values.astype("datetime64[ns]")
    names = (*FORCING_VARIABLES, *REFERENCE_VARIABLES)

    # Every check on every source happens before anything is written or a cluster is started.
    source_plans = plan_sources(cfg, grid)
    entries = {n: get_source(sp.source, sp.url).entry(n) for sp in source_plans for n in sp.names}

    forcing_url, reference_url = cfg.store("forcing"), cfg.store("reference_sm")
    inter_url = intermediate_url(forcing_url)
    key = build_key(cfg, source_plans)
    plan = Plan(
        sources=source_plans,
        intermediate_url=inter_url,
        forcing_url=forcing_url,
        reference_url=reference_url,
        min_hours=cfg.forcing.min_hours_per_day,
        build_key=key,
    )
    report = BuildReport(urls={"forcing": forcing_url, "reference_sm": reference_url})
    tiles = grid.tiles(cfg.forcing.tile_size)
    tile_ids = [t.id for t in tiles]
    attrs = provenance.provenance_attrs(cfg, STEP, {sp.label: sp.url for sp in source_plans})

    day_tasks = plan_day_tasks(first_day, len(days), cfg.forcing.days_per_task)
    day_markers = stores.markers_for(inter_url)
    # A kept intermediate with unmarked day tasks is redone (and so are the cubes made from it); a
    # removed intermediate of complete cubes is simply finished work.
    intermediate_stale = stores.exists(stores.join(inter_url, "zarr.json")) and not (
        _template_matches(inter_url, key) and {t.id for t in day_tasks} <= day_markers.finished()
    )
    if _outputs_complete(plan, tile_ids) and not intermediate_stale:
        log.info("forcing: %s and %s are up to date", forcing_url, reference_url)
        report.tile_tasks_skipped = tile_ids
        return _finish(cfg, plan, attrs, report)

    ts, n_days = cfg.forcing.tile_size, len(days)
    # The intermediate: one shard (the write unit of a day task) per block of days, tile-sized chunks
    # inside it; the final cubes: one chunk per tile with all days.
    shard = (cfg.forcing.days_per_task, _round_up(grid.nlat, ts), _round_up(grid.nlon, ts))
    layouts = (
        (inter_url, names, (cfg.forcing.days_per_task, ts, ts), shard),
        (forcing_url, FORCING_VARIABLES, (n_days, ts, ts), None),
        (reference_url, REFERENCE_VARIABLES, (n_days, ts, ts), None),
    )
    for url, store_names, chunks, shards in layouts:
        _ensure_template(url, key, entries, store_names, days, grid, chunks, shards, attrs)

    # Stage 1: day tasks → intermediate.
    done = day_markers.finished()
    mine = select_parts(day_tasks, ctx.parts)
    pending = [t for t in mine if t.id not in done]
    report.day_tasks_skipped = [t.id for t in mine if t.id in done]
    if pending:
        client = ctx.dask(cfg.cluster)
        futures = client.map(run_day_task, pending, plan=plan, options=stores.runtime_options(), pure=False)
        results = _track(futures, "forcing", ctx.show_progress)
        report.day_tasks_run = sorted(r["task"] for r in results if r["status"] == "written")
        report.day_tasks_skipped += sorted(r["task"] for r in results if r["status"] == "skipped")
    if report.day_tasks_run:
        # every tile reads every day: tiles finished before these days were (re)written are stale
        for url in (forcing_url, reference_url):
            stores.markers_for(url).clear()
    if not {t.id for t in day_tasks} <= day_markers.finished():
        log.info("forcing: daily maps not finished by every part yet; run again without --parts to finish")
        return report

    # Stage 2: tile tasks → pixel-chunked forcing and reference_sm.
    mine_tiles = select_parts(tiles, ctx.parts)
    done_tiles = _tiles_done(plan)
    pending_tiles = [t for t in mine_tiles if t.id not in done_tiles]
    report.tile_tasks_skipped = [t.id for t in mine_tiles if t.id in done_tiles]
    if pending_tiles:
        client = ctx.dask(cfg.cluster)
        futures = client.map(
            run_tile_task, pending_tiles, plan=plan, options=stores.runtime_options(), pure=False
        )
        results = _track(futures, "forcing rechunk", ctx.show_progress)
        report.tile_tasks_run = sorted(r["task"] for r in results if r["status"] == "written")
        report.tile_tasks_skipped += sorted(r["task"] for r in results if r["status"] == "skipped")
    if not _outputs_complete(plan, tile_ids):
        log.info("forcing: pixel-chunked cubes not finished by every part yet; run again to finish")
        return report
    return _finish(cfg, plan, attrs, report)


def plan_sources(cfg: RunConfig, grid: Grid) -> tuple[SourcePlan, ...]:
    """The source stores of the build, each with the canonical names it provides, validated (variables,
    units, time axis) and with its sampler onto the run grid: `SourceError` before any work."""
    main = (cfg.forcing.source, cfg.store("forcing_source"), cfg.forcing.regrid)
    groups: dict[tuple[str, str, str], list[str]] = {}
    for name in (*FORCING_VARIABLES, *REFERENCE_VARIABLES):
        chosen = cfg.forcing.variables.get(name)
        groups.setdefault((chosen.source, chosen.store, chosen.regrid) if chosen else main, []).append(name)
    plans = []
    for (source_name, url, method), names in groups.items():
        source = get_source(source_name, url)
        source.validate(names, cfg.lookback_start, cfg.period.end)
        label = (
            "forcing_source" if (source_name, url, method) == main else "forcing_source." + "+".join(names)
        )
        plans.append(SourcePlan(label, source_name, url, tuple(names), source.sampler(grid, method)))
    return tuple(plans)


def build_key(cfg: RunConfig, source_plans: Sequence[SourcePlan]) -> str:
    """A hash of everything that determines the bytes of the stores this build writes.

    Unlike the provenance content id it ignores config sections that do not touch forcing (training,
    prediction, ...), so changing those does not rebuild years of forcing."""
    return provenance.sha256_json(
        {
            "version": __version__,
            "sources": [
                {
                    "source": sp.source,
                    "url": sp.url,
                    "content_id": provenance.fingerprint(sp.url),
                    "names": sp.names,
                    "regrid": sp.sampler.method,
                }
                for sp in source_plans
            ],
            "grid": cfg.grid.model_dump(mode="json"),
            "first_day": cfg.lookback_start.isoformat(),
            "last_day": cfg.period.end.isoformat(),
            "days_per_task": cfg.forcing.days_per_task,
            "min_hours_per_day": cfg.forcing.min_hours_per_day,
            "tile_size": cfg.forcing.tile_size,
        }
    )


def plan_day_tasks(first_day: dt.date, n_days: int, days_per_task: int) -> list[DayTask]:
    """Consecutive blocks of `days_per_task` days (the last one may be shorter)."""
    return [
        DayTask(start, min(start + days_per_task, n_days), first_day + dt.timedelta(days=start))
        for start in range(0, n_days, days_per_task)
    ]


# --- tasks (run on Dask workers) -------------------------------------------------------------------


def run_day_task(task: DayTask, plan: Plan, options: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Read the task's hours once, aggregate them to daily maps and write its block of the intermediate."""
    stores.set_runtime_options(options)
    markers = stores.markers_for(plan.intermediate_url)
    if markers.done(task.id):  # a retried task whose first attempt finished
        return {"task": task.id, "status": "skipped"}
    daily: dict[str, np.ndarray] = {}
    for sp in plan.sources:
        source: HourlySource = get_source(sp.source, sp.url)
        n_days = task.stop - task.start
        daily.update(source.read_daily(sp.names, task.first_day, n_days, sp.sampler, plan.min_hours))
    block = xr.Dataset({name: (DIMS, values) for name, values in daily.items()})
    region = {"time": slice(task.start, task.stop), "lat": slice(None), "lon": slice(None)}
    stores.write_zarr(block, plan.intermediate_url, mode="r+", region=region, consolidated=False)
    markers.mark(task.id, {"days": [str(task.first_day), task.stop - task.start]})
    return {"task": task.id, "status": "written"}


def run_tile_task(task: Tile, plan: Plan, options: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Read one tile's full time series from the intermediate; write its chunk of both final cubes."""
    stores.set_runtime_options(options)
    outputs = (
        (plan.forcing_url, FORCING_VARIABLES),
        (plan.reference_url, REFERENCE_VARIABLES),
    )
    todo = [(url, names) for url, names in outputs if not stores.markers_for(url).done(task.id)]
    if not todo:
        return {"task": task.id, "status": "skipped"}
    inter = stores.open_zarr(plan.intermediate_url, chunks=None)
    window = {"lat": slice(task.i0, task.i1), "lon": slice(task.j0, task.j1)}
    for url, names in todo:
        # one variable at a time: a task holds one tile's series of one variable (memory ∝ days, small)
        for name in names:
            block = xr.Dataset({name: (DIMS, np.asarray(inter[name].isel(window).values))})
            region = {"time": slice(None), **window}
            stores.write_zarr(block, url, mode="r+", region=region, consolidated=False)
        stores.markers_for(url).mark(task.id, {"rows": [task.i0, task.i1], "cols": [task.j0, task.j1]})
    return {"task": task.id, "status": "written"}


# --- helpers ---------------------------------------------------------------------------------------------


def _track(futures: list[Any], label: str, show: bool) -> list[dict[str, str]]:
    from somocloud.progress import track

    return track(futures, label, show=show)


def _round_up(n: int, size: int) -> int:
    return math.ceil(n / size) * size


def _template_matches(url: str, key: str) -> bool:
    if not stores.exists(stores.join(url, "zarr.json")):
        return False
    return stores.zarr_attrs(url).get(BUILD_KEY_ATTR) == key


def _ensure_template(
    url: str,
    key: str,
    entries: Mapping[str, LexiconEntry],
    names: Sequence[str],
    days: np.ndarray,
    grid: Grid,
    chunks: tuple[int, int, int],
    shards: tuple[int, int, int] | None,
    attrs: Mapping[str, Any],
) -> None:
    """Write the store's template unless one for the same build key exists (its markers then stay valid)."""
    if _template_matches(url, key):
        return
    import dask.array

    # Markers first: a crash between the two leaves no marker pointing at a stale store.
    stores.markers_for(url).clear()
    shape = (len(days), grid.nlat, grid.nlon)
    data_vars = {}
    encoding: dict[str, dict[str, Any]] = {}
    for name in names:
        entry = entries[name]
        var_attrs = {
            "units": entry.units,
            "long_name": entry.long_name,
            "cell_methods": f"time: {entry.aggregation}",
        }
        lazy = dask.array.full(shape, np.nan, dtype="float32", chunks=shards or chunks)
        data_vars[name] = (DIMS, lazy, var_attrs)
        encoding[name] = {"chunks": chunks, **({"shards": shards} if shards else {})}
    coords = {"time": ("time", days, {"standard_name": "time", "axis": "T"}), **grid.coords()}
    template = xr.Dataset(data_vars, coords=coords, attrs={**attrs, BUILD_KEY_ATTR: key})
    stores.write_zarr(template, url, mode="w", compute=False, encoding=encoding)
    log.info("forcing: wrote template %s", url)


def _tiles_done(plan: Plan) -> set[str]:
    """Tiles marked in both final stores (and only while their templates match the build key)."""
    if not (
        _template_matches(plan.forcing_url, plan.build_key)
        and _template_matches(plan.reference_url, plan.build_key)
    ):
        return set()
    return stores.markers_for(plan.forcing_url).finished() & stores.markers_for(plan.reference_url).finished()


def _outputs_complete(plan: Plan, tile_ids: Sequence[str]) -> bool:
    return set(tile_ids) <= _tiles_done(plan)


def _finish(cfg: RunConfig, plan: Plan, attrs: Mapping[str, Any], report: BuildReport) -> BuildReport:
    """Refresh provenance of the finished cubes and drop the intermediate unless it is to be kept."""
    for url in (plan.forcing_url, plan.reference_url):
        stores.update_zarr_attrs(url, dict(attrs))
    if not cfg.forcing.keep_intermediate:
        stores.markers_for(plan.intermediate_url).clear()
        stores.remove(plan.intermediate_url)
    report.complete = True
    return report
