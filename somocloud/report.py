"""The `report` step: the product's validation, as one self-contained HTML page plus PNG figures.

Inputs: `product`, `evaluation` (`metrics.csv`, `summary.json`), `statics`, `forcing`, `targets`, the
`model` manifest, and where they exist the `reference_sm` and `truth` stores and the lookback curve
(`<evaluation>/lookback.json`). Output: `<report>/index.html` and `<report>/figures/*.png`. The page
loads nothing from the network; its figures are relative files next to it.

Figures (SoMo.ml's "Technical Validation"): the long-term median map per layer; latitudinal median
profiles against the reference datasets; box plots of NRMSE and anomaly r per reference; skill by climate
regime (aridity x mean temperature terciles); the lookback curve; example station series. A table
gives the run's provenance (config, content ids of the model and inputs, versions).

Long-term statistics read every k-th day, at most `report.max_days` days, so the report's cost stays
bounded whatever the product's length.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import html
import io
import json
import logging
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from somocloud import provenance, stores
from somocloud.config import RunConfig
from somocloud.context import Context

log = logging.getLogger(__name__)

STEP = "report"
VARIABLE = "soil_moisture"
REFERENCE_NAMES = {"swvl1": 0, "swvl2": 1, "swvl3": 2}  # reference_sm variables → layer index


def report(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """Write the validation report of the product; returns `{"report": <index.html URL>}`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    started = time.perf_counter()
    out = cfg.store("report")
    product = stores.open_zarr(cfg.store("product"))
    if not product.attrs.get("complete"):
        raise ValueError(f"{cfg.store('product')}: not complete (run `predict` to the end first)")
    table = pd.read_csv(io.StringIO(stores.read_text(stores.join(cfg.store("evaluation"), "metrics.csv"))))
    others = table[table["dataset"] != "product"]  # other gridded datasets, for the box plots only
    table = table[table["dataset"] == "product"]
    days = _sampled_days(product.sizes["time"], cfg.report.max_days)
    values = _product_days(product, days)  # the sampled days, read once for the maps and the profiles
    layers = _layer_labels(product)
    references = _references(cfg, product, days)

    figures: list[tuple[str, str, str, Any]] = [
        ("median_maps", "Long-term median per layer", _caption_days(product, days), _median_maps(product, values, layers)),
        ("latitude_profiles", "Latitudinal median profiles", "Median over longitude and the sampled days, "
         "the product against each reference on the product's valid cells.",
         _latitude_profiles(product, values, references, layers)),
        ("skill_boxplots", "NRMSE and anomaly r per dataset", "Each gridded dataset against the station "
         "targets and, where it exists, the truth, per held-out cell and layer (evaluate's metrics.csv: the "
         "product, the forcing's reference_sm, evaluate.datasets); boxes span the quartiles, whiskers 1.5 IQR.",
         _boxplots(pd.concat([table, others]), layers)),
        ("skill_by_climate", "Skill by climate regime", "Median anomaly r against the targets at every scored "
         "cell (held-out and training), by terciles of aridity and mean 2 m temperature; the number of "
         "cells in each bin.", _climate(cfg, table, days)),
        ("example_series", "Example station series", "Held-out cells: the product against the station "
         "targets (and the truth, in the synthetic world).", _station_series(cfg, product, table, layers)),
    ]  # fmt: skip
    lookback_url = stores.join(cfg.store("evaluation"), "lookback.json")
    if stores.exists(lookback_url):
        curve = stores.read_json(lookback_url)
        figures.append(("lookback", "Lookback permutation", _lookback_caption(curve), _lookback(curve)))

    stations_html = ""
    if cfg.report.stations_experiment:
        results = stores.read_json(cfg.report.stations_experiment)
        figures.append(("stations_experiment", "Real stations: " + str(results.get("experiment", "")),
                        _stations_caption(results), _stations_boxplots(results)))  # fmt: skip
        stations_html = _stations_table(results)

    written = []
    for name, title, caption, fig in figures:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        _close(fig)
        stores.write_bytes(stores.join(out, "figures", f"{name}.png"), buf.getvalue())
        written.append((name, title, caption))
    summary = json.loads(stores.read_text(stores.join(cfg.store("evaluation"), "summary.json")))
    page = _page(cfg, product, summary, written, _provenance_rows(cfg, product), time.perf_counter() - started,
                 stations_html)  # fmt: skip
    index = stores.join(out, "index.html")
    stores.write_text(index, page)
    log.info("report: wrote %s (%d figures) in %.1f s", index, len(written), time.perf_counter() - started)
    return {"report": index}


# ------------------------------------------------------------------------------------------- data


def _sampled_days(n_days: int, max_days: int) -> np.ndarray:
    """Every k-th day index, k the smallest step giving at most `max_days` days."""
    step = max(1, -(-n_days // max_days))
    return np.arange(0, n_days, step)


def _caption_days(product: xr.Dataset, days: np.ndarray) -> str:
    t = product["time"].values
    step = int(days[1] - days[0]) if len(days) > 1 else 1
    return (f"Median over {len(days)} days (every {step}. day) from {str(t[0])[:10]} to {str(t[-1])[:10]}; "
            "grey: no data (sea, or inputs missing).")  # fmt: skip


def _layer_labels(product: xr.Dataset) -> list[str]:
    bounds = product["depth_bnds"].values
    return [f"{a * 100:g}-{b * 100:g} cm" for a, b in bounds]


def _references(cfg: RunConfig, product: xr.Dataset, days: np.ndarray) -> dict[str, np.ndarray]:
    """Gridded references on the product's sampled days as (day, depth, lat, lon) arrays, by name."""
    times = product["time"].values[days]
    out: dict[str, np.ndarray] = {}
    ref_url = cfg.store("reference_sm")
    if stores.exists(stores.join(ref_url, "zarr.json")):
        ref = stores.open_zarr(ref_url).sel(time=times)
        out["reference_sm (forcing)"] = np.stack(
            [ref[name].transpose("time", "lat", "lon").values for name in REFERENCE_NAMES], axis=1
        )
    truth_url = cfg.store("truth")
    if stores.exists(stores.join(truth_url, "zarr.json")):
        truth = stores.open_zarr(truth_url)[VARIABLE].sel(time=times)
        out["truth (synthetic)"] = truth.transpose("time", "depth", "lat", "lon").values
    return out


def _product_days(product: xr.Dataset, days: np.ndarray) -> np.ndarray:
    return np.asarray(product[VARIABLE].isel(time=days).transpose("time", "depth", "lat", "lon").values)


# ---------------------------------------------------------------------------------------- figures


def _median_maps(product: xr.Dataset, values: np.ndarray, layers: Sequence[str]) -> Any:
    """`values`: the product on the sampled days, (day, depth, lat, lon)."""
    import matplotlib.pyplot as plt

    with np.errstate(all="ignore"), _quiet():
        medians = np.nanmedian(values, axis=0)  # (depth, lat, lon)
    lat, lon = product["lat"].values, product["lon"].values
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.4), squeeze=False)
    finite = medians[np.isfinite(medians)]
    vmin, vmax = np.percentile(finite, [2, 98]) if finite.size else (0.0, 0.5)
    for k, ax in enumerate(axes[0]):
        ax.set_facecolor("0.85")
        mesh = ax.pcolormesh(lon, lat, medians[k], vmin=vmin, vmax=vmax, cmap="YlGnBu", shading="nearest")
        ax.set_title(layers[k])
        ax.set_xlabel("longitude")
    axes[0][0].set_ylabel("latitude")
    fig.colorbar(mesh, ax=axes[0].tolist(), label="soil moisture (m³ m⁻³)", shrink=0.85)
    return fig


def _latitude_profiles(
    product: xr.Dataset, values: np.ndarray, references: Mapping[str, np.ndarray], layers: Sequence[str]
) -> Any:
    import matplotlib.pyplot as plt

    valid = np.isfinite(values)
    lat = product["lat"].values
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), squeeze=False, sharey=True)
    for k, ax in enumerate(axes[0]):
        for name, series in [("product", values), *references.items()]:
            masked = np.where(valid, series, np.nan)[:, k]  # the same cells and days for every dataset
            with np.errstate(all="ignore"), _quiet():
                profile = np.nanmedian(masked.transpose(1, 0, 2).reshape(len(lat), -1), axis=1)
            ax.plot(profile, lat, label=name, lw=2 if name == "product" else 1.2)
        ax.set_title(layers[k])
        ax.set_xlabel("median soil moisture (m³ m⁻³)")
    axes[0][0].set_ylabel("latitude")
    axes[0][-1].legend(loc="best", fontsize="small")
    return fig


def _boxplots(table: pd.DataFrame, layers: Sequence[str]) -> Any:
    import matplotlib.pyplot as plt

    held = table[table["split"] == "holdout"]
    groups = sorted(held.groupby(["dataset", "reference"]).groups, key=lambda g: (g[0] != "product", g))
    labels = [f"{d}\nvs {r}" for d, r in groups]
    depths = sorted(held["depth"].unique())
    fig, axes = plt.subplots(
        2, len(depths), figsize=(1.6 * len(groups) * len(depths) + 1, 6.4), squeeze=False
    )
    for col, depth in enumerate(depths):
        sub = held[np.isclose(held["depth"], depth)]
        for row, metric in enumerate(("nrmse", "anomaly_r")):
            data = [
                sub.loc[(sub["dataset"] == d) & (sub["reference"] == r), metric].dropna().to_numpy()
                for d, r in groups
            ]
            ax = axes[row][col]
            ax.boxplot([d if d.size else [np.nan] for d in data], tick_labels=labels)
            ax.tick_params(axis="x", labelsize=7)
            ax.set_title(f"{layers[col] if col < len(layers) else depth}: {metric}")
            ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _climate(cfg: RunConfig, table: pd.DataFrame, days: np.ndarray) -> Any:
    import matplotlib.pyplot as plt

    statics = stores.open_zarr(cfg.store("statics"), chunks=None)
    forcing = stores.open_zarr(cfg.store("forcing"))
    t2m = forcing["t2m"].isel(time=np.linspace(0, forcing.sizes["time"] - 1, len(days)).astype(int))
    mean_t = np.asarray(t2m.mean("time").transpose("lat", "lon").values) - 273.15
    aridity = np.asarray(statics["aridity"].transpose("lat", "lon").values)
    scored = table[(table["reference"] == "targets")].dropna(subset=["anomaly_r"])
    rows, cols = scored["row"].to_numpy(int), scored["col"].to_numpy(int)
    a, t = aridity[rows, cols], mean_t[rows, cols]
    edges_a = np.nanquantile(a, [1 / 3, 2 / 3]) if a.size else np.array([np.nan, np.nan])
    edges_t = np.nanquantile(t, [1 / 3, 2 / 3]) if t.size else np.array([np.nan, np.nan])
    ba, bt = np.digitize(a, edges_a), np.digitize(t, edges_t)
    grid = np.full((3, 3), np.nan)
    counts = np.zeros((3, 3), dtype=int)
    for i in range(3):
        for j in range(3):
            sel = (bt == i) & (ba == j)
            counts[i, j] = int(sel.sum())
            if sel.any():
                grid[i, j] = float(np.median(scored["anomaly_r"].to_numpy()[sel]))
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    image = ax.imshow(grid, origin="lower", cmap="viridis", vmin=0, vmax=1)
    for i in range(3):
        for j in range(3):
            text = "–" if counts[i, j] == 0 else f"{grid[i, j]:.2f}\n(n={counts[i, j]})"
            ax.text(j, i, text, ha="center", va="center", color="w" if grid[i, j] < 0.6 else "k", fontsize=9)
    ax.set_xticks(range(3), ["humid", "middle", "arid"])
    ax.set_yticks(range(3), ["cool", "middle", "warm"])
    ax.set_xlabel(f"aridity tercile (edges {edges_a[0]:.2f}, {edges_a[1]:.2f})")
    ax.set_ylabel(f"mean 2 m temperature tercile (edges {edges_t[0]:.1f}, {edges_t[1]:.1f} °C)")
    fig.colorbar(image, ax=ax, label="median anomaly r")
    return fig


def _station_series(cfg: RunConfig, product: xr.Dataset, table: pd.DataFrame, layers: Sequence[str]) -> Any:
    import matplotlib.pyplot as plt

    held = table[(table["split"] == "holdout") & (table["reference"] == "targets")].dropna(subset=["r"])
    best = held.groupby(["row", "col"])["n"].sum().sort_values(ascending=False)
    cells = [tuple(int(v) for v in ix) for ix in best.index[: cfg.report.example_cells]]
    targets = stores.open_zarr(cfg.store("targets"), chunks=None)
    where = {
        (int(r), int(c)): i
        for i, (r, c) in enumerate(zip(targets["row"].values, targets["col"].values, strict=True))
    }
    truth_url = cfg.store("truth")
    truth = (
        stores.open_zarr(truth_url, chunks=None)[VARIABLE]
        if stores.exists(stores.join(truth_url, "zarr.json"))
        else None
    )
    times = product["time"].values
    fig, axes = plt.subplots(max(1, len(cells)), len(layers), figsize=(4.2 * len(layers), 2.4 * max(1, len(cells))),
                             squeeze=False, sharex=True)  # fmt: skip
    for i, (row, col) in enumerate(cells):
        sim = product[VARIABLE].isel(lat=row, lon=col).transpose("time", "depth").values
        obs = targets[VARIABLE].isel(cell=where[(row, col)]).sel(time=times).transpose("time", "depth").values
        for k in range(len(layers)):
            ax = axes[i][k]
            ax.plot(times, sim[:, k], lw=1.2, label="product")
            ax.plot(times, obs[:, k], ".", ms=2, label="station (targets)")
            if truth is not None:
                ax.plot(times, truth.isel(lat=row, lon=col, depth=k).sel(time=times).values, lw=0.8,
                        alpha=0.7, label="truth")  # fmt: skip
            ax.set_title(f"cell ({row}, {col}), {layers[k]}", fontsize=9)
    if not cells:
        axes[0][0].text(0.5, 0.5, "no held-out cell with skill", ha="center", transform=axes[0][0].transAxes)
    axes[0][-1].legend(fontsize="x-small", loc="best")
    fig.autofmt_xdate()
    return fig


_METHOD_ORDER = ("ealstm", "random_forest", "climatology", "persistence")


def _stations_caption(results: Mapping[str, Any]) -> str:
    st = results.get("stations", {})
    return (f"The station experiment (python -m somocloud.experiments.uscrn, docs/uscrn-experiment.md): "
            f"{st.get('selected', '?')} stations, station-grouped {results.get('settings', {}).get('n_folds', '?')}-fold "
            f"CV; per held-out station anomaly r by method and layer. Persistence reads the station's own data.")  # fmt: skip


def _stations_boxplots(results: Mapping[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    per = results["per_station"]
    methods = [m for m in _METHOD_ORDER if m in per]
    layers = sorted(per[methods[0]])
    fig, axes = plt.subplots(1, len(layers), figsize=(4.2 * len(layers), 3.6), squeeze=False, sharey=True)
    for ax, layer in zip(axes[0], layers, strict=True):
        data = [
            np.asarray([np.nan if v is None else v for v in per[m][layer]["anomaly_r"]], dtype=float)
            for m in methods
        ]
        ax.boxplot([d[np.isfinite(d)] for d in data], tick_labels=[m.replace("_", " ") for m in methods])
        ax.set_title(f"layer {layer}: anomaly r")
        ax.tick_params(axis="x", labelrotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _stations_table(results: Mapping[str, Any]) -> str:
    summary = results["summary"]
    methods = [m for m in _METHOD_ORDER if m in summary]
    rows = "".join(
        f"<tr><td>{html.escape(layer)}</td><td>{html.escape(m)}</td>"
        + "".join(f"<td>{_fmt(summary[m][layer].get(k))}</td>" for k in ("r", "anomaly_r", "ubrmsd"))
        + f"<td>{summary[m][layer].get('n_stations', '')}</td></tr>"
        for layer in sorted(summary[methods[0]])
        for m in methods
    )
    return ("<table><tr><th>layer</th><th>method</th><th>r</th><th>anomaly r</th><th>ubRMSD</th>"
            f"<th>stations</th></tr>{rows}</table>")  # fmt: skip


def _lookback_caption(curve: Mapping[str, Any]) -> str:
    memory = curve.get("memory_days")
    note = (
        f" Dotted: the synthetic truth's memory per layer ({', '.join(f'{m:g}' for m in memory)} days)."
        if memory
        else ""
    )
    return (f"{curve.get('metric', 'Skill')} when all but the last n days of each input window are "
            f"shuffled in time (SoMo.ml-EU), against n: {curve.get('description', '')}{note}")  # fmt: skip


def _lookback(curve: Mapping[str, Any]) -> Any:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    memory = curve.get("memory_days") or []
    for k, (layer, values) in enumerate(curve["layers"].items()):
        line = ax.plot(
            curve["kept_days"], [np.nan if v is None else v for v in values], marker="o", label=layer
        )
        if k < len(memory):  # the synthetic truth's memory of this layer
            ax.axvline(memory[k], color=line[0].get_color(), ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("days kept unpermuted (n)")
    ax.set_ylabel(curve.get("metric", "skill"))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# ------------------------------------------------------------------------------------------- page


def _provenance_rows(cfg: RunConfig, product: xr.Dataset) -> list[tuple[str, str]]:
    attrs = product.attrs
    manifest_url = stores.join(cfg.store("model"), "manifest.json")
    manifest = stores.read_json(manifest_url) if stores.exists(manifest_url) else {}
    inputs = attrs.get("somocloud_inputs")
    inputs = json.loads(inputs) if isinstance(inputs, str) else dict(inputs or {})
    # content ids only: a store URL may name a private bucket or a local path
    inputs = {k: v.get(provenance.CONTENT_ID) if isinstance(v, dict) else v for k, v in inputs.items()}
    rows = [
        ("run", f"{cfg.name}, product version {cfg.product_version}"),
        ("period", f"{cfg.period.start} to {cfg.period.end}"),
        ("inference mode", str(attrs.get("inference_mode"))),
        ("model content id", str(attrs.get("model_content_id") or manifest.get("content_id"))),
        ("product content id", str(attrs.get(provenance.CONTENT_ID))),
        ("somocloud version", str(attrs.get("somocloud_version"))),
        ("input content ids", json.dumps(inputs, indent=1, sort_keys=True)),
        ("config (resolved)", json.dumps(_public_config(cfg), indent=1, sort_keys=True)),
    ]
    return rows


def _public_config(cfg: RunConfig) -> dict[str, Any]:
    """The resolved config without store URLs (they may name private buckets)."""
    data = cfg.model_dump(mode="json")
    data.pop("stores", None)
    return data


def _page(
    cfg: RunConfig,
    product: xr.Dataset,
    summary: Mapping[str, Any],
    figures: Sequence[tuple[str, str, str]],
    prov: Sequence[tuple[str, str]],
    seconds: float,
    stations_html: str = "",
) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(r['split'])}</td><td>{esc(r['reference'])}</td><td>{esc(r['layer'])}</td>"
        f"<td>{r['n_cells']}</td>" + "".join(f"<td>{_fmt(r.get(m))}<br><small>{_fmt(r.get(m + '_q20'))} – "
                                             f"{_fmt(r.get(m + '_q80'))}</small></td>" for m in _TABLE_METRICS)
        + "</tr>"
        for r in summary.get("rows", [])
    )  # fmt: skip
    head = "".join(f"<th>{esc(m)}</th>" for m in _TABLE_METRICS)
    sections = "".join(
        f'<section><h2>{esc(title)}</h2><img src="figures/{esc(name)}.png" alt="{esc(title)}">'
        f"<p>{esc(caption)}</p>{stations_html if name == 'stations_experiment' else ''}</section>"
        for name, title, caption in figures
    )
    prov_rows = "".join(f"<tr><th>{esc(k)}</th><td><pre>{esc(v)}</pre></td></tr>" for k, v in prov)
    made = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{esc(cfg.publish.title or cfg.name)}: validation report</title>
<style>
body {{ font-family: sans-serif; max-width: 1300px; margin: 1em auto; padding: 0 1em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0; }} td, th {{ border: 1px solid #ccc; padding: 3px 6px; }}
img {{ max-width: 100%; }} pre {{ margin: 0; white-space: pre-wrap; font-size: 11px; }}
section {{ margin: 1.5em 0; }} small {{ color: #666; }}
</style></head>
<body data-figures="{len(figures)}">
<h1>{esc(cfg.publish.title or cfg.name)}: validation report</h1>
<p>Product <code>{esc(_public_name(cfg))}</code>, {product.sizes["time"]} days x {product.sizes["depth"]} layers x
{product.sizes["lat"]} x {product.sizes["lon"]} cells. Made {made} by somocloud in {seconds:.1f} s.</p>
<section><h2>Skill at the stations</h2>
<p>Medians over cells with the 0.2–0.8 quantile range below (evaluate's summary.json).</p>
<table><tr><th>split</th><th>reference</th><th>layer</th><th>cells</th>{head}</tr>{rows}</table></section>
{sections}
<section><h2>Provenance</h2><table>{prov_rows}</table></section>
<script>
// Marks the page once every figure has loaded (or failed), for headless checks: data-figures-ok.
window.addEventListener("load", () => {{
  const imgs = Array.from(document.images);
  const ok = imgs.filter((i) => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-figures-ok", String(ok));
}});
</script>
</body></html>
"""


_TABLE_METRICS = ("r", "anomaly_r", "ubrmsd", "nrmse")


def _public_name(cfg: RunConfig) -> str:
    """The product's file name only (a store URL may name a private bucket)."""
    return cfg.store("product").rstrip("/").rsplit("/", 1)[-1]


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def _close(fig: Any) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence numpy's all-NaN-slice warnings (sea cells are all NaN by design)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield
