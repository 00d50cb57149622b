"""The synthetic world: layouts of the raw inputs, day rule of the hourly store, truth, ISMN files."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from somocloud import stores
from somocloud.config import RunConfig, config_from_dict
from somocloud.context import Context
from somocloud.grid import Grid
from somocloud.layers import DEPTH_BOUNDS, DEPTHS
from somocloud.synthetic import World, build_world, generate_world
from somocloud.synthetic.water_balance import memory_days
from somocloud.synthetic.weather import ERA5_VARIABLES, round_mantissa
from somocloud.synthetic.world import to_era5

ACCUMULATED = (
    "total_precipitation",
    "surface_solar_radiation_downwards",
    "surface_net_solar_radiation",
    "surface_net_thermal_radiation",
)
GOOD_OR_BAD_FLAGS = {"G", "M", "D03", "D06", "C01", "C02", "C02,D04", "D07", "D09", "D10"}


def tiny_config(root: str, **synthetic: Any) -> RunConfig:
    """6 x 8 cells, 120 days of forcing (91 product days + 29 lookback), 8 stations."""
    return config_from_dict(
        {
            "grid": {
                "resolution": 0.5,
                "lat_min": 40.0,
                "lat_max": 43.0,
                "lon_min": -100.0,
                "lon_max": -96.0,
            },
            "period": {"start": "2020-03-01", "end": "2020-05-30"},
            "model": {"seq_length": 30, "cascade": False},  # one 29-day lookback
            "stores": {"root": root},
            "synthetic": {"seed": 7, "n_stations": 8, "spinup_days": 200} | synthetic,
        }
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunConfig, dict[str, str], World]:
    root = tmp_path_factory.mktemp("world")
    cfg = tiny_config(str(root))
    urls = build_world(cfg, Context(show_progress=False))
    return cfg, urls, generate_world(cfg)


def _open(url: str) -> Any:
    return stores.open_zarr(url, chunks=None)


def _ismn_files(url: str) -> list[str]:
    return stores.list_files(url, ".stm")


def _parse_stm(url: str) -> tuple[dict[str, Any], list[tuple[str, str, float, str, str]]]:
    """A minimal header+values reader (independent of the ingest step)."""
    lines = stores.read_text(url).splitlines()
    tok = lines[0].split()
    header = {
        "cse": tok[0], "network": tok[1], "station": tok[2], "lat": float(tok[3]), "lon": float(tok[4]),
        "elev": float(tok[5]), "depth_from": float(tok[6]), "depth_to": float(tok[7]), "sensor": " ".join(tok[8:]),
    }  # fmt: skip
    records = []
    for line in lines[1:]:
        parts = line.split()
        assert len(parts) == 5, f"{url}: record {line!r} has {len(parts)} fields"
        records.append((parts[0], parts[1], float(parts[2]), parts[3], parts[4]))
    return header, records


# ---------------------------------------------------------------------------------------- layouts


def test_era5_hourly_layout(built: tuple[RunConfig, dict[str, str], World]) -> None:
    cfg, urls, _ = built
    ds = _open(urls["forcing_source"])
    grid = Grid.from_config(cfg.grid)
    assert set(ds.data_vars) == set(ERA5_VARIABLES)
    assert ds.sizes == {"time": 120 * 24 + 1, "latitude": 6, "longitude": 8}
    assert np.all(np.diff(ds.latitude.values) < 0)  # north first
    np.testing.assert_allclose(ds.latitude.values, grid.lat[::-1])
    np.testing.assert_allclose(ds.longitude.values, grid.lon + 360.0)  # -99.75 → 260.25
    assert np.all(np.diff(ds.longitude.values) > 0)
    assert ds.time.values[0] == np.datetime64("2020-02-01T00:00", "ns")  # lookback_start = start - 29 days
    assert ds.time.values[-1] == np.datetime64("2020-05-31T00:00", "ns")  # period.end + 1 day
    assert np.all(np.diff(ds.time.values) == np.timedelta64(1, "h"))
    for name, (units, _) in ERA5_VARIABLES.items():
        assert ds[name].dtype == np.float32
        assert ds[name].attrs["units"] == units
        assert ds[name].encoding["chunks"] == (24, 6, 8)
        assert np.isfinite(ds[name].values).all(), name
    assert ds.attrs["somocloud_step"] == "synthetic"


def test_hourly_values_plausible(built: tuple[RunConfig, dict[str, str], World]) -> None:
    _, urls, _ = built
    ds = _open(urls["forcing_source"])
    assert (ds["2m_dewpoint_temperature"] < ds["2m_temperature"]).all()
    assert (ds["total_precipitation"] >= 0).all() and (ds["total_precipitation"] > 0).any()
    ssrd = ds["surface_solar_radiation_downwards"]
    assert (ssrd >= 0).all() and (ssrd == 0).any()  # night
    assert float(ssrd.max()) < 1361 * 3600  # below the solar constant over an hour
    assert (ds["surface_net_solar_radiation"] <= ssrd).all()
    assert float(ds["surface_net_thermal_radiation"].mean()) < 0
    assert 60_000 < float(ds["surface_pressure"].min()) < float(ds["surface_pressure"].max()) < 106_000
    # hour 18 UTC is local noon-ish here (lon ~ -98): warmer than 10 UTC (local ~3 am)
    t = ds["2m_temperature"]
    assert float(t[18::24].mean()) > float(t[10::24].mean()) + 2.0


def test_static_inputs_and_dem(built: tuple[RunConfig, dict[str, str], World]) -> None:
    cfg, urls, _ = built
    grid = Grid.from_config(cfg.grid)
    st = _open(urls["static_inputs"])
    expected = {"land_sea_mask", "clay", "sand", "silt", "porosity_top", "porosity_mid", "veg_type"}
    assert set(st.data_vars) == expected
    assert st.sizes == {"latitude": 6, "longitude": 8}
    np.testing.assert_allclose(st.latitude.values, grid.lat[::-1])
    lsm = st.land_sea_mask.values
    assert ((lsm >= 0) & (lsm <= 1)).all() and (lsm >= 0.5).any() and (lsm < 0.5).any()
    np.testing.assert_allclose(st.clay + st.sand + st.silt, 1.0, atol=1e-6)
    veg = st.veg_type.values
    assert np.all(veg == np.round(veg)) and veg.min() >= 1 and veg.max() <= 17
    assert (st.porosity_top >= st.porosity_mid).all()

    dem = _open(urls["dem"])
    f = cfg.synthetic.dem_factor
    assert dem.elevation.shape == (6 * f, 8 * f)
    res = 0.5 / f
    lat, lon = dem.latitude.values, dem.longitude.values
    assert lat[0] == pytest.approx(43.0 - res / 2) and lat[-1] == pytest.approx(40.0 + res / 2)
    assert lon[0] == pytest.approx(260.0 + res / 2) and lon[-1] == pytest.approx(264.0 - res / 2)
    # the DEM block under a land cell is mostly above sea level
    land = (lsm >= 0.75)[:, :, None, None]
    blocks = dem.elevation.values.reshape(6, f, 8, f).transpose(0, 2, 1, 3)
    assert np.median(blocks[np.broadcast_to(land, blocks.shape)]) > 0


def test_truth_layout_and_range(built: tuple[RunConfig, dict[str, str], World]) -> None:
    cfg, urls, world = built
    grid = Grid.from_config(cfg.grid)
    truth = _open(urls["truth"])
    sm = truth.soil_moisture
    assert sm.dims == ("time", "depth", "lat", "lon")
    assert sm.dtype == np.float32
    np.testing.assert_array_equal(truth.depth.values, DEPTHS)
    np.testing.assert_array_equal(truth.lat.values, grid.lat)
    np.testing.assert_array_equal(truth.lon.values, grid.lon)
    assert truth.time.values[0] == np.datetime64("2020-02-01", "ns")
    assert truth.time.values[-1] == np.datetime64("2020-05-30", "ns")
    assert len(truth.time) == 120

    lsm = _open(urls["static_inputs"]).land_sea_mask.values[::-1]  # back to lat ascending
    land = lsm >= 0.5
    values = sm.values
    assert np.isnan(values[:, :, ~land]).all()
    assert np.isfinite(values[:, :, land]).all()
    # water balance keeps every layer within [wilting point, porosity]
    wp, ts = world.soil.theta_wp, world.soil.theta_s
    assert (values[:, :, land] >= wp[None][:, :, land] - 1e-6).all()
    assert (values[:, :, land] <= ts[None][:, :, land] + 1e-6).all()
    assert (world.theta >= world.soil.theta_wp[None] - 1e-9).all()
    assert (world.theta <= world.soil.theta_s[None] + 1e-9).all()
    # it moves: rain wets the top layer, dry spells dry it
    assert np.median(values[:, 0, land].std(axis=0)) > 0.01


def test_memory_grows_with_depth(built: tuple[RunConfig, dict[str, str], World]) -> None:
    _, urls, world = built
    memory = json.loads(stores.zarr_attrs(urls["truth"])["memory_days"])
    assert memory == world.memory_days
    assert len(memory) == 3
    assert 0 < memory[0] < memory[1] < memory[2]


def test_memory_days_of_ar1_series() -> None:
    # AR(1) with rho = 0.9 has autocorrelation 0.9**lag: e-folding at -1/ln(0.9) = 9.49 days
    rng = np.random.default_rng(3)
    n, cells = 4000, 40
    x = np.zeros((n, cells))
    for t in range(1, n):
        x[t] = 0.9 * x[t - 1] + rng.standard_normal(cells)
    theta = np.repeat(x[:, None, :, None], 3, axis=1)  # (day, layer, lat, lon=1)
    dates = np.datetime64("2000-01-01") + np.arange(n)
    memory = memory_days(theta, np.ones((cells, 1), dtype=bool), dates)
    assert memory[0] == pytest.approx(-1 / np.log(0.9), rel=0.1)


# ----------------------------------------------------------------------------------- day rule


def test_day_rule_reproduces_daily_values(built: tuple[RunConfig, dict[str, str], World]) -> None:
    _, urls, world = built
    ds = _open(urls["forcing_source"])
    order = np.argsort(np.mod(world.grid.lon, 360.0))
    nd = world.n_days
    for name in ERA5_VARIABLES:
        hourly = ds[name].values.astype("float64")
        intended = to_era5(world.daily_value(name), order)
        if name in ACCUMULATED:  # stamps D 01:00 .. D+1 00:00
            daily = hourly[1 : nd * 24 + 1].reshape(nd, 24, 6, 8).sum(axis=1)
            scale = np.abs(intended).max()
            np.testing.assert_allclose(daily, intended, rtol=1e-5, atol=1e-6 * scale, err_msg=name)
        else:  # stamps D 00:00 .. D 23:00
            daily = hourly[: nd * 24].reshape(nd, 24, 6, 8).mean(axis=1)
            np.testing.assert_allclose(daily, intended, rtol=2e-6, err_msg=name)

    # the same rule written with explicit timestamps, for one day
    day = np.datetime64("2020-04-10")
    window = ds["total_precipitation"].sel(
        time=slice(day + np.timedelta64(1, "h"), day + np.timedelta64(24, "h"))
    )
    assert window.sizes["time"] == 24
    idx = int((day - world.days[0]).astype(int))
    np.testing.assert_allclose(
        window.sum("time").values,
        to_era5(world.daily_value("total_precipitation")[idx], order),
        rtol=1e-5,
        atol=1e-9,
    )
    # precipitation in mm/day is plausible
    tp_mm = world.daily_value("total_precipitation") * 1000
    assert 0.3 < tp_mm.mean() < 6 and tp_mm.max() < 300


def test_round_mantissa_keeps_requested_precision() -> None:
    x = np.array([280.123456, -0.0012345, 0.0, 1e6], dtype="float32")
    r = round_mantissa(x, 10)
    np.testing.assert_allclose(r, x, rtol=2.0**-11)
    assert r[2] == 0.0
    assert np.all((r.view("uint32") & np.uint32((1 << 13) - 1)) == 0)  # the 13 dropped bits are zero


# ------------------------------------------------------------------------------------------ ISMN


def test_ismn_files_parse(built: tuple[RunConfig, dict[str, str], World]) -> None:
    cfg, urls, _ = built
    grid = Grid.from_config(cfg.grid)
    lsm = _open(urls["static_inputs"]).land_sea_mask.values[::-1]
    files = _ismn_files(urls["ismn"])
    assert files and all(f.endswith(".stm") for f in stores.list_files(urls["ismn"]))  # folder is pure ISMN
    stations: dict[tuple[str, str], tuple[float, float]] = {}
    flags_seen: set[str] = set()
    sensors_with_space = 0
    step = cfg.synthetic.subdaily_step_hours
    for url in files:
        header, records = _parse_stm(url)
        network, station, name = url.split("/")[-3:]
        assert header["network"] == header["cse"] == network and header["station"] == station
        stem = name.removesuffix(".stm").split("_")
        assert stem[:4] == [network, network, station, "sm"]
        assert float(stem[4]) == header["depth_from"] and float(stem[5]) == header["depth_to"]
        assert stem[4] == f"{header['depth_from']:.6f}"
        assert stem[6] == header["sensor"].replace(" ", "-")
        sensors_with_space += " " in header["sensor"]
        assert 0 <= header["depth_from"] <= header["depth_to"] <= 0.5
        stations.setdefault((network, station), (header["lat"], header["lon"]))
        assert stations[(network, station)] == (header["lat"], header["lon"])
        dates = [r[0] for r in records]
        assert stem[7] == dates[0].replace("/", "") and stem[8] == dates[-1].replace("/", "")
        first = dt.date.fromisoformat(dates[0].replace("/", "-"))
        last = dt.date.fromisoformat(dates[-1].replace("/", "-"))
        assert cfg.period.start <= first and last <= cfg.period.end
        assert all(int(r[1][:2]) % step == 0 and r[1][2:] == ":00" for r in records)
        for _, _, value, flag, _ in records:
            flags_seen.add(flag)
            assert flag in GOOD_OR_BAD_FLAGS
            assert (value == -9999) == (flag == "M")
            if flag == "G":
                assert 0 < value < 0.6
            if flag == "C01":
                assert value < 0
            if flag.startswith("C02"):
                assert value > 0.6
    assert len(stations) == cfg.synthetic.n_stations
    assert len({n for n, _ in stations}) == 2  # 8 stations → 2 networks
    rows, cols = grid.locate(
        np.array([v[0] for v in stations.values()]), np.array([v[1] for v in stations.values()])
    )
    assert (rows >= 0).all() and len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == len(stations)
    assert (lsm[rows, cols] >= 0.5).all()  # every station in its own land cell
    assert {"G", "M"} <= flags_seen and len(flags_seen - {"G", "M"}) >= 3
    assert sensors_with_space > 0


def test_station_observations_follow_truth(built: tuple[RunConfig, dict[str, str], World]) -> None:
    cfg, urls, _ = built
    grid = Grid.from_config(cfg.grid)
    truth = _open(urls["truth"]).soil_moisture
    days = truth.time.values.astype("datetime64[D]")
    correlations = []
    for url in _ismn_files(urls["ismn"]):
        header, records = _parse_stm(url)
        row, col = (int(v[0]) for v in grid.locate(header["lat"], header["lon"]))
        mid = 0.5 * (header["depth_from"] + header["depth_to"])
        layer = int(np.searchsorted(DEPTH_BOUNDS[:, 1], mid))
        good: dict[np.datetime64, list[float]] = {}
        for date, _, value, flag, _ in records:
            if flag == "G":
                good.setdefault(np.datetime64(date.replace("/", "-"), "D"), []).append(value)
        obs_days = np.array(sorted(good))
        obs = np.array([np.mean(good[d]) for d in obs_days])
        ref = truth.values[np.searchsorted(days, obs_days), layer, row, col]
        assert len(obs) >= 60
        correlations.append(np.corrcoef(obs, ref)[0, 1])
    assert min(correlations) > 0.8, correlations


# ------------------------------------------------------------------------------ reproducibility


def test_same_seed_same_world_other_seed_other_world(
    built: tuple[RunConfig, dict[str, str], World], tmp_path: Path
) -> None:
    _, urls_a, _ = built
    urls_b = build_world(tiny_config(str(tmp_path / "b")), Context(show_progress=False))
    for name in ("forcing_source", "static_inputs", "dem", "truth"):
        a, b = _open(urls_a[name]), _open(urls_b[name])
        for var in a.data_vars:
            np.testing.assert_array_equal(a[var].values, b[var].values, err_msg=f"{name}/{var}")
    files_a, files_b = _ismn_files(urls_a["ismn"]), _ismn_files(urls_b["ismn"])
    rel = [f.removeprefix(urls_a["ismn"]) for f in files_a]
    assert rel == [f.removeprefix(urls_b["ismn"]) for f in files_b]
    for fa, fb in zip(files_a, files_b, strict=True):
        assert stores.read_bytes(fa) == stores.read_bytes(fb)

    other = generate_world(tiny_config(str(tmp_path / "c"), seed=8))
    assert not np.array_equal(other.statics.land_sea_mask, built[2].statics.land_sea_mask)


def test_builds_into_memory_url() -> None:
    root = f"memory://synthetic-test-{uuid.uuid4().hex}"
    cfg = tiny_config(root, n_stations=3)
    cfg.period.end = dt.date(2020, 3, 20)
    try:
        urls = build_world(cfg, Context(show_progress=False))
        assert all(u.startswith(root) for u in urls.values())
        ds = stores.open_zarr(urls["forcing_source"])
        assert ds.sizes["time"] == 49 * 24 + 1
        assert json.loads(stores.zarr_attrs(urls["truth"])["memory_days"])
        assert len(_ismn_files(urls["ismn"])) >= 3
    finally:
        stores.remove(root)


def test_too_few_land_cells_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tiny_config(str(tmp_path), n_stations=45)
    with pytest.raises(ValueError, match=r"synthetic\.n_stations=45"):
        build_world(cfg, Context(show_progress=False))


def test_world_too_large_is_refused(tmp_path: Path) -> None:
    cfg = tiny_config(str(tmp_path))
    cfg.grid.lat_min, cfg.grid.lat_max = -60.0, 90.0
    cfg.grid.lon_min, cfg.grid.lon_max = -180.0, 180.0
    cfg.grid.resolution = 0.25
    with pytest.raises(ValueError, match="demo-sized"):
        generate_world(cfg)
