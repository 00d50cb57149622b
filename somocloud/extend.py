"""`extend --until DATE`: add days to a finished product as new forcing arrives (the near-real-time promise).

The product keeps its model, grid, layout and every finished chunk before the boundary. Only what the new
days need is done:

1. Forcing for the new days is built into its own small cube next to the main one
   (`<forcing>-until-<DATE>.zarr`, plus its reference soil moisture) by the `forcing` step itself, over
   the model's lookback before the first recomputed day to `DATE`. The sources must already cover `DATE`;
   otherwise the step fails before writing anything.
2. The product's time axis is appended with xarray (`append_dim="time"`, no data computed): the arrays are
   resized and the new time stamps written; no existing chunk object is touched.
3. The tasks are those of a product planned for the whole, longer period whose days reach past the old
   end: new (tile x block) tasks, plus, when the old end cut a block short, that block again, recomputed
   from its first day so that blocked inference cuts the same blocks as a product made at once. Task
   geometry comes from the product's own shards, so a task still writes exactly one object per variable.
   They run like `predict`'s (on the cluster, or `--parts i/N`), with markers.
4. Finalise: `complete` is set again with a new content id (the original one is kept as
   `somocloud_base_content_id`, so `predict` with the original config still recognises the product) and
   the extension is recorded in `somocloud_extensions`. An exported product (NetCDF files present) gets
   the files of the years the new days fall in written again; a published product (STAC collection
   present) is published again, which updates the STAC temporal extent, the yearly Items and the Intake
   catalog.

Resumable: the first thing written is the in-progress record (`somocloud_extension`); a rerun with the
same `--until` finds it and runs only the unmarked tasks. The product is `complete: false` meanwhile.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from somocloud import predict as pr
from somocloud import provenance, stores
from somocloud.config import RunConfig
from somocloud.context import Context, wait_for_first_part
from somocloud.grid import Grid
from somocloud.layers import N_LAYERS

log = logging.getLogger(__name__)

IN_PROGRESS = "somocloud_extension"
"""Root attribute (JSON) of an extension that has started and not finished."""
HISTORY = "somocloud_extensions"
"""Root attribute (JSON list) of the finished extensions."""


def extend(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """Extend the complete product at `stores.product` to `extend.until`; returns the URLs written."""
    until = cfg.extend.until
    if until is None:
        raise ValueError("extend needs the last day to reach: --until YYYY-MM-DD (config key extend.until)")
    url = cfg.store("product")
    # Parts 2..N of `--parts` wait for part 1 to build the forcing and start the extension.
    wait_for_first_part(lambda: _started(url, until), f"the extension of {url} to {until}", ctx,
                        cfg.predict.parts_wait_s)  # fmt: skip
    attrs = _product_attrs(url)
    record = json.loads(attrs[IN_PROGRESS]) if IN_PROGRESS in attrs else None
    if record is not None and record["until"] != until.isoformat():
        raise ValueError(
            f"{url}: an extension to {record['until']} is unfinished; rerun `extend --until {record['until']}` "
            f"to finish it before extending to {until}"
        )
    product = stores.open_zarr(url, chunks=None)
    days = np.asarray(product["time"].values).astype("datetime64[ns]")
    grid = Grid.from_config(cfg.grid)
    grid.check(product, url, "predict")
    if record is None and np.datetime64(until, "ns") <= days[-1]:
        log.info("extend: %s already reaches %s (asked for %s); nothing to do", url, _day(days[-1]), until)
        return {"product": url}

    n_before = int(record["n_days_before"]) if record else len(days)
    all_days = pr.product_days(_day(days[0]), until)
    time_size, tile_size = task_shape(url)
    plan = pr.plan_tasks(grid, len(all_days), tile_size, time_size)
    tasks = [t for t in plan if t.t1 > n_before]
    first = min(t.t0 for t in tasks)

    card, model_content_id = pr.read_card(cfg.store("model"))
    if card.inference_mode != attrs.get("inference_mode"):
        raise ValueError(
            f"{url}: made in {attrs.get('inference_mode')!r} mode, but the model at {cfg.store('model')} "
            f"is a {card.inference_mode!r} model; extend with the model that made the product"
        )
    if model_content_id != attrs.get("model_content_id"):
        raise ValueError(f"{url}: the model at {cfg.store('model')} is not the one that made the product")
    forcing_variables = pr.required_forcing(card, cfg.store("model"))
    static_variables = tuple(sorted({n for lc in card.layers for n in lc.static_inputs}))
    lookback = pr.task_lookback(card)
    ext_cfg = extension_config(cfg, _day(all_days[first]), until)
    _build_forcing(ext_cfg, ctx)
    forcing_url = ext_cfg.store("forcing")
    offset = pr.check_forcing(forcing_url, grid, forcing_variables, _day(all_days[first]), until, lookback)

    content_id = record["content_id"] if record else provenance.sha256_json(
        {
            "base": attrs[provenance.CONTENT_ID],
            "until": until.isoformat(),
            "forcing": provenance.fingerprint(forcing_url),
            "model": model_content_id,
        }
    )  # fmt: skip
    if record is None:
        record = {
            "until": until.isoformat(),
            "previous_end": str(_day(days[-1])),
            "n_days_before": n_before,
            "forcing": forcing_url,
            "content_id": content_id,
        }
        # The record first: a crash after the resize below is then recognised and resumed.
        stores.update_zarr_attrs(url, {"complete": False, IN_PROGRESS: json.dumps(record)})
        append_days(url, all_days[n_before:], grid)
        log.info("extend: %s now spans %s .. %s (%d new days)", url, _day(all_days[0]), until,
                 len(all_days) - n_before)  # fmt: skip

    spec = pr.TaskSpec(
        product_url=url,
        forcing_url=forcing_url,
        statics_url=cfg.store("statics"),
        model_url=cfg.store("model"),
        model_content_id=model_content_id,
        product_content_id=content_id,
        forcing_offset=offset - first,
        mode=card.inference_mode,
        lookback=lookback,
        batch_windows=cfg.predict.batch_windows,
        forcing_variables=forcing_variables,
        static_variables=static_variables,
    )
    pr.check_statics(spec.statics_url, grid, static_variables)
    log.info("extend: %d tasks (%d recompute a block the old end cut short)",
             len(tasks), sum(t.t0 < n_before for t in tasks))  # fmt: skip
    if not pr.run_plan(spec, tasks, plan, cfg, ctx):
        return {"product": url}
    pr.finalise(url, plan)
    history = [
        *json.loads(attrs.get(HISTORY, "[]")),
        {k: record[k] for k in ("until", "previous_end", "forcing")},
    ]
    stores.update_zarr_attrs(
        url,
        {
            provenance.CONTENT_ID: content_id,
            pr.BASE_CONTENT_ID: attrs.get(pr.BASE_CONTENT_ID, attrs[provenance.CONTENT_ID]),
            HISTORY: json.dumps(history),
        },
        remove=[IN_PROGRESS],
    )
    log.info("extend: %s complete to %s", url, until)
    outputs = {"product": url, "forcing_extension": forcing_url}
    if stores.list_files(cfg.store("netcdf"), ".nc"):  # an exported product: its touched years again
        from somocloud.publish.netcdf import export_netcdf

        years = {int(str(d)[:4]) for d in all_days[n_before:]}
        outputs |= export_netcdf(cfg, ctx, only_years=years)
        log.info("extend: NetCDF files of %s rewritten", ", ".join(map(str, sorted(years))))
    if stores.exists(stores.join(cfg.store("stac"), "collection.json")):
        from somocloud.publish import publish

        outputs |= publish(cfg, ctx)  # the collection's extent and the catalog follow the product
    return outputs


def _started(url: str, until: dt.date) -> bool:
    """An extension to `until` is under way, or done."""
    if not stores.exists(stores.join(url, "zarr.json")):
        return False
    attrs = stores.zarr_attrs(url)
    if IN_PROGRESS in attrs:
        return bool(json.loads(attrs[IN_PROGRESS])["until"] == until.isoformat())
    return any(h["until"] == until.isoformat() for h in json.loads(attrs.get(HISTORY, "[]")))


def _product_attrs(url: str) -> dict[str, Any]:
    """The root attributes of a product that is complete or in the middle of an extension."""
    if not stores.exists(stores.join(url, "zarr.json")):
        raise FileNotFoundError(f"no product Zarr store at {url} (run `predict` first)")
    attrs = stores.zarr_attrs(url)
    if attrs.get("complete") is not True and IN_PROGRESS not in attrs:
        raise ValueError(
            f"{url}: the product is not complete (root attribute 'complete' is {attrs.get('complete')!r}); "
            "finish `predict` before extending it"
        )
    return attrs


def _day(value: Any) -> dt.date:
    return pd.Timestamp(value).date()


def task_shape(url: str) -> tuple[int, int]:
    """(days, cells) of one task of the product: its shard (or chunk) along time and lat."""
    import zarr

    array = zarr.open_array(stores.zarr_store(url, read_only=True), path="soil_moisture", mode="r")
    outer = array.shards or array.chunks
    if outer[2] != outer[3]:
        raise ValueError(f"{url}: soil_moisture has non-square tiles {outer[2:]} and cannot be extended")
    return int(outer[0]), int(outer[2])


def extension_config(cfg: RunConfig, first_day: dt.date, until: dt.date) -> RunConfig:
    """`cfg` for the extension's forcing: its period and its own forcing and reference stores."""
    suffix = f"-until-{until:%Y%m%d}"
    stores_ = cfg.stores.model_copy(
        update={
            "forcing": _sibling(cfg.store("forcing"), suffix),
            "reference_sm": _sibling(cfg.store("reference_sm"), suffix),
        }
    )
    period = cfg.period.model_copy(update={"start": first_day, "end": until})
    return cfg.model_copy(update={"stores": stores_, "period": period})


def _sibling(url: str, suffix: str) -> str:
    """`…/forcing.zarr` → `…/forcing<suffix>.zarr`."""
    stem, dot, ext = url.rstrip("/").rpartition(".")
    return f"{stem}{suffix}.{ext}" if dot and "/" not in ext else f"{url.rstrip('/')}{suffix}"


def _build_forcing(ext_cfg: RunConfig, ctx: Context) -> None:
    from somocloud.forcing import build_forcing

    # The forcing build's tasks are not the extension's: never split them by --parts.
    parts, ctx.parts = ctx.parts, None
    try:
        build_forcing(ext_cfg, ctx)
    except stores.StoreError as exc:
        raise stores.StoreError(
            f"extend --until {ext_cfg.period.end}: the forcing for the new days is not there yet: {exc}"
        ) from None
    finally:
        ctx.parts = parts


def append_days(url: str, new_days: np.ndarray, grid: Grid) -> None:
    """Append `new_days` to the product's time axis: arrays resized and time stamps written, no data."""
    import dask.array as da

    shape = (len(new_days), N_LAYERS, grid.nlat, grid.nlon)
    empty = {name: (pr.DIMS, da.full(shape, np.nan, dtype="float32", chunks=shape)) for name in pr.DATA_VARS}
    # xarray's append replaces the root attributes with the dataset's: carry them over.
    block = xr.Dataset(empty, coords={"time": ("time", new_days)}, attrs=stores.zarr_attrs(url))
    stores.write_zarr(block, url, mode="a", append_dim="time", compute=False)
