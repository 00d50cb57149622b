"""Each target-building rule pinned with hand-computed cases: QC and daily means (through the public
`somocloud.insitu` API), layer selection and depth placement, grid assignment, depth weighting,
rescaling over the overlap within the period, averaging and the rejection reasons.

Shared helpers (config, reference and `insitu` store writers) come from `test_targets`."""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pandas as pd
import pytest

from somocloud import layers, stores
from somocloud.config import IngestConfig
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.insitu import process_file
from somocloud.insitu.qc import DailySeries
from somocloud.targets import build_targets, layer_of, layer_rank, rescale

from .test_targets import (
    DAYS,
    END,
    START,
    insitu_table,
    ranked_names,
    read_provenance,
    reference_fields,
    run_config,
    target_ref,
    write_insitu,
    write_reference,
)

# --- QC and daily means, through the file → daily series API of `somocloud.insitu` -----------------


def qc_file(records: list[str], **ingest: Any) -> DailySeries:
    """Daily series of one header+values file holding `records` (written to a memory:// store)."""
    name = "NET/ST/XX_NET_ST_sm_0.050000_0.050000_Probe_20200101_20200630.stm"
    url = stores.join(f"memory://qc-{uuid.uuid4().hex}", name)
    header = "XX NET ST 40.50000 -99.50000 100.00 0.05 0.05 Probe"
    stores.write_bytes(url, ("\n".join([header, *records]) + "\n").encode())
    result = process_file(url, name, IngestConfig(**({"min_days": 1} | ingest)))
    assert len(result.series) == 1, result.rejected
    return result.series[0]


def day(date: str, values: list[str], flags: list[str] | None = None) -> list[str]:
    """Records at 00:00, 01:00, ... of `date` with the given value texts and flags (default all 'G')."""
    flags = flags or ["G"] * len(values)
    return [f"{date} {h:02d}:00 {v} {f} M" for h, (v, f) in enumerate(zip(values, flags, strict=True))]


def test_day_count_is_taken_after_qc() -> None:
    # Six records each day; on day 2 one is flagged, on day 3 one is -9999 with flag G, on day 4 one is
    # out of range: five valid values left → no daily mean. Day 1 keeps all six: mean 0.25.
    six = ["0.2000", "0.3000", "0.2000", "0.3000", "0.2000", "0.3000"]
    recs = (
        day("2020/01/01", six)
        + day("2020/01/02", six, ["G", "G", "D03", "G", "G", "G"])
        + day("2020/01/03", [*six[:5], "-9999"])
        + day("2020/01/04", [*six[:5], "1.0500"])
    )
    d = qc_file(recs)
    assert d.daily.to_dict() == {pd.Timestamp("2020-01-01"): pytest.approx(0.25)}
    assert (d.counts.total, d.counts.bad_flag, d.counts.missing, d.counts.out_of_range) == (24, 1, 1, 1)


def test_value_range_bounds_and_quoted_combined_flags() -> None:
    # 0 and 1 are possible volume fractions; anything beyond is not, whatever its flag says. A quoted
    # combined flag ("C02,D04", as in ISMN CSVs) is not 'G'; with G and C02 and D04 accepted it is kept.
    # Without the two bounds the day would have 4 valid values and no mean.
    vals = ["0.0000", "1.0000", "-0.0001", "1.0001", "0.3000", "0.3000", "0.3000", "0.3000", "0.3000"]
    flags = ["G"] * 8 + ['"C02,D04"']
    d = qc_file(day("2020/01/01", vals, flags))
    assert d.daily.iloc[0] == pytest.approx((0.0 + 1.0 + 4 * 0.3) / 6)
    assert (d.counts.bad_flag, d.counts.out_of_range) == (1, 2)
    d = qc_file(day("2020/01/01", vals, flags), quality_flags=["G", "C02", "D04"])
    assert d.daily.iloc[0] == pytest.approx((0.0 + 1.0 + 5 * 0.3) / 7)
    assert d.counts.bad_flag == 0


def test_two_months_means_sixty_daily_values_not_a_sixty_day_span() -> None:
    # 30 days in January and 30 in June: 60 daily values over a 6-month span → kept; one day less → not.
    six = ["0.2000"] * 6
    jan = [r for k in range(30) for r in day(f"2020/01/{k + 1:02d}", six)]
    jun = [r for k in range(30) for r in day(f"2020/06/{k + 1:02d}", six)]
    assert qc_file(jan + jun, min_days=60).kept
    short = qc_file(jan + jun[:-6], min_days=60)
    assert len(short.daily) == 59 and not short.kept


# --- layer selection and depth placement --------------------------------------------------------------


@pytest.mark.parametrize(
    ("depth_from", "depth_to", "layer", "straddles", "distance"),
    [
        (0.00, 0.19, 0, True, 0.045),  # cosmic-ray probe (COSMOS ARM-1): midpoint 0.095, reaches 19 cm
        (0.00, 0.21, 1, True, 0.095),  # COSMOS Barrow-ARM: midpoint 0.105 → 10-30 cm, reaches above 10 cm
        (0.00, 0.10, 0, False, 0.0),  # a range filling the layer sits at its mid-depth
        (0.10, 0.10, 0, False, 0.05),  # on the 10 cm boundary: the upper layer's lower edge
        (0.00, 0.00, 0, False, 0.05),
        (0.05, 0.15, 0, True, 0.05),  # midpoint exactly on the boundary
        (0.10, 0.30, 1, False, 0.0),
        (0.25, 0.35, 1, True, 0.10),  # midpoint 0.30 → 10-30 cm
        (0.30, 0.30, 1, False, 0.10),
        (0.30, 0.50, 2, False, 0.0),
        (0.50, 0.50, 2, False, 0.10),
        (0.45, 0.55, 2, True, 0.10),  # midpoint 0.50 (float noise) stays in 30-50 cm
        (0.40, 0.70, None, None, None),  # midpoint 0.55: no layer
        (-0.05, -0.05, None, None, None),  # above ground
    ],
)
def test_depth_placement(
    depth_from: float, depth_to: float, layer: int | None, straddles: bool | None, distance: float | None
) -> None:
    assert layer_of(depth_from, depth_to) == layer
    for k in range(layers.N_LAYERS):
        rank = layer_rank(depth_from, depth_to, k)
        if k == layer:
            assert rank == (straddles, pytest.approx(distance, abs=1e-9))
        else:
            assert rank is None


def test_range_inside_layer_ties_with_point_at_mid_depth() -> None:
    # 0-0.10 m and a 5 cm point: both inside 0-10 cm at distance 0 → more daily values, then the name.
    ins = insitu_table([("range", 0.0, 0.1), ("point", 0.05, 0.05)], n_days=[9, 8])
    assert ranked_names(ins, 0) == ["range", "point"]
    ins = insitu_table([("b-range", 0.0, 0.1), ("a-point", 0.05, 0.05)])
    assert ranked_names(ins, 0) == ["a-point", "b-range"]


def test_equal_distance_above_and_below_mid_depth() -> None:
    # 15 and 25 cm are both 5 cm from 20 cm (float noise aside): record length decides, then the name.
    ins = insitu_table([("s15", 0.15, 0.15), ("s25", 0.25, 0.25)], n_days=[7, 9])
    assert ranked_names(ins, 1) == ["s25", "s15"]
    ins = insitu_table([("s25", 0.25, 0.25), ("s15", 0.15, 0.15)])
    assert ranked_names(ins, 1) == ["s15", "s25"]


def test_probe_reaching_into_another_layer_ranks_after_any_sensor_inside() -> None:
    # For 10-30 cm: a 0.18-0.22 m range (inside, at mid-depth), then a 29 cm point (inside, 9 cm off),
    # then the 0-0.21 m probe (9.5 cm off, and it reaches up to 0 cm).
    ins = insitu_table([("barrow", 0.0, 0.21), ("p29", 0.29, 0.29), ("r18-22", 0.18, 0.22)])
    assert ranked_names(ins, 1) == ["r18-22", "p29", "barrow"]
    # Alone, the probe is still a candidate (its midpoint is in the layer).
    assert ranked_names(insitu_table([("barrow", 0.0, 0.21)]), 1) == ["barrow"]


# --- grid assignment ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat", "lon", "cell"),
    [
        (40.0, -100.0, (0, 0)),  # south-west corner of the grid
        (41.0, -99.0, (1, 1)),  # on the edges between cells: the cell north / east of them
        (40.999999, -99.000001, (0, 0)),
        (43.999999, -96.000001, (3, 3)),
        (44.0, -98.5, (-1, -1)),  # the northern edge is outside
        (42.5, -96.0, (-1, -1)),  # the eastern edge is outside
        (39.9, -98.5, (-1, -1)),
        (42.5, 262.5, (2, 2)),  # 0-360 longitude (= -97.5)
        (42.5, 263.999999, (2, 3)),
    ],
)
def test_grid_assignment(lat: float, lon: float, cell: tuple[int, int]) -> None:
    grid = Grid(1.0, 40.0, 44.0, -100.0, -96.0)
    row, col = grid.locate(lat, lon)
    assert (int(row[0]), int(col[0])) == cell


def test_grid_assignment_on_decimal_edges_of_a_tenth_degree_grid() -> None:
    # (40.3 - 40) / 0.1 = 2.9999999999999716 in floats: the edge must still go to the cell north of it.
    grid = Grid(0.1, 40.0, 41.0, 10.0, 11.0)
    row, col = grid.locate(np.array([40.3, 40.7, 40.29999]), np.array([10.3, 10.7, 10.69999]))
    assert row.tolist() == [3, 7, 2] and col.tolist() == [3, 7, 6]


def test_stations_reach_the_cell_that_holds_them_and_its_reference(tmp_path: Any) -> None:
    cfg = run_config(str(tmp_path))
    ref = write_reference(cfg)
    stations = {  # name: (lat, lon, expected (row, col) or None)
        "edge": (41.0, -99.0, (1, 1)),
        "corner": (40.0, -100.0, (0, 0)),
        "lon360": (42.5, 262.5, (2, 2)),
        "north": (44.0, -98.5, None),
        "east": (42.5, -96.0, None),
    }
    series = []
    for name, (lat, lon, cell) in stations.items():
        r, c = cell or (0, 0)
        # linear in the reference of its own cell → rescales to that reference exactly
        series.append(
            {"station": name, "lat": lat, "lon": lon, "values": 3.0 * target_ref(ref, r, c, 0) - 0.2}
        )
    write_insitu(cfg, series)
    build_targets(cfg, Context(show_progress=False))
    ds = stores.open_zarr(cfg.store("targets"), chunks=None)
    cells = list(zip(ds.row.values.tolist(), ds.col.values.tolist(), strict=True))
    assert cells == [(0, 0), (1, 1), (2, 2)]
    for i, (r, c) in enumerate(cells):
        np.testing.assert_allclose(ds.soil_moisture.values[i, :, 0], target_ref(ref, r, c, 0), atol=2e-6)
    prov = read_provenance(cfg).query("depth == 0.05").set_index("station")
    for name, (_, _, cell) in stations.items():
        assert (prov.loc[name, "row"], prov.loc[name, "col"]) == (cell or (-1, -1))
        assert bool(prov.loc[name, "used"]) is (cell is not None)
    assert prov.loc["north", "reason"] == "outside the run grid (lat 44.0, lon -98.5)"


# --- depth weighting ------------------------------------------------------------------------------------


def test_reference_weights_are_the_depth_overlaps() -> None:
    # 0-10 cm: 7 cm of ERA5 0-7 and 3 cm of 7-28; 10-30: 18 cm of 7-28 and 2 cm of 28-100; 30-50: 28-100.
    expected = np.array([[0.7, 0.3, 0.0], [0.0, 0.9, 0.1], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(layers.reference_weights(), expected, atol=1e-12)


# --- rescaling --------------------------------------------------------------------------------------------


def test_rescale_hand_computed() -> None:
    # Overlap = days 0-3 (day 4 has no reference, day 5 no observation). obs there 1, 2, 3, 4: mean 2.5,
    # population std sqrt(1.25); reference 0.1, 0.2, 0.1, 0.2: mean 0.15, std 0.05.
    # y = (x - 2.5) / sqrt(1.25) * 0.05 + 0.15 = 0.15 + 0.1 (x - 2.5) / sqrt(5), on every observed day.
    obs = np.array([1.0, 2.0, 3.0, 4.0, 5.0, np.nan])
    ref = np.array([0.1, 0.2, 0.1, 0.2, np.nan, 0.3])
    out = rescale(obs, ref, min_overlap=4)
    assert out.reason == "used" and out.overlap == 4 and out.values is not None
    expected = [0.0829180, 0.1276393, 0.1723607, 0.2170820, 0.2618034, np.nan]
    np.testing.assert_allclose(out.values, expected, atol=1e-7)
    assert rescale(obs, ref, min_overlap=5).reason == (
        "only 4 days overlap with the reference within the period (< 5)"
    )


@pytest.mark.parametrize(("days", "used"), [(59, False), (60, True)])
def test_minimum_overlap_is_two_months(tmp_path: Any, days: int, used: bool) -> None:
    cfg = run_config(str(tmp_path))
    assert cfg.targets.min_overlap_days == 60  # the default
    ref = write_reference(cfg)
    values = np.full(len(DAYS), np.nan)
    values[:days] = target_ref(ref, 0, 0, 0)[:days] + 0.05
    write_insitu(
        cfg, [{"values": values}, {"station": "other", "lat": 41.5, "values": target_ref(ref, 1, 0, 0)}]
    )
    build_targets(cfg, Context(show_progress=False))
    row = read_provenance(cfg).query("station == 'ST' and depth == 0.05").iloc[0]
    assert bool(row.used) is used
    assert row.reason == (
        "used" if used else "only 59 days overlap with the reference within the period (< 60)"
    )


def test_overlap_is_restricted_to_the_period_and_to_reference_days(tmp_path: Any) -> None:
    cfg = run_config(str(tmp_path))
    fields = reference_fields(cfg)
    fields["swvl1"][1:6, 0, 0] = np.nan  # days 0-4 of the period have no reference at cell (0, 0)
    ref = write_reference(cfg, fields)
    r0 = target_ref(ref, 0, 0, 0)
    rng = np.random.default_rng(3)
    pad = 40  # the in-situ record starts 40 days before the period and ends 40 days after it
    time = pd.date_range(
        pd.Timestamp(START) - pd.Timedelta(days=pad), pd.Timestamp(END) + pd.Timedelta(days=pad)
    )
    x = np.full(len(time), 0.9)  # far off outside the period: must not enter the mean or std
    inside = 0.25 + 0.04 * rng.standard_normal(len(DAYS))
    x[pad : pad + len(DAYS)] = inside
    write_insitu(cfg, [{"values": x}], time=time)
    build_targets(cfg, Context(show_progress=False))
    ds = stores.open_zarr(cfg.store("targets"), chunks=None)
    assert pd.DatetimeIndex(ds.time.values).equals(DAYS)
    got = ds.soil_moisture.values[0, :, 0].astype("float64")
    obs = inside.astype("float32").astype("float64")
    ov = np.isfinite(r0)
    assert ov.sum() == len(DAYS) - 5
    expected = (obs - obs[ov].mean()) / obs[ov].std() * r0[ov].std() + r0[ov].mean()
    np.testing.assert_allclose(got, expected, atol=2e-6)  # days 0-4 rescaled too, with the overlap's stats
    assert got[ov].mean() == pytest.approx(r0[ov].mean(), abs=1e-6)
    assert got[ov].std() == pytest.approx(r0[ov].std(), abs=1e-6)


# --- choice with fallback, averaging, rejection reasons ------------------------------------------------


def test_fallback_averaging_and_rejection_reasons(tmp_path: Any) -> None:
    cfg = run_config(str(tmp_path))
    fields = reference_fields(cfg)
    fields["swvl1"][:, 3, :] = np.nan  # row 3 is sea in an ERA5-Land-like reference: no overlap there
    ref = write_reference(cfg, fields)
    n = len(DAYS)
    r00, r11 = target_ref(ref, 0, 0, 0), target_ref(ref, 1, 1, 0)
    first_half, second_half = np.full(n, np.nan), np.full(n, np.nan)
    first_half[:70] = 2 * r11[:70]
    second_half[50:] = 0.5 - r11[50:]
    series: list[dict[str, Any]] = [
        # Station F: the 5 cm sensor is flat, so the next candidate (8 cm) is used for 0-10 cm.
        {"station": "F", "sensor": "flat5", "values": np.full(n, 0.3)},
        {"station": "F", "sensor": "p8", "depth_from": 0.08, "depth_to": 0.08, "values": r00 + 0.1},
        {"station": "F", "sensor": "p9", "depth_from": 0.09, "depth_to": 0.09, "values": r00},
        # Stations G and H share cell (1, 1): their rescaled series are averaged day by day.
        {"station": "G", "lat": 41.5, "lon": -98.5, "values": first_half},
        {"station": "H", "lat": 41.2, "lon": -98.9, "values": second_half},
        # Station I has no value within the period; station J sits where the reference has none.
        {"station": "I", "lat": 42.5, "lon": -97.5, "values": np.full(n, np.nan)},
        {"station": "J", "lat": 43.5, "lon": -97.5, "values": r00},
    ]
    write_insitu(cfg, series)
    build_targets(cfg, Context(show_progress=False))
    ds = stores.open_zarr(cfg.store("targets"), chunks=None)
    assert list(zip(ds.row.values.tolist(), ds.col.values.tolist(), strict=True)) == [(0, 0), (1, 1)]
    sm = ds.soil_moisture.values.astype("float64")
    np.testing.assert_allclose(sm[0, :, 0], r00, atol=2e-6)
    # G alone on days 0-49, both on 50-69, H alone on 70-. Each is rescaled over its own overlap.
    g = (first_half - np.nanmean(first_half)) / np.nanstd(first_half) * r11[:70].std() + r11[:70].mean()
    h = (second_half - np.nanmean(second_half)) / np.nanstd(second_half) * r11[50:].std() + r11[50:].mean()
    expected = np.where(np.isnan(g), h, np.where(np.isnan(h), g, (g + h) / 2))
    np.testing.assert_allclose(sm[1, :, 0], expected, atol=2e-6)

    reason = {
        (r.station, r.sensor): r.reason for r in read_provenance(cfg).query("depth == 0.05").itertuples()
    }
    assert reason[("F", "flat5")] == f"zero variance over the {n}-day overlap"
    assert reason[("F", "p8")] == "used"
    assert reason[("F", "p9")] == "not selected: sensor 'p8' (0.08-0.08 m) ranks higher at this station"
    assert reason[("G", "probe")] == reason[("H", "probe")] == "used"
    assert reason[("I", "probe")] == "no daily values within the period"
    assert reason[("J", "probe")] == "no overlap with the reference within the period"
