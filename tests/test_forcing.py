"""The forcing build: daily aggregation, day boundaries, units, layout change, missing hours, resume, bad input.

Hourly stores are built here in the ERA5 analysis-ready layout (latitude descending, longitude 0-360,
hourly time, 24-hour chunks) with values whose daily aggregates are known by hand."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somocloud import stores
from somocloud.config import RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.forcing import run_forcing_build
from somocloud.forcing.build import intermediate_url, plan_day_tasks
from somocloud.forcing.sources import (
    ERA5_LEXICON,
    ERA5_UNITS,
    aggregate_day,
    daily_series,
    get_source,
    specific_humidity,
)
from somocloud.layers import FORCING_VARIABLES, REFERENCE_VARIABLES
from somocloud.stores import StoreError

# Run grid: 3 x 4 cells of 1 degree straddling the Greenwich meridian (lon -2..2 → 358.5, 359.5, 0.5, 1.5).
GRID = {"resolution": 1.0, "lat_min": 10.0, "lat_max": 13.0, "lon_min": -2.0, "lon_max": 2.0}
DAYS = pd.date_range("2020-01-01", "2020-01-05", freq="D")  # lookback_start .. period.end
SRC_LAT = np.arange(14.5, 8.0, -1.0)  # descending, 7 rows
SRC_LON = np.arange(360) + 0.5  # 0-360, 360 columns
HOURS = pd.date_range("2019-12-31 00:00", "2020-01-06 23:00", freq="h")

# Hourly values with hand-known daily aggregates (per hour; accumulations are per hour ending at the stamp).
CONSTANT = {
    "2m_dewpoint_temperature": 283.15,  # 10 °C
    "surface_pressure": 100000.0,
    "skin_temperature": 290.0,
    "total_precipitation": 0.001,  # 1 mm per hour → 24 mm day-1
    "surface_solar_radiation_downwards": 3.6e6,  # → 86.4 MJ m-2 day-1
    "surface_net_solar_radiation": 2.0e6,
    "surface_net_thermal_radiation": -5.0e5,  # net 1.5e6 per hour → 36 MJ m-2 day-1
    "volumetric_soil_water_layer_1": 0.1,
    "volumetric_soil_water_layer_2": 0.2,
    "volumetric_soil_water_layer_3": 0.3,
}
# q at Td = 10 °C, p = 1000 hPa: e = 611.2 exp(17.67·10/253.5) = 1227.17 Pa, q = 0.622 e / (p - 0.378 e)
Q_10C = 0.0076685671
# q at Td = 0 °C, p = 1000 hPa: e = 611.2 Pa
Q_0C = 0.0038104675


def t2m_field(times: pd.DatetimeIndex) -> np.ndarray:
    """2 m temperature = 250 + 2·latitude + longitude(0-360)/10 + hour of day: every cell is different, so
    a wrong flip or longitude wrap shows up; its daily mean adds 11.5 to the cell's base."""
    hour = np.asarray(times.hour, dtype="float64")[:, None, None]
    return 250.0 + 2.0 * SRC_LAT[None, :, None] + SRC_LON[None, None, :] / 10.0 + hour


DIMS = ("time", "lat", "lon")


def write_hourly(
    url: str,
    times: pd.DatetimeIndex = HOURS,
    edit: Callable[[dict[str, np.ndarray]], None] | None = None,
    units: dict[str, str] | None = None,
) -> None:
    """An ERA5-layout hourly store; `edit` may change the arrays before writing."""
    shape = (len(times), SRC_LAT.size, SRC_LON.size)
    arrays = {var: np.full(shape, value, dtype="float64") for var, value in CONSTANT.items()}
    arrays["2m_temperature"] = np.broadcast_to(t2m_field(times), shape).copy()
    if edit is not None:
        edit(arrays)
    all_units = {**ERA5_UNITS, **(units or {})}
    ds = xr.Dataset(
        {
            var: (
                ("time", "latitude", "longitude"),
                a.astype("float32"),
                {"units": all_units[var], "long_name": var},
            )
            for var, a in arrays.items()
        },
        coords={"time": times.values, "latitude": SRC_LAT, "longitude": SRC_LON},
    )
    write_era5(ds, url)


def write_era5(ds: xr.Dataset, url: str) -> None:
    """One chunk row per 24 hours with whole maps, the ARCO layout (numpy data: no Dask graph to ship)."""
    stores.write_zarr(
        ds, url, encoding={v: {"chunks": (24, ds.latitude.size, ds.longitude.size)} for v in ds.data_vars}
    )


def make_cfg(root: Path, **forcing: Any) -> RunConfig:
    return config_from_dict(
        {
            "grid": GRID,
            "period": {"start": "2020-01-03", "end": "2020-01-05"},
            "model": {"seq_length": 3, "cascade": False},  # a 2-day lookback
            "stores": {"root": str(root), "forcing_source": str(root / "era5.zarr")},
            "forcing": {"days_per_task": 2, "tile_size": 2, **forcing},
        }
    )


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    from distributed import Client

    with Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=":0") as c:
        yield c


def build(cfg: RunConfig, client: Any, parts: tuple[int, int] | None = None) -> Any:
    return run_forcing_build(cfg, Context(show_progress=False, client=client, parts=parts))


def chunk_files(url: str) -> dict[str, bytes]:
    """Every chunk object of a local store (metadata excluded: it holds run-specific paths)."""
    out = {}
    for dirpath, _, files in os.walk(url):
        for f in files:
            rel = os.path.relpath(os.path.join(dirpath, f), url)
            if f != "zarr.json":
                out[rel] = Path(dirpath, f).read_bytes()
    return out


# --- sources: physics, aggregation, lexicon -------------------------------------------------------


def test_specific_humidity_hand_values() -> None:
    q = specific_humidity(np.array([283.15, 273.15]), np.array([100000.0, 100000.0]))
    np.testing.assert_allclose(q, [Q_10C, Q_0C], rtol=1e-7)


def test_aggregate_day_mean_sum_and_missing_hours() -> None:
    hours = np.arange(24, dtype="float64")[:, None] * np.ones((1, 3))
    hours[5, 1] = np.nan  # one missing hour in cell 1
    hours[:, 2] = np.nan  # cell 2 has no data
    mean = aggregate_day(hours, "mean", min_hours=24)
    np.testing.assert_allclose(mean[0], 11.5)
    assert np.isnan(mean[1]) and np.isnan(mean[2])
    relaxed = aggregate_day(hours, "mean", min_hours=23)
    np.testing.assert_allclose(relaxed[1], (276 - 5) / 23)
    total = aggregate_day(hours, "sum", min_hours=23)
    np.testing.assert_allclose(total[:2], [276.0, (276 - 5) / 23 * 24])  # missing hour infilled by the mean
    assert np.isnan(total[2])


@pytest.mark.parametrize("days_per_read", [1, 2, 3, 10])
def test_daily_series_reads_every_stamp_once_in_any_block_size(days_per_read: int) -> None:
    reads: list[tuple[int, int]] = []

    def read_hours(a: int, b: int) -> np.ndarray:
        reads.append((a, b))
        return np.arange(a, b, dtype="float64")[:, None]  # the value of a stamp is its hour number

    mean = daily_series(read_hours, ERA5_LEXICON["t2m"], 5, 24, days_per_read)
    np.testing.assert_array_equal(mean[:, 0], 24 * np.arange(5) + 11.5)  # stamps 24d .. 24d+23
    assert reads[0][0] == 0 and reads[-1][1] == 120
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(reads))
    reads.clear()
    total = daily_series(read_hours, ERA5_LEXICON["tp"], 5, 24, days_per_read)
    # stamps 24d+1 .. 24d+24: sum = 24·24d + 300, in m → × 1000 mm
    np.testing.assert_allclose(total[:, 0], (576.0 * np.arange(5) + 300.0) * 1000.0, rtol=1e-7)
    assert reads[0][0] == 0 and reads[-1][1] == 121
    assert all(prev[1] == nxt[0] for prev, nxt in itertools.pairwise(reads))


def test_lexicon_covers_the_contract() -> None:
    assert set(ERA5_LEXICON) == {*FORCING_VARIABLES, *REFERENCE_VARIABLES}
    units = {name: e.units for name, e in ERA5_LEXICON.items()}
    assert units == {
        "t2m": "K", "tp": "mm day-1", "q": "kg kg-1", "snr": "MJ m-2 day-1", "ssrd": "MJ m-2 day-1",
        "skt": "K", "swvl1": "m3 m-3", "swvl2": "m3 m-3", "swvl3": "m3 m-3",
    }  # fmt: skip
    assert {e.aggregation for n, e in ERA5_LEXICON.items() if n in ("tp", "snr", "ssrd")} == {"sum"}
    with pytest.raises(KeyError, match="unknown forcing source 'mswep'"):
        get_source("mswep", "x.zarr")


def test_plan_day_tasks_cover_every_day_once() -> None:
    tasks = plan_day_tasks(dt.date(2020, 1, 1), 5, 2)
    assert [(t.start, t.stop) for t in tasks] == [(0, 2), (2, 4), (4, 5)]
    assert tasks[2].first_day == dt.date(2020, 1, 5)
    assert len({t.id for t in tasks}) == 3


# --- the build ------------------------------------------------------------------------------------------


def test_daily_values_units_and_layout(tmp_path: Path, client: Any) -> None:
    cfg = make_cfg(tmp_path)

    def edit(a: dict[str, np.ndarray]) -> None:
        # dewpoint alternates 0 °C / 10 °C hour by hour: q is the daily mean of hourly q
        a["2m_dewpoint_temperature"][1::2] = 273.15

    write_hourly(cfg.store("forcing_source"), edit=edit)
    report = build(cfg, client)
    assert report.complete
    assert len(report.day_tasks_run) == 3 and len(report.tile_tasks_run) == 4

    f = xr.open_zarr(cfg.store("forcing"))
    assert sorted(f.data_vars) == sorted(FORCING_VARIABLES)
    np.testing.assert_array_equal(f.lat.values, [10.5, 11.5, 12.5])
    np.testing.assert_array_equal(f.lon.values, [-1.5, -0.5, 0.5, 1.5])
    assert f.time.dtype == np.dtype("datetime64[ns]")
    np.testing.assert_array_equal(f.time.values, DAYS.values)
    for name in FORCING_VARIABLES:
        assert f[name].dims == ("time", "lat", "lon") and f[name].dtype == np.float32
        assert f[name].attrs["units"] == ERA5_LEXICON[name].units
        assert f[name].encoding["chunks"] == (5, 2, 2)

    lon360 = np.array([358.5, 359.5, 0.5, 1.5])
    expected_t2m = 250.0 + 2.0 * f.lat.values[:, None] + lon360[None, :] / 10.0 + 11.5
    np.testing.assert_allclose(f.t2m.values, np.broadcast_to(expected_t2m, (5, 3, 4)), rtol=1e-6)
    np.testing.assert_allclose(f.tp.values, 24.0, rtol=1e-6)  # 0.001 m per hour, 24 hours → 24 mm
    np.testing.assert_allclose(f.ssrd.values, 86.4, rtol=1e-6)  # 3.6e6 J m-2 per hour → 86.4 MJ
    np.testing.assert_allclose(f.snr.values, 36.0, rtol=1e-6)  # (2e6 - 5e5) × 24 J m-2 → 36 MJ
    np.testing.assert_allclose(f.q.values, (Q_10C + Q_0C) / 2, rtol=1e-6)
    np.testing.assert_allclose(f.skt.values, 290.0, rtol=1e-6)

    ref = xr.open_zarr(cfg.store("reference_sm"))
    assert sorted(ref.data_vars) == ["swvl1", "swvl2", "swvl3"]
    for k, value in enumerate((0.1, 0.2, 0.3), start=1):
        np.testing.assert_allclose(ref[f"swvl{k}"].values, value, rtol=1e-6)
        assert ref[f"swvl{k}"].attrs["units"] == "m3 m-3"
    for url in (cfg.store("forcing"), cfg.store("reference_sm")):
        attrs = stores.zarr_attrs(url)
        assert attrs["somocloud_step"] == "forcing" and "somocloud_content_id" in attrs
    # the intermediate is dropped once both cubes are complete
    assert not stores.exists(intermediate_url(cfg.store("forcing")))


def test_day_boundaries(tmp_path: Path, client: Any) -> None:
    cfg = make_cfg(tmp_path)
    boundary = HOURS.get_loc(pd.Timestamp("2020-01-03 00:00"))

    def edit(a: dict[str, np.ndarray]) -> None:
        a["total_precipitation"][:] = 0.0
        a["total_precipitation"][boundary] = 0.005  # the hour 01-02 23:00 .. 01-03 00:00 → day 01-02
        a["skin_temperature"][:] = 276.0
        a["skin_temperature"][boundary] = 300.0  # an instantaneous stamp at 00:00 belongs to its own day

    write_hourly(cfg.store("forcing_source"), edit=edit)
    build(cfg, client)
    f = xr.open_zarr(cfg.store("forcing"))
    np.testing.assert_allclose(f.tp.values[:, 0, 0], [0, 5.0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(f.skt.values[:, 1, 2], [276, 276, 277, 276, 276], rtol=1e-6)


def test_missing_hours_make_a_nan_day(tmp_path: Path, client: Any) -> None:
    hour = HOURS.get_loc(pd.Timestamp("2020-01-02 05:00"))
    # source cell (12.5 N, 359.5 E) = run cell (lat 12.5, lon -0.5) = [2, 1] (flat index 9)
    row, col = int(np.flatnonzero(SRC_LAT == 12.5)[0]), int(np.flatnonzero(SRC_LON == 359.5)[0])

    def edit(a: dict[str, np.ndarray]) -> None:
        a["2m_temperature"][hour, row, col] = np.nan
        a["total_precipitation"][hour, row, col] = np.nan

    strict = make_cfg(tmp_path / "strict")
    write_hourly(strict.store("forcing_source"), edit=edit)
    build(strict, client)
    f = xr.open_zarr(strict.store("forcing"))
    assert np.isnan(f.t2m.values[1, 2, 1]) and np.isnan(f.tp.values[1, 2, 1])
    assert np.isfinite(np.delete(f.t2m.values.reshape(5, -1), 9, axis=1)).all()
    assert np.isfinite(f.t2m.values[[0, 2, 3, 4], 2, 1]).all()

    relaxed = make_cfg(tmp_path / "relaxed", min_hours_per_day=20)
    write_hourly(relaxed.store("forcing_source"), edit=edit)
    build(relaxed, client)
    g = xr.open_zarr(relaxed.store("forcing"))
    np.testing.assert_allclose(g.tp.values[1, 2, 1], 24.0, rtol=1e-6)  # 23 valid hours of 1 mm, × 24/23
    base = 250.0 + 2.0 * 12.5 + 359.5 / 10.0
    np.testing.assert_allclose(g.t2m.values[1, 2, 1], base + (276 - 5) / 23, rtol=1e-6)


def test_resume_redoes_only_unmarked_tasks_and_matches_an_undisturbed_run(
    tmp_path: Path, client: Any
) -> None:
    clean = make_cfg(tmp_path / "clean", keep_intermediate=True)
    write_hourly(clean.store("forcing_source"))
    build(clean, client)

    cfg = make_cfg(tmp_path / "resumed", keep_intermediate=True)
    write_hourly(cfg.store("forcing_source"))
    # Parts: the first share of day tasks only; stage 2 waits for every day task.
    first = build(cfg, client, parts=(1, 2))
    assert first.day_tasks_run == ["days-20200101-0002", "days-20200105-0001"]
    assert not first.complete and first.tile_tasks_run == []
    second = build(cfg, client, parts=(2, 2))
    assert second.day_tasks_run == ["days-20200103-0002"]
    assert second.tile_tasks_run == ["tile-00000-00002", "tile-00002-00002"] and not second.complete
    third = build(cfg, client)
    assert third.day_tasks_run == [] and third.tile_tasks_run == ["tile-00000-00000", "tile-00002-00000"]
    assert third.complete

    assert_same_as(cfg, clean)

    # One day task's marker gone and its block corrupt: only that day task is redone, and every tile
    # (each reads every day) is remade from the repaired maps.
    inter = intermediate_url(cfg.store("forcing"))
    stores.remove(stores.markers_for(inter).url("days-20200103-0002"))
    junk = xr.Dataset({n: (DIMS, np.full((2, 3, 4), -999.0, "float32")) for n in ERA5_LEXICON})
    stores.write_zarr(
        junk, inter, mode="r+", region={"time": slice(2, 4), "lat": slice(None), "lon": slice(None)}
    )
    assert chunk_files(inter) != chunk_files(intermediate_url(clean.store("forcing")))
    again = build(cfg, client)
    assert again.day_tasks_run == ["days-20200103-0002"]
    assert sorted(again.day_tasks_skipped) == ["days-20200101-0002", "days-20200105-0001"]
    assert len(again.tile_tasks_run) == 4 and again.complete
    assert_same_as(cfg, clean)

    # One tile's marker gone and its chunk corrupt: only that tile is redone.
    stores.remove(stores.markers_for(cfg.store("forcing")).url("tile-00002-00000"))
    bad = xr.Dataset({n: (DIMS, np.zeros((5, 1, 2), "float32")) for n in FORCING_VARIABLES})
    tile_region = {"time": slice(None), "lat": slice(2, 3), "lon": slice(0, 2)}
    stores.write_zarr(bad, cfg.store("forcing"), mode="r+", region=tile_region)
    assert chunk_files(cfg.store("forcing")) != chunk_files(clean.store("forcing"))
    tile = build(cfg, client)
    assert tile.day_tasks_run == [] and tile.tile_tasks_run == ["tile-00002-00000"]
    assert len(tile.tile_tasks_skipped) == 3 and tile.complete
    assert_same_as(cfg, clean)

    # Up to date: nothing runs.
    last = build(cfg, client)
    assert last.complete and last.day_tasks_run == [] and last.tile_tasks_run == []


def assert_same_as(cfg: RunConfig, clean: RunConfig) -> None:
    """Byte-identical chunk objects in both cubes and the intermediate."""
    pairs = [(cfg.store(n), clean.store(n)) for n in ("forcing", "reference_sm")]
    pairs.append((intermediate_url(cfg.store("forcing")), intermediate_url(clean.store("forcing"))))
    for url, clean_url in pairs:
        files = chunk_files(url)
        assert len(files) > 9 and files == chunk_files(clean_url), url  # coordinates plus data chunks


def test_build_on_memory_urls(client: Any) -> None:
    root = "memory://test-forcing-build"
    cfg = config_from_dict(
        {
            "grid": GRID,
            "period": {"start": "2020-01-03", "end": "2020-01-05"},
            "model": {"seq_length": 3, "cascade": False},  # a 2-day lookback
            "stores": {"root": root, "forcing_source": root + "/era5.zarr"},
            "forcing": {"days_per_task": 2, "tile_size": 2},
        }
    )
    try:
        write_hourly(cfg.store("forcing_source"))
        assert build(cfg, client).complete
        f = stores.open_zarr(cfg.store("forcing"))
        np.testing.assert_allclose(f.ssrd.values, 86.4, rtol=1e-6)
        assert not stores.exists(intermediate_url(cfg.store("forcing")))
        assert build(cfg, client).tile_tasks_run == []
    finally:
        stores.remove(root)


def test_changed_settings_rebuild_from_a_fresh_template(tmp_path: Path, client: Any) -> None:
    cfg = make_cfg(tmp_path)
    write_hourly(cfg.store("forcing_source"))
    build(cfg, client)
    changed = make_cfg(tmp_path, min_hours_per_day=12)
    report = build(changed, client)
    assert len(report.day_tasks_run) == 3 and len(report.tile_tasks_run) == 4


# --- bad input: named variable/coordinate and store, nothing written -----------------------------------


def _bad(
    tmp_path: Path,
    *,
    drop: str | None = None,
    units: dict[str, str] | None = None,
    times: pd.DatetimeIndex = HOURS,
    lon: np.ndarray | None = None,
) -> tuple[RunConfig, str]:
    """A config whose hourly source is broken in one way (nothing else is written)."""
    cfg = make_cfg(tmp_path)
    url = cfg.store("forcing_source")
    write_hourly(url, times=times, units=units)
    if drop or lon is not None:
        ds = xr.open_zarr(url).load()
        if drop:
            ds = ds.drop_vars(drop)
        if lon is not None:
            ds = ds.assign_coords(longitude=lon)
        write_era5(ds, url)
    return cfg, url


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("missing", r"variable 'surface_pressure' is missing"),
        ("units", r"variable 'total_precipitation' has units 'mm', expected 'm'"),
        ("order", r"coordinate 'time' is not strictly increasing"),
        ("gap", r"coordinate 'time' is not hourly"),
        ("short", r"coordinate 'time' covers .*, the build needs"),
        ("grid", r"coordinate 'longitude' does not reach 2 of the run grid's 4"),
    ],
)
def test_bad_source_is_rejected_before_any_work(tmp_path: Path, kind: str, pattern: str) -> None:
    times = HOURS
    if kind == "order":
        times = pd.DatetimeIndex(
            np.r_[HOURS.values[:30], HOURS.values[31:32], HOURS.values[30:31], HOURS.values[32:]]
        )
    elif kind == "gap":
        times = HOURS.delete(50).append(pd.DatetimeIndex([HOURS[-1] + pd.Timedelta(hours=1)]))
    elif kind == "short":
        times = pd.date_range("2020-01-01 01:00", periods=len(HOURS), freq="h")
    cfg, url = _bad(
        tmp_path,
        drop="surface_pressure" if kind == "missing" else None,
        units={"total_precipitation": "mm"} if kind == "units" else None,
        times=times,
        lon=SRC_LON * 0.5 if kind == "grid" else None,
    )
    with pytest.raises(StoreError, match=pattern) as err:  # SourceError is a StoreError
        run_forcing_build(cfg, Context(show_progress=False))  # no client: validation must come first
    assert url in str(err.value)
    assert not stores.exists(cfg.store("forcing"))


def test_source_on_a_shifted_lattice_is_regridded_by_area(tmp_path: Path, client: Any) -> None:
    """Centres a quarter cell east of the run grid's: each run cell takes 1/4 of the source cell west of
    it and 3/4 of the one it mostly overlaps (latitudes line up, so only longitude weights matter). The
    source longitudes are 0-360, so the run cell 0..1 mixes 359.75 and 0.75 (the seam)."""
    cfg = make_cfg(tmp_path / "shifted", keep_intermediate=True)
    url = cfg.store("forcing_source")
    write_hourly(url)
    ds = xr.open_zarr(url).load()
    shifted_lon = SRC_LON + 0.25
    hours = pd.DatetimeIndex(ds.time.values)
    t2m = 250.0 + 2.0 * SRC_LAT[None, :, None] + shifted_lon[None, None, :] / 10.0
    ds["2m_temperature"] = (
        ("time", "latitude", "longitude"),
        (t2m + np.asarray(hours.hour, "float64")[:, None, None]).astype("float32"),
        ds["2m_temperature"].attrs,
    )
    write_era5(ds.assign_coords(longitude=shifted_lon), url)

    report = build(cfg, client)
    assert report.complete
    out = xr.open_zarr(cfg.store("forcing")).load()
    # run columns -1.5, -0.5, 0.5, 1.5 (0-360: 358.5, 359.5, 0.5, 1.5); source centres at x.75
    west = np.array([357.75, 358.75, 359.75, 0.75])
    east = np.array([358.75, 359.75, 0.75, 1.75])
    lon_mean = 0.25 * west + 0.75 * east
    lat = np.array([10.5, 11.5, 12.5])
    expected = 250.0 + 2.0 * lat[:, None] + lon_mean[None, :] / 10.0 + 11.5
    np.testing.assert_allclose(out.t2m.values, np.broadcast_to(expected, out.t2m.shape), rtol=1e-6)
    np.testing.assert_allclose(out.tp.values, 24.0, rtol=1e-6)  # constant fields stay constant
    inputs = json.loads(stores.zarr_attrs(cfg.store("forcing"))["somocloud_inputs"])
    assert list(inputs) == ["forcing_source"]


def test_index_regrid_needs_the_run_grid_cells(tmp_path: Path) -> None:
    cfg, url = _bad(tmp_path, lon=SRC_LON + 0.25)  # same resolution, centres shifted by a quarter cell
    cfg = cfg.model_copy(update={"forcing": cfg.forcing.model_copy(update={"regrid": "index"})})
    with pytest.raises(
        StoreError, match=r"coordinate 'longitude' lacks 4 of the run grid's 4 cell centres"
    ) as err:
        run_forcing_build(cfg, Context(show_progress=False))
    assert url in str(err.value)


def write_mswep_half_degree(url: str, scale: float = 1.0) -> None:
    """MSWEP daily precipitation at 0.5 degree (finer than the 1-degree run grid), lat descending, lon
    ±180, stamps at 00:00: the value of a cell is `scale` x (its column index + 10 x its day index)."""
    lat = np.arange(14.75, 8.0, -0.5)
    lon = np.arange(-3.75, 4.0, 0.5)
    days = pd.date_range("2019-12-31", "2020-01-06", freq="D")
    values = scale * (np.arange(lon.size)[None, None, :] + 10.0 * np.arange(days.size)[:, None, None])
    values = np.broadcast_to(values, (days.size, lat.size, lon.size))
    ds = xr.Dataset(
        {"precipitation": (("time", "lat", "lon"), values.astype("float32"), {"units": "mm/d"})},
        coords={"time": days.values, "lat": lat, "lon": lon},
    )
    stores.write_zarr(ds, url, mode="w")


def test_variables_from_several_sources(tmp_path: Path, client: Any) -> None:
    """`tp` from MSWEP (finer: area mean of its 2 x 2 cells per run cell), everything else from ERA5."""
    mswep = str(tmp_path / "mswep.zarr")
    write_mswep_half_degree(mswep)
    cfg = make_cfg(tmp_path, variables={"tp": {"source": "mswep_daily", "store": mswep}})
    write_hourly(cfg.store("forcing_source"))
    report = build(cfg, client)
    assert report.complete
    out = xr.open_zarr(cfg.store("forcing")).load()
    # run column j (lon -2+j .. -1+j) holds MSWEP columns 2j+4 and 2j+5 (lon -3.75 + 0.5 k): mean 2j + 4.5;
    # build day d is MSWEP day d + 1 (MSWEP starts a day earlier)
    j = np.arange(4)
    expected = (2.0 * j + 4.5)[None, None, :] + 10.0 * (np.arange(5) + 1.0)[:, None, None]
    np.testing.assert_allclose(out.tp.values, np.broadcast_to(expected, out.tp.shape), rtol=1e-6)
    assert out.tp.attrs["long_name"] == "total precipitation (MSWEP), daily sum"
    np.testing.assert_allclose(out.ssrd.values, 86.4, rtol=1e-6)  # still ERA5
    inputs = json.loads(stores.zarr_attrs(cfg.store("forcing"))["somocloud_inputs"])
    assert inputs["forcing_source.tp"]["url"] == mswep and "forcing_source" in inputs

    # Another MSWEP store (a new version at a new URL) changes the build key: everything is rebuilt.
    mswep2 = str(tmp_path / "mswep-v2.zarr")
    write_mswep_half_degree(mswep2, scale=2.0)
    cfg = make_cfg(tmp_path, variables={"tp": {"source": "mswep_daily", "store": mswep2}})
    again = build(cfg, client)
    assert len(again.day_tasks_run) == 3 and again.complete
    out = xr.open_zarr(cfg.store("forcing")).load()
    np.testing.assert_allclose(out.tp.values, np.broadcast_to(2.0 * expected, out.tp.shape), rtol=1e-6)


def test_a_second_source_is_checked_before_any_work(tmp_path: Path) -> None:
    mswep = str(tmp_path / "mswep.zarr")
    write_mswep_half_degree(mswep)
    ds = xr.open_zarr(mswep).load()
    ds["precipitation"].attrs["units"] = "mm/3h"
    stores.write_zarr(ds, mswep, mode="w")
    cfg = make_cfg(tmp_path, variables={"tp": {"source": "mswep_daily", "store": mswep}})
    write_hourly(cfg.store("forcing_source"))
    with pytest.raises(StoreError, match=r"mswep\.zarr: variable 'precipitation' has units 'mm/3h'"):
        run_forcing_build(cfg, Context(show_progress=False))  # no client: nothing has started
    assert not stores.exists(cfg.store("forcing"))
