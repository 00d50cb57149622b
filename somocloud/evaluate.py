"""`evaluate`: skill of the product at the held-out (and, for comparison, the training) target cells.

For every cell of the model's `split.json` and every layer, the product series is compared with the
rescaled observations (`targets`) and, when the store exists, with the synthetic `truth`, over the days the
product covers. Writes `<evaluation>/metrics.csv` (one row per cell x depth x reference) and
`<evaluation>/summary.json` (medians per split, reference and depth).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from somocloud import metrics, provenance, stores
from somocloud.config import RunConfig
from somocloud.context import Context

log = logging.getLogger(__name__)

STEP = "evaluate"
VARIABLE = "soil_moisture"
CONTRACT_COLUMNS = ["row", "col", "lat", "lon", "depth", "reference", "n", "r", "anomaly_r", "ubrmsd"]
"""The columns of metrics.csv that the data contract fixes, in order."""
EXTRA_COLUMNS = ["split", "dataset", "rmse", "nrmse", "bias_rel", "nse", "kge", "nan_reasons"]
"""Further columns, after the contract's: `split` is 'holdout' or 'train'; `dataset` is 'product' or the
name of a gridded dataset scored at the same cells (`evaluate.datasets`, `reference_sm`); `nan_reasons`
says why a metric of the row is NaN (`metrics.nan_reasons`), empty when none is."""
PRODUCT = "product"
SUMMARY_METRICS = ("r", "anomaly_r", "ubrmsd", "rmse", "nrmse", "bias_rel", "nse", "kge")
SPLITS = {"holdout": "holdout_cells", "train": "train_cells"}
"""Split name → key in split.json."""


def read_split(model_url: str) -> dict[str, np.ndarray]:
    """The `(n, 2)` int arrays of `[row, col]` per split ('holdout', 'train') from `<model>/split.json`."""
    url = stores.join(model_url, "split.json")
    if not stores.exists(url):
        raise FileNotFoundError(f"no split.json in the model artifact {model_url} (run `train` first)")
    try:
        doc = stores.read_json(url)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{url} is not valid JSON (line {exc.lineno}): {exc.msg}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{url}: expected a JSON object with {sorted(SPLITS.values())}")
    out: dict[str, np.ndarray] = {}
    for split, key in SPLITS.items():
        cells = doc.get(key)
        if cells is None:
            raise ValueError(f"{url}: key {key!r} is missing")
        try:
            arr = np.asarray(cells, dtype="int64").reshape(-1, 2)
        except (TypeError, ValueError):
            raise ValueError(f"{url}: {key!r} must be a list of [row, col] integer pairs") from None
        if len(arr) != len(cells):
            raise ValueError(f"{url}: {key!r} must be a list of [row, col] integer pairs")
        out[split] = arr
    both = {tuple(c) for c in out["holdout"].tolist()} & {tuple(c) for c in out["train"].tolist()}
    if both:
        raise ValueError(f"{url}: cells {sorted(both)[:5]} are in both train_cells and holdout_cells")
    return out


def _check_dims(ds: xr.Dataset, url: str, dims: tuple[str, ...]) -> None:
    if VARIABLE not in ds:
        raise KeyError(f"{url}: variable {VARIABLE!r} is missing")
    if set(ds[VARIABLE].dims) != set(dims):
        raise ValueError(f"{url}: {VARIABLE} has dims {ds[VARIABLE].dims}, expected {dims}")


def _target_index(targets: xr.Dataset, url: str) -> dict[tuple[int, int], int]:
    """(row, col) → position along the targets' `cell` dimension."""
    for coord in ("row", "col"):
        if coord not in targets.coords and coord not in targets:
            raise KeyError(f"{url}: per-cell coordinate {coord!r} is missing")
    rows = targets["row"].values.astype("int64")
    cols = targets["col"].values.astype("int64")
    return {(int(r), int(c)): i for i, (r, c) in enumerate(zip(rows, cols, strict=True))}


def _chunk_order(cells: np.ndarray, product: xr.Dataset) -> np.ndarray:
    """Indices that sort cells by the product chunk holding them, so that one batch reads each chunk once."""
    encoding = product[VARIABLE].encoding  # a shard is the unit one object holds
    chunks = encoding.get("shards") or encoding.get("chunks") or product[VARIABLE].shape
    dims = product[VARIABLE].dims
    clat, clon = chunks[dims.index("lat")], chunks[dims.index("lon")]
    return np.lexsort((cells[:, 1], cells[:, 0], cells[:, 1] // clon, cells[:, 0] // clat))


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def _series_at(gridded: xr.DataArray, cells: np.ndarray) -> np.ndarray:
    """(cell, depth, time) float64 values of a (time, depth, lat, lon) array at `[row, col]` cells."""
    rows = xr.DataArray(cells[:, 0], dims="cell")
    cols = xr.DataArray(cells[:, 1], dims="cell")
    picked = gridded.isel(lat=rows, lon=cols).transpose("cell", "depth", "time")
    return np.asarray(picked.values, dtype="float64")


def _rows(
    cells: np.ndarray,
    split: str,
    reference: str,
    sim: np.ndarray,
    obs: np.ndarray,
    lat: np.ndarray,
    lon: np.ndarray,
    depth: np.ndarray,
    min_n: int,
    dataset: str = PRODUCT,
) -> pd.DataFrame:
    """Metric rows for (cell, depth, time) arrays `sim` (of `dataset`) and `obs` of `cells`."""
    scores = metrics.skill(sim, obs, min_n)  # each (cell, depth)
    ncell, ndepth = sim.shape[:2]
    table = {
        "row": np.repeat(cells[:, 0], ndepth),
        "col": np.repeat(cells[:, 1], ndepth),
        "lat": np.repeat(lat[cells[:, 0]], ndepth),
        "lon": np.repeat(lon[cells[:, 1]], ndepth),
        "depth": np.tile(depth, ncell),
        "reference": reference,
        "split": split,
        "dataset": dataset,
    }
    table.update({name: np.asarray(value).reshape(-1) for name, value in scores.items()})
    reasons = {
        name: np.asarray(why).reshape(-1) for name, why in metrics.nan_reasons(sim, obs, min_n).items()
    }
    # why a metric of the row is NaN, e.g. "r: constant simulation; nse: fewer than 30 paired days"
    table["nan_reasons"] = [
        "; ".join(f"{name}: {why[i]}" for name, why in reasons.items() if why[i])
        for i in range(ncell * ndepth)
    ]
    return pd.DataFrame(table)


def _aligned(
    product: xr.Dataset, targets: xr.Dataset, truth: xr.Dataset | None, names: Mapping[str, str]
) -> tuple[xr.DataArray, xr.DataArray, xr.DataArray | None]:
    """Product (time, depth, lat, lon), targets (cell, depth, time) and truth on the days the product and
    the targets share, after checking that dims and coordinates agree."""
    purl, turl = names.get("product", "product"), names.get("targets", "targets")
    _check_dims(product, purl, ("time", "depth", "lat", "lon"))
    _check_dims(targets, turl, ("cell", "time", "depth"))
    depth = product["depth"].values
    if targets.sizes["depth"] != len(depth) or not np.allclose(targets["depth"].values, depth):
        raise ValueError(f"{turl}: depth {targets['depth'].values} differs from the product's {depth}")
    times = np.intersect1d(product["time"].values, targets["time"].values)
    if len(times) == 0:
        raise ValueError(f"{turl}: no day in common with the product {purl}")
    sm = product[VARIABLE].sel(time=times)
    tsm = targets[VARIABLE].sel(time=times).transpose("cell", "depth", "time")
    if truth is None:
        return sm, tsm, None
    tr_url = names.get("truth", "truth")
    _check_dims(truth, tr_url, ("time", "depth", "lat", "lon"))
    for coord in ("lat", "lon", "depth"):
        same_size = truth.sizes[coord] == product.sizes[coord]
        if not same_size or not np.allclose(truth[coord].values, product[coord].values):
            raise ValueError(f"{tr_url}: coordinate {coord!r} differs from the product's ({purl})")
    missing = np.setdiff1d(times, truth["time"].values)
    if len(missing):
        raise ValueError(f"{tr_url}: {len(missing)} product days are missing, first {missing[0]}")
    return sm, tsm, truth[VARIABLE].sel(time=times)


def _check_cells(
    cells: np.ndarray,
    split: str,
    shape: tuple[int, int],
    index: Mapping[tuple[int, int], int],
    names: Mapping[str, str],
) -> None:
    split_url = stores.join(names.get("model", "model"), "split.json")
    outside = (cells[:, 0] < 0) | (cells[:, 0] >= shape[0]) | (cells[:, 1] < 0) | (cells[:, 1] >= shape[1])
    if outside.any():
        raise ValueError(
            f"{split_url}: {split} cell {cells[outside][0].tolist()} is outside the product grid {shape}"
        )
    absent = [tuple(c) for c in cells.tolist() if tuple(c) not in index]
    if absent:
        raise KeyError(
            f"{names.get('targets', 'targets')}: {len(absent)} {split} cells of {split_url} are not target "
            f"cells, first {absent[0]}"
        )


def evaluate_product(
    product: xr.Dataset,
    targets: xr.Dataset,
    truth: xr.Dataset | None,
    split: Mapping[str, np.ndarray],
    min_n: int,
    cells_per_batch: int = 256,
    names: Mapping[str, str] | None = None,
    datasets: Mapping[str, xr.DataArray] | None = None,
) -> pd.DataFrame:
    """The metrics table of `product` (time, depth, lat, lon) against `targets` (cell, time, depth) and
    optionally `truth` (like the product) at the cells of every split, over the days product and targets
    share. `split` maps a split name to `(n, 2)` `[row, col]` cells; `names` maps 'product', 'targets',
    'truth', 'model' to store URLs for error messages. `datasets` are other gridded soil moisture
    (time, depth, lat, lon) on the product's grid, scored against the same references at the same cells
    and days (rows with their name in `dataset`)."""
    names = dict(names or {})
    sm, tsm, truth_sm = _aligned(product, targets, truth, names)
    index = _target_index(targets, names.get("targets", "targets"))
    lat, lon = product["lat"].values, product["lon"].values
    depth = product["depth"].values.astype("float64")
    parts: list[pd.DataFrame] = []
    for name, cells_all in split.items():
        if len(cells_all) == 0:
            continue
        _check_cells(cells_all, name, (len(lat), len(lon)), index, names)
        cells_sorted = cells_all[_chunk_order(cells_all, product)]
        for sl in _batches(len(cells_sorted), cells_per_batch):
            cells = cells_sorted[sl]
            sim = _series_at(sm, cells)
            pos = [index[(int(r), int(c))] for r, c in cells]
            obs = np.asarray(tsm.isel(cell=pos).values, dtype="float64")
            ref = _series_at(truth_sm, cells) if truth_sm is not None else None
            for dataset, values in [(PRODUCT, sim)] + [
                (d, _series_at(arr.sel(time=sm["time"].values), cells)) for d, arr in (datasets or {}).items()
            ]:
                parts.append(_rows(cells, name, "targets", values, obs, lat, lon, depth, min_n, dataset))
                if ref is not None:
                    parts.append(_rows(cells, name, "truth", values, ref, lat, lon, depth, min_n, dataset))
    columns = CONTRACT_COLUMNS + EXTRA_COLUMNS
    if not parts:
        return pd.DataFrame({c: [] for c in columns})
    table = pd.concat(parts, ignore_index=True)[columns]
    order = {"holdout": 0, "train": 1}
    table["_product_last"] = table["dataset"] != PRODUCT  # the product's rows first, then other datasets
    table = table.sort_values(
        ["split", "_product_last", "dataset", "reference", "depth", "row", "col"],
        key=lambda s: s.map(order) if s.name == "split" else s,
    ).drop(columns="_product_last")
    return table.reset_index(drop=True)


def _json_number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _layer_label(depth: float) -> str:
    from somocloud.layers import DEPTHS, layer_label

    return layer_label(int(np.argmin(np.abs(DEPTHS - depth))))


def summarise(table: pd.DataFrame) -> list[dict[str, Any]]:
    """Medians (`<metric>`) and 0.2 / 0.8 quantiles (`<metric>_q20`, `<metric>_q80`) of every metric per
    split, reference and depth over the cells where it is finite; `n_cells` counts cells with a finite r."""
    out: list[dict[str, Any]] = []
    for (split, dataset, reference, depth), group in table.groupby(
        ["split", "dataset", "reference", "depth"], sort=False
    ):
        record: dict[str, Any] = {
            "split": split,
            "dataset": dataset,
            "reference": reference,
            "depth": float(depth),
            "layer": _layer_label(float(depth)),
            "n_cells": int(np.isfinite(group["r"].to_numpy(dtype="float64")).sum()),
            "n_cells_total": len(group),
        }
        for name in SUMMARY_METRICS:
            values = group[name].to_numpy(dtype="float64")
            values = values[np.isfinite(values)]
            # median, and the 0.2-0.8 quantile range SoMo.ml reports beside it
            q20, q50, q80 = np.quantile(values, [0.2, 0.5, 0.8]) if len(values) else (None, None, None)
            for suffix, q in (("", q50), ("_q20", q20), ("_q80", q80)):
                record[name + suffix] = None if q is None else _json_number(float(q))
        out.append(record)
    return out


def format_summary(medians: list[dict[str, Any]]) -> str:
    """A compact text table of the medians (for logs and the CLI)."""
    head = f"{'split':8} {'dataset':12} {'reference':9} {'layer':8} {'cells':>5} {'r':>6} {'anom_r':>6} {'ubrmsd':>7}"
    lines = [head]

    def fmt(v: float | None, width: int, digits: int) -> str:
        return f"{v:{width}.{digits}f}" if v is not None else f"{'-':>{width}}"

    for m in medians:
        lines.append(
            f"{m['split']:8} {m.get('dataset', PRODUCT):12} {m['reference']:9} {m['layer']:8} {m['n_cells']:5d} "
            f"{fmt(m['r'], 6, 3)} {fmt(m['anomaly_r'], 6, 3)} {fmt(m['ubrmsd'], 7, 4)}"
        )
    return "\n".join(lines)


def _provenance(cfg: RunConfig, inputs: Mapping[str, str]) -> dict[str, Any]:
    attrs = provenance.provenance_attrs(cfg, STEP, inputs)
    # The JSON-string attributes are stored as objects here: summary.json is read by people.
    for key in ("somocloud_config", "somocloud_inputs"):
        attrs[key] = json.loads(attrs[key])
    return attrs


def evaluate(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """Compute the skill table of the product at the split's cells and write metrics.csv and summary.json.

    Returns `{"evaluation": <folder URL>}`."""
    product_url, targets_url = cfg.store("product"), cfg.store("targets")
    model_url, truth_url, out_url = cfg.store("model"), cfg.store("truth"), cfg.store("evaluation")
    split = read_split(model_url)
    product = stores.open_zarr(product_url)
    if product.attrs.get("complete") is not True:
        log.warning("evaluating %s, which is not marked complete: some tiles may still be NaN", product_url)
    targets = stores.open_zarr(targets_url)
    has_truth = stores.exists(stores.join(truth_url, "zarr.json"))
    truth = stores.open_zarr(truth_url) if has_truth else None
    inputs = {"product": product_url, "targets": targets_url, "model": model_url}
    if has_truth:
        inputs["truth"] = truth_url
    if len(split["holdout"]) == 0:
        log.warning("split.json of %s has no held-out cells: only in-sample skill is reported", model_url)
    datasets = gridded_datasets(cfg, product)
    inputs |= {f"dataset:{name}": url for name, url in _dataset_urls(cfg).items() if name in datasets}
    table = evaluate_product(
        product, targets, truth, split, cfg.evaluate.min_overlap_days, cfg.evaluate.cells_per_batch, inputs,
        datasets,
    )  # fmt: skip
    medians = summarise(table)
    times = np.intersect1d(product["time"].values, targets["time"].values)
    summary = {
        "references": ["targets", "truth"] if has_truth else ["targets"],
        "n_cells": {name: len(cells) for name, cells in split.items()},
        "min_overlap_days": cfg.evaluate.min_overlap_days,
        "period": {
            "start": str(np.datetime_as_string(times[0], unit="D")),
            "end": str(np.datetime_as_string(times[-1], unit="D")),
        },
        "rows": medians,
        "provenance": _provenance(cfg, inputs),
    }
    stores.write_text(stores.join(out_url, "metrics.csv"), table.to_csv(index=False))
    stores.write_json(stores.join(out_url, "summary.json"), summary)
    log.info("skill of %s (medians over cells):\n%s", product_url, format_summary(medians))
    if cfg.evaluate.lookback and len(split["holdout"]):
        write_lookback(cfg, product, targets, truth, np.asarray(split["holdout"]), out_url)
    return {"evaluation": out_url}


def _dataset_urls(cfg: RunConfig) -> dict[str, str]:
    urls = {"reference_sm": cfg.store("reference_sm")}
    urls.update(cfg.evaluate.datasets)
    return urls


def gridded_datasets(cfg: RunConfig, product: xr.Dataset) -> dict[str, xr.DataArray]:
    """Other gridded soil moisture to score beside the product: the forcing's `reference_sm` (its
    `swvl1..3` as the three layers) when it exists, and every `evaluate.datasets` entry (Zarr, or NetCDF
    ending in `.nc`, with `soil_moisture` (time, depth, lat, lon) on the run grid) as (time, depth, lat,
    lon) over the product's days."""
    out: dict[str, xr.DataArray] = {}
    times = product["time"].values
    for name, url in _dataset_urls(cfg).items():
        if name == "reference_sm":
            if not stores.exists(stores.join(url, "zarr.json")):
                continue
            ref = stores.open_zarr(url)
            arr = xr.concat([ref[f"swvl{k}"] for k in (1, 2, 3)], dim="depth").assign_coords(
                depth=product["depth"].values
            )
        else:
            ds = xr.open_dataset(url, chunks={}) if url.endswith(".nc") else stores.open_zarr(url)
            if VARIABLE not in ds:
                raise KeyError(f"evaluate.datasets.{name}: {url} has no {VARIABLE!r} variable")
            arr = ds[VARIABLE]
        arr = arr.transpose("time", "depth", "lat", "lon")
        missing = np.setdiff1d(times, arr["time"].values)
        if (
            len(missing)
            or arr.sizes["lat"] != product.sizes["lat"]
            or arr.sizes["lon"] != product.sizes["lon"]
        ):
            raise ValueError(
                f"evaluate.datasets.{name}: {url} must cover the product's days and grid "
                f"({len(missing)} days missing; lat x lon {arr.sizes['lat']} x {arr.sizes['lon']} against "
                f"{product.sizes['lat']} x {product.sizes['lon']})"
            )
        out[name] = arr.sel(time=times)
    return out


def write_lookback(
    cfg: RunConfig,
    product: xr.Dataset,
    targets: xr.Dataset,
    truth: xr.Dataset | None,
    cells: np.ndarray,
    out_url: str,
) -> None:
    """The lookback permutation curve at the held-out cells (`somocloud.lookback`) → lookback.json."""
    from somocloud import lookback

    times = product["time"].values
    if truth is not None:
        rows, cols = xr.DataArray(cells[:, 0], dims="cell"), xr.DataArray(cells[:, 1], dims="cell")
        picked = truth[VARIABLE].sel(time=times).isel(lat=rows, lon=cols)
        reference, name = picked.transpose("cell", "depth", "time").values, "truth"
    else:
        where = _target_index(targets, cfg.store("targets"))
        series = targets[VARIABLE].reindex(time=times).isel(cell=[where[(int(r), int(c))] for r, c in cells])
        reference, name = series.transpose("cell", "depth", "time").values, "targets"
    curve = lookback.lookback_curve(cfg, product, cells, reference, name, cfg.evaluate.min_overlap_days)
    curve["memory_days"] = lookback.memory_days(cfg)
    stores.write_json(stores.join(out_url, "lookback.json"), curve)
