"""The `targets` step: daily in-situ series → training targets on the run grid (cell × time × depth),
rescaled to the reference soil moisture, plus the provenance CSV `<targets>.provenance.csv`.

Method (SoMo.ml), with the choices this module makes where the paper leaves room:

* **Sensor depth.** A sensor's depth is the midpoint of `depth_from`..`depth_to`: a point sensor at
  0.05 m has depth 0.05; an integrating sensor over 0-0.19 m (a cosmic-ray probe) has depth 0.095.
* **Layer membership.** Layer 1 is 0 ≤ depth ≤ 0.10 m, layer 2 is 0.10 < depth ≤ 0.30 m, layer 3 is
  0.30 < depth ≤ 0.50 m: a layer's lower boundary belongs to it (a 10 cm sensor is in 0-10 cm, a 50 cm
  sensor in 30-50 cm), so a sensor never sits in two layers. A 60 cm sensor is in no layer.
* **One sensor per station and layer.** The candidates of a station for a layer are its sensors whose
  depth is in the layer, ranked by (1) whether the sensor's whole range lies inside the layer (a point
  sensor at 10 cm ranks before a 0-0.19 m probe for 0-10 cm, although the probe's midpoint is nearer
  5 cm, because the probe also measures 10-19 cm), (2) distance of the depth from the layer's mid-depth
  (5/20/40 cm: a sensor at mid-depth always wins), (3) more daily values in the period, (4) sensor
  name and file. The best candidate that can be rescaled is used; a candidate that cannot (below) is
  recorded with its reason and the next one is tried.
* **Grid assignment.** A series belongs to the run-grid cell whose area holds its station's lat/lon
  (`Grid.locate`): a station on the edge between two cells goes to the cell north / east of the
  edge, longitudes in 0-360 are accepted, and a station outside the grid is recorded as such and
  not used.
* **Reference.** The reference layers are depth-weighted into the target layer with
  `somocloud.layers.reference_weights()` (0-10 cm = 0.7·swvl1 + 0.3·swvl2, ...), in the series' cell.
* **Rescaling.** Over the overlap (days in `period.start..period.end` where both the series and the
  reference have a value) the series is mapped linearly to the reference's mean and standard
  deviation (population std, ddof=0): `(x - mean_x) / std_x * std_ref + mean_ref`, applied to every day
  of the series in the period. A series is rejected when it has no value in the period, no overlap,
  fewer than `targets.min_overlap_days` overlapping days (default 60: the paper's "two months of
  data" applied to the overlap; `ingest.min_days` applies it to the whole record), or zero variance
  (of itself or of the reference) over the overlap. Rescaled values are not clipped.
* **Averaging.** Rescaled series of different stations in one cell and layer are averaged per day over
  the series that have a value that day.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from somocloud import layers, provenance, stores
from somocloud.config import RunConfig
from somocloud.context import Context
from somocloud.grid import Grid

log = logging.getLogger(__name__)

_EPS_DEPTH = 1e-9  # depths come from 6-decimal text; midpoints may carry float noise
MIN_STD = 1e-9
"""A standard deviation (m3 m-3) at or below this counts as zero variance."""
CELL_CHUNK = 256
"""Cells per Zarr chunk of `soil_moisture` (time and depth are one chunk)."""
PROVENANCE_COLUMNS = [
    "network", "station", "sensor", "depth_from", "depth_to", "row", "col", "depth", "used", "reason",
]  # fmt: skip
"""Columns of the provenance CSV, in order (data contract)."""


def provenance_url(targets_url: str) -> str:
    """Where the provenance CSV of a `targets` store lives."""
    return targets_url.rstrip("/") + ".provenance.csv"


def sensor_depth(depth_from: float, depth_to: float) -> float:
    """The depth a sensor stands for: the midpoint of its measured range, in m."""
    return 0.5 * (depth_from + depth_to)


def in_layer(depth: float, layer: int) -> bool:
    """Whether a depth (m) lies in target layer `layer` (0-based): first layer [0, 0.1], then (top, bottom]."""
    top, bottom = layers.DEPTH_BOUNDS[layer]
    above_top = depth >= top - _EPS_DEPTH if layer == 0 else depth > top + _EPS_DEPTH
    return bool(above_top and depth <= bottom + _EPS_DEPTH)


def layer_of(depth_from: float, depth_to: float) -> int | None:
    """The target layer (0-based) holding a sensor, or None if its depth is in no layer."""
    depth = sensor_depth(depth_from, depth_to)
    return next((k for k in range(layers.N_LAYERS) if in_layer(depth, k)), None)


def layer_rank(depth_from: float, depth_to: float, layer: int) -> tuple[bool, float] | None:
    """Sort key of a sensor as a candidate for `layer` (smaller is better), None if not in the layer:
    (range straddles a layer boundary, distance of its depth from the layer's mid-depth)."""
    depth = sensor_depth(depth_from, depth_to)
    if not in_layer(depth, layer):
        return None
    top, bottom = layers.DEPTH_BOUNDS[layer]
    straddles = depth_from < top - _EPS_DEPTH or depth_to > bottom + _EPS_DEPTH
    return straddles, round(abs(depth - float(layers.DEPTHS[layer])), 9)


def reference_layer(ref: np.ndarray, layer: int) -> np.ndarray:
    """Depth-weighted reference for one target layer from `ref[..., r]` (r = swvl1..3).

    Reference layers with zero weight are left out, so their NaNs do not spread."""
    w = layers.reference_weights()[layer]
    used = np.flatnonzero(w > 0)
    return np.asarray(np.tensordot(ref[..., used], w[used], axes=([-1], [0])))


@dataclass(frozen=True)
class Rescaled:
    """Outcome of rescaling one series: `values` (None if rejected), the reason, and the overlap size."""

    values: np.ndarray | None
    reason: str
    overlap: int


def rescale(obs: np.ndarray, ref: np.ndarray, min_overlap: int = 1) -> Rescaled:
    """Map `obs` linearly to the mean and std of `ref` over the days both have (see module docstring)."""
    has_obs = np.isfinite(obs)
    if not has_obs.any():
        return Rescaled(None, "no daily values within the period", 0)
    both = has_obs & np.isfinite(ref)
    n = int(both.sum())
    if n == 0:
        return Rescaled(None, "no overlap with the reference within the period", 0)
    if n < min_overlap:
        return Rescaled(
            None, f"only {n} days overlap with the reference within the period (< {min_overlap})", n
        )
    o, r = obs[both].astype("float64"), ref[both].astype("float64")
    so, sr = o.std(), r.std()
    if so <= MIN_STD:
        return Rescaled(None, f"zero variance over the {n}-day overlap", n)
    if sr <= MIN_STD:
        return Rescaled(None, f"reference has zero variance over the {n}-day overlap", n)
    scaled = (obs.astype("float64") - o.mean()) / so * sr + r.mean()
    return Rescaled(scaled, "used", n)


@dataclass
class InSitu:
    """The `insitu` store in memory, restricted to the product period."""

    values: np.ndarray  # (series, day) float64
    network: np.ndarray
    station: np.ndarray
    sensor: np.ndarray
    source_file: np.ndarray
    depth_from: np.ndarray
    depth_to: np.ndarray
    lat: np.ndarray
    lon: np.ndarray


def load_insitu(url: str, days: pd.DatetimeIndex) -> InSitu:
    """Read the `insitu` store and put it on the period's days."""
    ds = stores.open_zarr(url, chunks=None)
    missing = [v for v in ("soil_moisture", "network", "station", "sensor", "depth_from", "depth_to",
                           "lat", "lon") if v not in ds.variables]  # fmt: skip
    if missing:
        raise ValueError(f"store insitu={url}: variables {missing} missing")
    sm = ds["soil_moisture"].reindex(time=days.values).transpose("series", "time")

    def text(name: str) -> np.ndarray:
        # str() per item: string coordinates may come back as numpy StringDType, `<U` or object.
        return np.array([str(v) for v in np.asarray(ds[name].values).ravel()], dtype=str)

    return InSitu(
        values=np.asarray(sm.values, dtype="float64"),
        network=text("network"),
        station=text("station"),
        sensor=text("sensor"),
        source_file=text("source_file") if "source_file" in ds.variables else text("sensor"),
        depth_from=np.asarray(ds["depth_from"].values, dtype="float64"),
        depth_to=np.asarray(ds["depth_to"].values, dtype="float64"),
        lat=np.asarray(ds["lat"].values, dtype="float64"),
        lon=np.asarray(ds["lon"].values, dtype="float64"),
    )


def load_reference(
    url: str, grid: Grid, rows: np.ndarray, cols: np.ndarray, days: pd.DatetimeIndex
) -> np.ndarray:
    """Reference soil moisture at the given cells on the period's days: (cell, day, target layer)."""
    ds = stores.open_zarr(url)
    for name in (*layers.REFERENCE_VARIABLES, "lat", "lon", "time"):
        if name not in ds.variables:
            raise ValueError(f"store reference_sm={url}: variable {name!r} missing")
    for name, expected in (("lat", grid.lat), ("lon", grid.lon)):
        got = np.asarray(ds[name].values, dtype="float64")
        if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-6):
            raise ValueError(
                f"store reference_sm={url}: coordinate {name!r} is not the run grid's "
                f"({got.size} values {got[:1]}..{got[-1:]}, expected {expected.size} from "
                f"{expected[0]} to {expected[-1]} ascending)"
            )
    if rows.size == 0:
        return np.zeros((0, len(days), layers.N_LAYERS), dtype="float32")
    sel = ds[list(layers.REFERENCE_VARIABLES)].isel(
        lat=xr.DataArray(rows, dims="cell"), lon=xr.DataArray(cols, dims="cell")
    )
    sel = sel.sel(time=slice(days[0], days[-1])).load().reindex(time=days.values)
    covered = int(np.isin(days.values, ds["time"].values).sum())
    if covered < len(days):
        log.warning("targets: reference_sm covers %d of the %d days of the period", covered, len(days))
    ref = np.stack([sel[v].transpose("cell", "time").values for v in layers.REFERENCE_VARIABLES], axis=-1)
    del sel
    # float32 like the store: (cells, days, layers) is the largest array of the step.
    return np.stack([reference_layer(ref, k).astype("float32") for k in range(layers.N_LAYERS)], axis=-1)


def rank_candidates(
    ins: InSitu, members: list[int], layer: int, n_days: np.ndarray
) -> tuple[list[int], dict[int, str]]:
    """A station's series (`members`) in order of preference for `layer`, and why the others are not
    candidates (their depth is outside the layer). See the module docstring for the ranking."""
    keyed = []
    outside: dict[int, str] = {}
    top, bottom = layers.DEPTH_BOUNDS[layer]
    for m in members:
        rank = layer_rank(float(ins.depth_from[m]), float(ins.depth_to[m]), layer)
        if rank is None:
            depth = sensor_depth(float(ins.depth_from[m]), float(ins.depth_to[m]))
            outside[m] = f"sensor depth {depth:.3f} m is outside layer {top:g}-{bottom:g} m"
        else:
            keyed.append((*rank, -int(n_days[m]), str(ins.sensor[m]), str(ins.source_file[m]), m))
    return [key[-1] for key in sorted(keyed)], outside


def build_targets(cfg: RunConfig, ctx: Context) -> dict[str, str]:
    """The `targets` step (see the module docstring for the method).

    Returns:
        {"targets": Zarr URL, "targets_provenance": CSV URL}.

    Raises:
        ValueError: a malformed input store, or no series usable as a target (the provenance CSV,
            with every reason, is written first).
    """
    insitu_url, ref_url, out_url = cfg.store("insitu"), cfg.store("reference_sm"), cfg.store("targets")
    csv_url = provenance_url(out_url)
    grid = Grid.from_config(cfg.grid)
    days = pd.date_range(cfg.period.start, cfg.period.end, freq="D")

    ins = load_insitu(insitu_url, days)
    row, col = grid.locate(ins.lat, ins.lon)
    inside = row >= 0
    cells = sorted({(int(r), int(c)) for r, c in zip(row[inside], col[inside], strict=True)})
    cell_index = {rc: i for i, rc in enumerate(cells)}
    ref = load_reference(
        ref_url,
        grid,
        np.array([r for r, _ in cells], dtype=int),
        np.array([c for _, c in cells], dtype=int),
        days,
    )

    n_series = ins.values.shape[0]
    reasons = np.full((n_series, layers.N_LAYERS), "", dtype=object)
    used = np.zeros((n_series, layers.N_LAYERS), dtype=bool)
    # Running sum and count per (cell, layer) actually used: memory grows with targets, not with the grid.
    sums: dict[tuple[int, int], np.ndarray] = {}
    counts: dict[tuple[int, int], np.ndarray] = {}
    n_days = np.isfinite(ins.values).sum(axis=1)

    for i in np.flatnonzero(~inside):
        reasons[i, :] = f"outside the run grid (lat {ins.lat[i]}, lon {ins.lon[i]})"
    stations: dict[tuple[str, str], list[int]] = {}
    for i in np.flatnonzero(inside):
        stations.setdefault((str(ins.network[i]), str(ins.station[i])), []).append(int(i))

    for members in stations.values():
        for k in range(layers.N_LAYERS):
            ranked, outside = rank_candidates(ins, members, k, n_days)
            for m, why in outside.items():
                reasons[m, k] = why
            chosen: int | None = None
            for m in ranked:
                if chosen is not None:
                    reasons[m, k] = (
                        f"not selected: sensor {str(ins.sensor[chosen])!r} "
                        f"({ins.depth_from[chosen]:g}-{ins.depth_to[chosen]:g} m) ranks higher at this station"
                    )
                    continue
                c = cell_index[(int(row[m]), int(col[m]))]
                result = rescale(ins.values[m], ref[c, :, k], cfg.targets.min_overlap_days)
                reasons[m, k] = result.reason
                if result.values is not None:
                    chosen = m
                    used[m, k] = True
                    ok = np.isfinite(result.values)
                    total = sums.setdefault((c, k), np.zeros(len(days)))
                    count = counts.setdefault((c, k), np.zeros(len(days), dtype=np.int32))
                    total[ok] += result.values[ok]
                    count[ok] += 1

    table = pd.DataFrame(
        {
            "network": ins.network,
            "station": ins.station,
            "sensor": ins.sensor,
            "depth_from": ins.depth_from,
            "depth_to": ins.depth_to,
            "row": row,
            "col": col,
        }
    )
    table = pd.concat(
        [
            table.assign(depth=layers.DEPTHS[k], used=used[:, k], reason=reasons[:, k])
            for k in range(layers.N_LAYERS)
        ]
    )
    table = table.sort_values(
        ["network", "station", "depth", "depth_from", "depth_to", "sensor"], kind="stable"
    )
    stores.write_text(csv_url, table[PROVENANCE_COLUMNS].to_csv(index=False))

    has_data = used.any(axis=1)
    n_used = int(used.sum())
    used_cells = sorted({c for c, _ in sums})
    per_layer = ", ".join(str(sum(1 for _, k in sums if k == layer)) for layer in range(layers.N_LAYERS))
    summary = (
        f"{n_series} series, {int(has_data.sum())} used ({n_used} series-layers); "
        f"{len(used_cells)} cells with targets (per layer {per_layer})"
    )
    if not used_cells:
        raise ValueError(
            f"targets: no usable target series from store insitu={insitu_url} ({summary}); see {csv_url}"
        )

    out_index = {c: i for i, c in enumerate(used_cells)}
    mean = np.full((len(used_cells), len(days), layers.N_LAYERS), np.nan, dtype="float32")
    for (c, k), total in sums.items():
        with np.errstate(invalid="ignore", divide="ignore"):
            mean[out_index[c], :, k] = np.where(counts[(c, k)] > 0, total / counts[(c, k)], np.nan)
    cell_rc = np.array([cells[c] for c in used_cells], dtype=np.int64)
    ds = xr.Dataset(
        {
            "soil_moisture": (
                ("cell", "time", "depth"),
                mean,
                {
                    "units": "m3 m-3",
                    "long_name": "in-situ soil moisture rescaled to the reference, cell mean",
                },
            )
        },
        coords={
            "cell": ("cell", np.arange(len(used_cells))),
            "time": ("time", days.values.astype("datetime64[ns]")),
            "depth": (
                "depth",
                layers.DEPTHS.copy(),
                {"units": "m", "positive": "down", "long_name": "layer mid-depth"},
            ),
            "row": ("cell", cell_rc[:, 0]),
            "col": ("cell", cell_rc[:, 1]),
            "lat": ("cell", grid.lat[cell_rc[:, 0]], {"units": "degrees_north"}),
            "lon": ("cell", grid.lon[cell_rc[:, 1]], {"units": "degrees_east"}),
        },
    )
    ds.attrs.update(
        provenance.provenance_attrs(cfg, "targets", {"insitu": insitu_url, "reference_sm": ref_url})
    )
    chunks = (min(ds.sizes["cell"], CELL_CHUNK), ds.sizes["time"], layers.N_LAYERS)
    stores.write_zarr(ds, out_url, encoding={"soil_moisture": {"chunks": chunks}})
    log.info("targets: %s; provenance %s", summary, csv_url)
    return {"targets": out_url, "targets_provenance": csv_url}
