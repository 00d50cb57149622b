"""Training targets: layer membership and sensor choice, reference weighting, rescaling, cell averaging,
the provenance CSV, and the whole ingest → targets path on memory:// stores."""

from __future__ import annotations

import io
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somocloud import layers, stores
from somocloud.config import RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.insitu import ingest
from somocloud.targets import (
    PROVENANCE_COLUMNS,
    InSitu,
    build_targets,
    in_layer,
    layer_of,
    rank_candidates,
    reference_layer,
    rescale,
)

START, END = "2020-01-01", "2020-04-30"  # 121 days
DAYS = pd.date_range(START, END, freq="D")


def run_config(root: str, min_overlap_days: int = 60, **sections: dict[str, Any]) -> RunConfig:
    return config_from_dict(
        {
            "grid": {"resolution": 1.0, "lat_min": 40, "lat_max": 44, "lon_min": -100, "lon_max": -96},
            "period": {"start": START, "end": END},
            "stores": {"root": root},
            "targets": {"min_overlap_days": min_overlap_days},
            **sections,
        }
    )


def reference_fields(cfg: RunConfig, n_days: int | None = None) -> dict[str, np.ndarray]:
    """Smooth, distinct daily swvl1..3 on the run grid (time, lat, lon), one extra day before the period."""
    grid = Grid.from_config(cfg.grid)
    n = n_days or len(DAYS) + 1
    t = np.arange(n)[:, None, None]
    i = np.arange(grid.nlat)[None, :, None]
    j = np.arange(grid.nlon)[None, None, :]
    fields = {
        "swvl1": 0.20 + 0.05 * np.sin(t / 9.0 + i) + 0.01 * j,
        "swvl2": 0.25 + 0.03 * np.cos(t / 15.0 + j) + 0 * i,
        "swvl3": 0.30 + 0.02 * np.sin(t / 30.0) + 0.005 * i + 0 * j,
    }
    return {k: np.broadcast_to(v, (n, grid.nlat, grid.nlon)).copy() for k, v in fields.items()}


def write_reference(cfg: RunConfig, fields: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    grid = Grid.from_config(cfg.grid)
    fields = fields or reference_fields(cfg)
    n = next(iter(fields.values())).shape[0]
    time = pd.date_range(pd.Timestamp(START) - pd.Timedelta(days=1), periods=n, freq="D")
    ds = xr.Dataset(
        {k: (("time", "lat", "lon"), v.astype("float32")) for k, v in fields.items()},
        coords={"time": time.values, "lat": grid.lat, "lon": grid.lon},
    )
    stores.write_zarr(ds, cfg.store("reference_sm"))
    # What the targets step sees: float32 values, period days only.
    return {k: v.astype("float32").astype("float64")[1 : 1 + len(DAYS)] for k, v in fields.items()}


INSITU_COORDS: list[tuple[str, Any, Any]] = [
    ("network", "NET", object),
    ("station", "ST", object),
    ("sensor", "probe", object),
    ("source_file", "f.stm", object),
    ("lat", 40.5, "float64"),
    ("lon", -99.5, "float64"),
    ("depth_from", 0.05, "float64"),
    ("depth_to", 0.05, "float64"),
]
"""Per-series coordinates of the `insitu` store with the defaults `write_insitu` uses."""


def write_insitu(cfg: RunConfig, series: list[dict[str, Any]], time: pd.DatetimeIndex = DAYS) -> None:
    """An `insitu` store in the contract layout; each item: metadata + `values` on `time` (default DAYS)."""
    ds = xr.Dataset(
        {"soil_moisture": (("series", "time"), np.array([s["values"] for s in series], dtype="float32"))},
        coords={
            "series": np.arange(len(series)),
            "time": time.values,
            **{
                key: ("series", np.asarray([s.get(key, default) for s in series], dtype=dtype))
                for key, default, dtype in INSITU_COORDS
            },
        },
    )
    stores.write_zarr(ds, cfg.store("insitu"))


def target_ref(ref: dict[str, np.ndarray], row: int, col: int, layer: int) -> np.ndarray:
    """Hand-written depth weighting (data contract): 0-10 = (7·s1 + 3·s2)/10, 10-30 = (18·s2 + 2·s3)/20."""
    s1, s2, s3 = (ref[k][:, row, col] for k in ("swvl1", "swvl2", "swvl3"))
    return [(7 * s1 + 3 * s2) / 10, (18 * s2 + 2 * s3) / 20, s3][layer]


def read_provenance(cfg: RunConfig) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(stores.read_text(cfg.store("targets") + ".provenance.csv")))


# --- layers and sensor choice ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth_from", "depth_to", "layer"),
    [
        (0.0, 0.0, 0),
        (0.05, 0.05, 0),
        (0.10, 0.10, 0),  # a layer's lower boundary belongs to it
        (0.0, 0.19, 0),  # a range sits at its midpoint, 0.095
        (0.0, 0.21, 1),  # midpoint 0.105
        (0.100001, 0.100001, 1),
        (0.20, 0.20, 1),
        (0.30, 0.30, 1),
        (0.2, 0.4, 1),  # midpoint 0.3 (computed with float noise) stays in layer 2
        (0.40, 0.40, 2),
        (0.50, 0.50, 2),
        (0.500001, 0.500001, None),
        (0.60, 0.60, None),
    ],
)
def test_layer_membership(depth_from: float, depth_to: float, layer: int | None) -> None:
    assert layer_of(depth_from, depth_to) == layer
    assert sum(in_layer(0.5 * (depth_from + depth_to), k) for k in range(3)) == (layer is not None)


def insitu_table(sensors: list[tuple[str, float, float]], n_days: list[int] | None = None) -> InSitu:
    n = len(sensors)
    values = np.full((n, 10), np.nan)
    for i, d in enumerate(n_days or [10] * n):
        values[i, :d] = 0.2
    return InSitu(
        values=values,
        network=np.array(["NET"] * n),
        station=np.array(["ST"] * n),
        sensor=np.array([s[0] for s in sensors]),
        source_file=np.array([f"{s[0]}.stm" for s in sensors]),
        depth_from=np.array([s[1] for s in sensors]),
        depth_to=np.array([s[2] for s in sensors]),
        lat=np.zeros(n),
        lon=np.zeros(n),
    )


def ranked_names(ins: InSitu, layer: int) -> list[str]:
    n_days = np.isfinite(ins.values).sum(axis=1)
    order, _ = rank_candidates(ins, list(range(len(ins.sensor))), layer, n_days)
    return [str(ins.sensor[i]) for i in order]


def test_mid_depth_sensor_preferred() -> None:
    ins = insitu_table([("cosmic", 0.0, 0.19), ("p10", 0.10, 0.10), ("p5", 0.05, 0.05), ("p2", 0.02, 0.02)])
    assert ranked_names(ins, 0) == ["p5", "p2", "p10", "cosmic"]


def test_point_sensor_at_10cm_chosen_over_0_19_range_for_layer_1() -> None:
    # The range's midpoint (0.095) is nearer 5 cm, but it reaches below the layer; the 10 cm probe does not.
    ins = insitu_table([("cosmic", 0.0, 0.19), ("p10", 0.10, 0.10)])
    assert ranked_names(ins, 0) == ["p10", "cosmic"]
    assert ranked_names(ins, 1) == []


def test_deep_layer_takes_50cm_but_never_60cm() -> None:
    ins = insitu_table([("p60", 0.6, 0.6), ("p50", 0.5, 0.5), ("p30", 0.3, 0.3)])
    assert ranked_names(ins, 2) == ["p50"]  # 30 cm belongs to 10-30 cm
    assert ranked_names(ins, 1) == ["p30"]
    _, outside = rank_candidates(ins, [0], 2, np.array([10]))
    assert outside == {0: "sensor depth 0.600 m is outside layer 0.3-0.5 m"}
    ins = insitu_table([("p50", 0.5, 0.5), ("p40", 0.4, 0.4), ("p35", 0.35, 0.35)])
    assert ranked_names(ins, 2) == ["p40", "p35", "p50"]


def test_equal_depths_ranked_by_record_length_then_name() -> None:
    ins = insitu_table([("b", 0.05, 0.05), ("a", 0.05, 0.05), ("c", 0.05, 0.05)], n_days=[5, 5, 9])
    assert ranked_names(ins, 0) == ["c", "a", "b"]


# --- reference weighting and rescaling -----------------------------------------------------------------


def test_reference_layer_weights_and_nan_isolation() -> None:
    ref = np.array([[0.1, 0.2, np.nan], [0.3, 0.1, 0.4]])  # (day, swvl1..3)
    np.testing.assert_allclose(reference_layer(ref, 0), [(7 * 0.1 + 3 * 0.2) / 10, (7 * 0.3 + 3 * 0.1) / 10])
    out1 = reference_layer(ref, 1)
    assert np.isnan(out1[0]) and out1[1] == pytest.approx((18 * 0.1 + 2 * 0.4) / 20)
    np.testing.assert_allclose(reference_layer(ref, 2), [np.nan, 0.4])
    np.testing.assert_allclose(layers.reference_weights().sum(axis=1), 1.0)


def test_rescaled_series_has_reference_mean_and_std_on_overlap() -> None:
    rng = np.random.default_rng(1)
    obs = 0.3 + 0.1 * rng.standard_normal(200)
    ref = 0.2 + 0.02 * rng.standard_normal(200)
    obs[:20] = np.nan  # gaps in the observations
    ref[180:] = np.nan  # reference missing at the end: not part of the overlap
    out = rescale(obs, ref, min_overlap=60)
    assert out.reason == "used" and out.overlap == 160 and out.values is not None
    both = np.isfinite(obs) & np.isfinite(ref)
    assert out.values[both].mean() == pytest.approx(ref[both].mean(), abs=1e-12)
    assert out.values[both].std() == pytest.approx(ref[both].std(), abs=1e-12)
    assert np.isnan(out.values[:20]).all() and np.isfinite(out.values[180:]).all()  # applied to every obs day
    np.testing.assert_allclose(np.corrcoef(out.values[both], obs[both])[0, 1], 1.0)


def test_rescale_rejections() -> None:
    ref = np.linspace(0.1, 0.3, 100)
    assert rescale(np.full(100, np.nan), ref).reason == "no daily values within the period"
    obs = np.full(100, np.nan)
    obs[:50] = np.linspace(0.2, 0.4, 50)
    ref_late = ref.copy()
    ref_late[:50] = np.nan
    assert rescale(obs, ref_late).reason == "no overlap with the reference within the period"
    assert rescale(obs, ref, min_overlap=60).reason.startswith("only 50 days overlap")
    assert rescale(np.full(100, 0.25), ref).reason == "zero variance over the 100-day overlap"
    assert rescale(obs, np.full(100, 0.3)).reason == "reference has zero variance over the 50-day overlap"


# --- the targets step ---------------------------------------------------------------------------------


def test_build_targets_rescales_selects_averages_and_records_provenance(tmp_path: Path) -> None:
    cfg = run_config(str(tmp_path))
    ref = write_reference(cfg)
    grid = Grid.from_config(cfg.grid)
    rng = np.random.default_rng(0)
    r00 = target_ref(ref, 0, 0, 0)  # cell (0, 0) holds stations A and B
    a = 2.0 * r00 + 0.1  # linear in the reference → rescales to it exactly
    b = 0.6 - r00  # anti-correlated → rescales to 2·mean − ref, so the A/B average is the mean
    b[:10] = np.nan
    noisy = 0.25 + 0.05 * rng.standard_normal(len(DAYS))
    short = np.full(len(DAYS), np.nan)
    short[:59] = noisy[:59]
    series: list[dict[str, Any]] = [
        {"station": "A", "sensor": "a5", "values": a},
        {"station": "A", "sensor": "a10", "depth_from": 0.1, "depth_to": 0.1, "values": noisy},
        {"station": "A", "sensor": "a50", "depth_from": 0.5, "depth_to": 0.5, "values": noisy},
        {"station": "B", "sensor": "b5", "lat": 40.2, "lon": -99.9, "values": b},
        {"station": "C", "sensor": "flat", "lat": 42.5, "lon": -97.5, "values": np.full(len(DAYS), 0.3)},
        {"station": "C", "sensor": "c5", "lat": 42.5, "lon": -97.5, "values": short},
        {
            "station": "C",
            "sensor": "c20",
            "lat": 42.5,
            "lon": -97.5,
            "depth_from": 0.2,
            "depth_to": 0.2,
            "values": noisy,
        },
        {"station": "D", "sensor": "far", "lat": 10.0, "lon": 5.0, "values": noisy},
        {
            "station": "E",
            "sensor": "e60",
            "lat": 43.5,
            "lon": -96.5,
            "depth_from": 0.6,
            "depth_to": 0.6,
            "values": noisy,
        },
    ]
    write_insitu(cfg, series)
    out = build_targets(cfg, Context(show_progress=False))

    ds = stores.open_zarr(out["targets"], chunks=None)
    assert ds.soil_moisture.dims == ("cell", "time", "depth")
    assert ds.soil_moisture.dtype == np.float32
    np.testing.assert_allclose(ds.depth.values, [0.05, 0.2, 0.4])
    assert pd.Timestamp(ds.time.values[0]) == pd.Timestamp(START) and ds.sizes["time"] == len(DAYS)
    assert list(zip(ds.row.values.tolist(), ds.col.values.tolist(), strict=True)) == [(0, 0), (2, 2)]
    np.testing.assert_allclose(ds.lat.values, grid.lat[[0, 2]])
    np.testing.assert_allclose(ds.lon.values, grid.lon[[0, 2]])
    assert ds.attrs["somocloud_step"] == "targets"

    sm = ds.soil_moisture.values.astype("float64")
    # Cell (0,0), layer 1: days 0-9 only A (= reference); afterwards the A/B average = reference mean over B's overlap.
    mean_b = r00[10:].mean()
    expected = np.where(np.arange(len(DAYS)) < 10, r00, (r00 + (2 * mean_b - r00)) / 2)
    expected[:10] = r00[:10]
    np.testing.assert_allclose(sm[0, :, 0], expected, atol=2e-6)
    np.testing.assert_allclose(sm[0, 10:, 0], mean_b, atol=2e-6)
    # Layer 3 of cell (0,0): the 50 cm sensor, rescaled to swvl3 there → exactly its mean and std.
    r3 = target_ref(ref, 0, 0, 2)
    assert sm[0, :, 2].mean() == pytest.approx(r3.mean(), abs=1e-6)
    assert sm[0, :, 2].std() == pytest.approx(r3.std(), abs=1e-6)
    assert np.isnan(sm[0, :, 1]).all()  # the 10 cm sensor serves 0-10 cm only (and is not chosen there)
    # Cell (2,2): layer 2 from c20; layer 1 has only a flat and a too-short series → none.
    assert np.isnan(sm[1, :, 0]).all()
    r2 = target_ref(ref, 2, 2, 1)
    assert sm[1, :, 1].mean() == pytest.approx(r2.mean(), abs=1e-6)
    assert sm[1, :, 1].std() == pytest.approx(r2.std(), abs=1e-6)

    prov = read_provenance(cfg)
    assert list(prov.columns) == PROVENANCE_COLUMNS
    assert len(prov) == 3 * len(series)
    reason = {(r.sensor, r.depth): r.reason for r in prov.itertuples()}
    used = {(r.sensor, r.depth) for r in prov.itertuples() if r.used}
    assert used == {("a5", 0.05), ("b5", 0.05), ("a50", 0.4), ("c20", 0.2)}
    assert reason[("a10", 0.05)] == "not selected: sensor 'a5' (0.05-0.05 m) ranks higher at this station"
    assert reason[("a10", 0.2)] == "sensor depth 0.100 m is outside layer 0.1-0.3 m"
    assert reason[("flat", 0.05)] == f"zero variance over the {len(DAYS)}-day overlap"
    assert reason[("c5", 0.05)].startswith("only 59 days overlap")
    assert reason[("far", 0.05)].startswith("outside the run grid")
    assert reason[("e60", 0.4)] == "sensor depth 0.600 m is outside layer 0.3-0.5 m"
    far = prov[prov.sensor == "far"].iloc[0]
    assert (far.row, far.col) == (-1, -1)
    assert (prov[prov.sensor == "b5"].iloc[0].row, prov[prov.sensor == "b5"].iloc[0].col) == (0, 0)


def test_build_targets_rejects_off_grid_reference(tmp_path: Path) -> None:
    cfg = run_config(str(tmp_path))
    write_insitu(cfg, [{"values": np.linspace(0.1, 0.3, len(DAYS))}])
    grid = Grid.from_config(cfg.grid)
    ds = xr.Dataset(
        {k: (("time", "lat", "lon"), v.astype("float32")) for k, v in reference_fields(cfg).items()},
        coords={
            "time": pd.date_range(START, periods=len(DAYS) + 1).values,
            "lat": grid.lat - 1.0,
            "lon": grid.lon,
        },
    )
    stores.write_zarr(ds, cfg.store("reference_sm"))
    with pytest.raises(ValueError, match=r"store reference_sm=.*coordinate 'lat'"):
        build_targets(cfg, Context(show_progress=False))


def test_build_targets_fails_clearly_when_nothing_is_usable(tmp_path: Path) -> None:
    cfg = run_config(str(tmp_path))
    write_reference(cfg)
    write_insitu(cfg, [{"values": np.full(len(DAYS), 0.2)}])
    with pytest.raises(ValueError, match="no usable target series"):
        build_targets(cfg, Context(show_progress=False))
    prov = read_provenance(cfg)
    assert prov.reason.tolist()[0] == f"zero variance over the {len(DAYS)}-day overlap"


def stm(
    network: str, station: str, lat: float, lon: float, depth: float, values: np.ndarray, eol: str
) -> tuple[str, bytes]:
    """An ISMN header+values file with 8 records a day (3-hourly) of `values[day]` ± 0.01."""
    name = f"XX_{network}_{station}_sm_{depth:.6f}_{depth:.6f}_Probe-1_20200101_20200430.stm"
    lines = [f"XX {network} {station} {lat:.5f} {lon:.5f} 100.00 {depth:.2f} {depth:.2f} Probe 1"]
    for day, v in zip(DAYS, values, strict=True):
        for h in range(8):
            lines.append(
                f"{day + pd.Timedelta(hours=3 * h):%Y/%m/%d %H:%M} {v + (0.01 if h % 2 else -0.01):.4f} G M"
            )
    lines.insert(5, "2020/01/01 01:30 0.2000 D03 M")  # a flagged value, dropped by QC
    return f"{network}/{station}/{name}", (eol.join(lines) + eol).encode()


def test_ingest_and_targets_with_every_store_on_memory() -> None:
    root = f"memory://targets-test-{uuid.uuid4().hex}"
    cfg = run_config(root)
    ref = write_reference(cfg)
    t = np.arange(len(DAYS))
    files = [
        stm("NET", "S1", 40.5, -99.5, 0.05, 0.25 + 0.05 * np.sin(t / 7.0), "\r\n"),
        stm("NET", "S1", 40.5, -99.5, 0.20, 0.30 + 0.04 * np.cos(t / 11.0), "\r"),
        stm("NET", "S2", 41.5, -98.5, 0.40, 0.35 + 0.02 * np.sin(t / 5.0), "\n"),
    ]
    for rel, data in files:
        stores.write_bytes(stores.join(cfg.store("ismn"), rel), data)
    stores.write_bytes(
        stores.join(cfg.store("ismn"), "NET", "S3", "XX_NET_S3_sm_0.050000_0.050000_P_20200101_20200430.stm"),
        b"\x00garbage",
    )

    written = ingest(cfg, Context(show_progress=False)) | build_targets(cfg, Context(show_progress=False))
    assert all(url.startswith("memory://") for url in written.values())
    insitu = stores.open_zarr(written["insitu"], chunks=None)
    assert insitu.sizes["series"] == 3
    np.testing.assert_allclose(insitu.soil_moisture.values[0], 0.25 + 0.05 * np.sin(t / 7.0), atol=1e-4)
    assert [q["file"] for q in stores.read_json(written["insitu_quarantine"])] == [
        "NET/S3/XX_NET_S3_sm_0.050000_0.050000_P_20200101_20200430.stm"
    ]

    ds = stores.open_zarr(written["targets"], chunks=None)
    assert list(zip(ds.row.values.tolist(), ds.col.values.tolist(), strict=True)) == [(0, 0), (1, 1)]
    sm = ds.soil_moisture.values.astype("float64")
    for cell, (row, col), layer in [(0, (0, 0), 0), (0, (0, 0), 1), (1, (1, 1), 2)]:
        r = target_ref(ref, row, col, layer)
        assert sm[cell, :, layer].mean() == pytest.approx(r.mean(), abs=1e-6)
        assert sm[cell, :, layer].std() == pytest.approx(r.std(), abs=1e-6)
    assert np.isnan(sm[0, :, 2]).all() and np.isnan(sm[1, :, :2]).all()
    assert read_provenance(cfg).used.sum() == 3
