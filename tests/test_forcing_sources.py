"""The forcing sources beyond ERA5: `cf_daily` on real ERA5 daily values, `mswep_daily`, `era5_land`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from somocloud import stores
from somocloud.config import ForcingConfig
from somocloud.forcing.daily import CfDaily, MswepDaily
from somocloud.forcing.sources import ERA5_UNITS, SOURCES, Era5LandHourly, SourceError, get_source
from somocloud.grid import Grid
from somocloud.layers import FORCING_VARIABLES

CITIES_NC = Path(__file__).parent / "data" / "era5" / "daily_surface_cancities_1990-1993.nc"
CF_VARS = ("pr", "tas", "huss", "rsds", "rss", "rls")
# The five cities put side by side on a 1 x 5 grid of 0.25° cells (values real, coordinates nominal).
CITY_GRID = Grid(0.25, 0.0, 0.25, 0.0, 1.25)
HALIFAX, VICTORIA = 0, 4


def write_cities(url: str, drop: tuple[str, ...] = (), units: dict[str, str] | None = None) -> None:
    """The real daily values of January 1990 as a CF daily store with dims (time, lat, lon)."""
    src = xr.open_dataset(CITIES_NC).isel(time=slice(0, 31))
    data = {}
    for var in CF_VARS:
        if var in drop:
            continue
        attrs = dict(src[var].attrs)
        if units and var in units:
            attrs["units"] = units[var]
        values = src[var].transpose("time", "location").values[:, None, :]
        data[var] = (("time", "lat", "lon"), values, attrs)
    ds = xr.Dataset(data, coords={"time": src.time.values, "lat": CITY_GRID.lat, "lon": CITY_GRID.lon})
    stores.write_zarr(ds, url)


def test_registry_and_config_know_every_source() -> None:
    assert {"era5", "era5_land", "cf_daily", "mswep_daily"} <= set(SOURCES)
    assert isinstance(get_source("era5_land", "x"), Era5LandHourly)
    era5 = {"source": "era5", "store": "s3://bucket/era5.zarr"}
    swvl_from_era5 = {f"swvl{k}": era5 for k in (1, 2, 3)}
    cfg = ForcingConfig(source="cf_daily", variables=swvl_from_era5)
    assert cfg.source == "cf_daily" and cfg.variables["swvl2"].source == "era5"
    with pytest.raises(ValueError, match="unknown forcing source 'nope'"):
        ForcingConfig(source="nope")
    # a source must provide every variable it is asked for, checked when the config is loaded
    with pytest.raises(
        ValueError, match=r"source 'cf_daily' does not provide 'swvl1'.*forcing.variables.swvl1"
    ):
        ForcingConfig(source="cf_daily")
    with pytest.raises(
        ValueError, match=r"variables.t2m.source: source 'mswep_daily' does not provide 't2m'"
    ):
        ForcingConfig(variables={"t2m": {"source": "mswep_daily", "store": "x"}})
    with pytest.raises(ValueError, match=r"unknown canonical name\(s\) \['precip'\]"):
        ForcingConfig(variables={"precip": {"source": "mswep_daily", "store": "x"}})
    with pytest.raises(ValueError, match="must not contain credentials"):
        ForcingConfig(variables={"tp": {"source": "mswep_daily", "store": "s3://key:secret@host/b"}})


def test_cf_daily_on_real_era5_daily_values(tmp_path: Path) -> None:
    url = str(tmp_path / "cities.zarr")
    write_cities(url)
    source = get_source("cf_daily", url)
    source.validate(FORCING_VARIABLES, dt.date(1990, 1, 1), dt.date(1990, 1, 31))
    cells = source.sampler(CITY_GRID)
    out = source.read_daily(FORCING_VARIABLES, dt.date(1990, 1, 1), 3, cells, min_hours=24)
    assert all(v.shape == (3, 1, 5) and v.dtype == np.float32 for v in out.values())

    raw = xr.open_dataset(CITIES_NC)
    # the stored ERA5 values behind the hand computations below
    assert raw["pr"].values[HALIFAX, 0] == pytest.approx(3.46888e-4, rel=1e-5)
    assert raw["rsds"].values[HALIFAX, 1] == pytest.approx(80.072029, rel=1e-7)
    # pr 3.46888002e-4 kg m-2 s-1 x 86400 s = 29.971123 mm day-1 (Halifax, 1990-01-01)
    assert out["tp"][0, 0, HALIFAX] == pytest.approx(29.971123, rel=1e-6)
    # 6.65790431e-5 x 86400 = 5.7524293 mm day-1 (Victoria, 1990-01-03)
    assert out["tp"][2, 0, VICTORIA] == pytest.approx(5.7524293, rel=1e-6)
    # rsds 80.072029 W m-2 x 0.0864 = 6.9182233 MJ m-2 day-1 (Halifax, 1990-01-02)
    assert out["ssrd"][1, 0, HALIFAX] == pytest.approx(6.9182233, rel=1e-6)
    # rss + rls = 8.7884588 + 15.200515 = 23.988974 W m-2 -> x 0.0864 = 2.0726473 (Halifax, 01-01)
    assert out["snr"][0, 0, HALIFAX] == pytest.approx(2.0726473, rel=1e-6)
    # 40.200703 - 98.682854 = -58.482151 W m-2 -> -5.0528578 MJ m-2 day-1 (Victoria, 01-02)
    assert out["snr"][1, 0, VICTORIA] == pytest.approx(-5.0528578, rel=1e-6)
    assert out["t2m"][1, 0, HALIFAX] == pytest.approx(270.57559, rel=1e-7)
    assert out["q"][0, 0, VICTORIA] == pytest.approx(5.0163739e-3, rel=1e-6)
    # the file has no ts: skin temperature falls back to tas
    np.testing.assert_array_equal(out["skt"], out["t2m"])

    # a later window starts on its own day
    later = source.read_daily(["t2m"], dt.date(1990, 1, 2), 1, cells, min_hours=24)
    np.testing.assert_array_equal(later["t2m"][0], out["t2m"][1])


def test_cf_daily_prefers_ts_over_the_fallback(tmp_path: Path) -> None:
    url = str(tmp_path / "ts.zarr")
    times = pd.date_range("2000-01-01", periods=2, freq="D")
    shape = (2, 1, 2)
    ds = xr.Dataset(
        {
            "tas": (("time", "latitude", "longitude"), np.full(shape, 280.0), {"units": "K"}),
            "ts": (("time", "latitude", "longitude"), np.full(shape, 285.0), {"units": "K"}),
        },
        coords={"time": times.values, "latitude": [0.125], "longitude": [0.125, 0.375]},
    )
    stores.write_zarr(ds, url)
    source = CfDaily(url)
    source.validate(["skt", "t2m"], dt.date(2000, 1, 1), dt.date(2000, 1, 2))
    cells = source.sampler(Grid(0.25, 0.0, 0.25, 0.0, 0.5))
    out = source.read_daily(["skt", "t2m"], dt.date(2000, 1, 1), 2, cells, min_hours=24)
    assert (out["skt"] == 285.0).all() and (out["t2m"] == 280.0).all()


@pytest.mark.parametrize(
    ("drop", "units", "names", "pattern"),
    [
        (("rls",), None, FORCING_VARIABLES, r"cities\.zarr: variable 'rls' for 'snr' is missing"),
        (("tas",), None, ["skt"], r"variable 'ts' for 'skt' is missing \(nor its fallback \['tas'\]\)"),
        ((), {"pr": "mm/day"}, FORCING_VARIABLES, r"cities\.zarr: variable 'pr' has units 'mm/day'"),
        ((), {"rsds": "J m-2"}, ["ssrd"], r"variable 'rsds' has units 'J m-2'"),
    ],
)
def test_cf_daily_bad_variables_name_variable_and_store(
    tmp_path: Path, drop: tuple[str, ...], units: dict[str, str] | None, names: list[str], pattern: str
) -> None:
    url = str(tmp_path / "cities.zarr")
    write_cities(url, drop=drop, units=units)
    with pytest.raises(SourceError, match=pattern):
        CfDaily(url).validate(names, dt.date(1990, 1, 1), dt.date(1990, 1, 2))


def test_cf_daily_time_axis_checks(tmp_path: Path) -> None:
    url = str(tmp_path / "cities.zarr")
    write_cities(url)
    with pytest.raises(SourceError, match=r"covers 1990-01-01 \.\. 1990-01-31, the build needs"):
        CfDaily(url).validate(["t2m"], dt.date(1990, 1, 1), dt.date(1990, 2, 1))
    gappy = str(tmp_path / "gappy.zarr")
    stores.write_zarr(xr.open_zarr(url).isel(time=[0, 1, 3]).load(), gappy)
    with pytest.raises(SourceError, match=r"gappy\.zarr: coordinate 'time' is not daily"):
        CfDaily(gappy).validate(["t2m"], dt.date(1990, 1, 1), dt.date(1990, 1, 2))


def write_mswep(url: str, units: str = "mm/d") -> xr.Dataset:
    """MSWEP daily layout: 0.1°, lat descending, lon -180..180; value = 10·row + col + day/10."""
    lat = np.round(np.arange(0.95, -0.05, -0.1), 2)  # 0.95 .. 0.05, descending
    lon = np.round(np.arange(-179.95, -179.0, 0.1), 2)  # -179.95 .. -179.05
    times = pd.date_range("2001-03-01", periods=4, freq="D")
    values = (
        10.0 * np.arange(lat.size)[None, :, None]
        + np.arange(lon.size)[None, None, :]
        + np.arange(times.size)[:, None, None] / 10.0
    )
    ds = xr.Dataset(
        {"precipitation": (("time", "lat", "lon"), values.astype("float32"), {"units": units})},
        coords={"time": times.values, "lat": lat, "lon": lon},
    )
    stores.write_zarr(ds, url)
    return ds


def test_mswep_daily_precipitation_on_the_run_grid(tmp_path: Path) -> None:
    url = str(tmp_path / "mswep.zarr")
    write_mswep(url)
    source = get_source("mswep_daily", url)
    assert isinstance(source, MswepDaily)
    source.validate(["tp"], dt.date(2001, 3, 2), dt.date(2001, 3, 4))
    # run grid: lat 0.25..0.45 (ascending), lon -179.75..-179.55
    grid = Grid(0.1, 0.2, 0.5, -179.8, -179.5)
    out = source.read_daily(["tp"], dt.date(2001, 3, 2), 3, source.sampler(grid), min_hours=24)
    tp = out["tp"]
    assert tp.shape == (3, 3, 3)
    # lat 0.25 is source row 7 (0.95 - 0.7), lon -179.75 is column 2; day index 1 -> +0.1
    assert tp[0, 0, 0] == pytest.approx(72.1)
    # lat 0.45 is row 5, lon -179.55 column 4; third day (index 3) -> +0.3
    assert tp[2, 2, 2] == pytest.approx(54.3)
    with pytest.raises(KeyError, match="no lexicon entry for 't2m'"):
        source.validate(["t2m"], dt.date(2001, 3, 2), dt.date(2001, 3, 4))


def test_mswep_three_hourly_product_is_rejected(tmp_path: Path) -> None:
    url = str(tmp_path / "mswep3h.zarr")
    write_mswep(url, units="mm/3h")
    with pytest.raises(SourceError, match=r"mswep3h\.zarr: variable 'precipitation' has units 'mm/3h'"):
        MswepDaily(url).validate(["tp"], dt.date(2001, 3, 1), dt.date(2001, 3, 2))


def write_era5_land(url: str, start: str = "2010-06-01", days: int = 3) -> None:
    """ERA5-Land accumulations from 00 UTC: on day k the rate is (k+1)·1e-4 m h-1 of rain, 1e5 J m-2 h-1
    of net solar and -4e4 J m-2 h-1 of net thermal radiation; the stamp D 00:00 closes day D-1."""
    times = pd.date_range(start, periods=24 * days + 1, freq="h")
    hour = np.where(times.hour == 0, 24, times.hour).astype("float64")  # hours accumulated at the stamp
    day = np.asarray((times - pd.Timedelta(hours=1)).normalize() - pd.Timestamp(start)) // np.timedelta64(
        1, "D"
    )
    acc = {
        "total_precipitation": (day + 1) * 1e-4 * hour,
        "surface_net_solar_radiation": 1e5 * hour,
        "surface_net_thermal_radiation": -4e4 * hour,
        "surface_solar_radiation_downwards": 1.5e5 * hour,
        "2m_temperature": 280.0 + np.asarray(times.hour, dtype="float64"),
    }
    lat, lon = np.array([50.2, 50.1]), np.array([10.0, 10.1])
    ds = xr.Dataset(
        {
            var: (
                ("time", "latitude", "longitude"),
                np.broadcast_to(a[:, None, None], (times.size, 2, 2)).astype("float32"),
                {"units": ERA5_UNITS[var]},
            )
            for var, a in acc.items()
        },
        coords={"time": times.values, "latitude": lat, "longitude": lon},
    )
    stores.write_zarr(ds, url)


def test_era5_land_deaccumulates_daily_sums(tmp_path: Path) -> None:
    url = str(tmp_path / "era5land.zarr")
    write_era5_land(url)
    source = get_source("era5_land", url)
    names = ["tp", "snr", "ssrd", "t2m"]
    source.validate(names, dt.date(2010, 6, 1), dt.date(2010, 6, 3))
    cells = source.sampler(Grid(0.1, 50.05, 50.25, 9.95, 10.15))
    out = source.read_daily(names, dt.date(2010, 6, 1), 3, cells, min_hours=24)
    # day k: 24 h x (k+1)·1e-4 m x 1000 = 2.4·(k+1) mm
    np.testing.assert_allclose(out["tp"][:, 0, 0], [2.4, 4.8, 7.2], rtol=1e-6)
    # (1e5 - 4e4) x 24 J m-2 = 1.44 MJ m-2; 1.5e5 x 24 = 3.6 MJ m-2
    np.testing.assert_allclose(out["snr"], 1.44, rtol=1e-6)
    np.testing.assert_allclose(out["ssrd"], 3.6, rtol=1e-6)
    np.testing.assert_allclose(out["t2m"], 280.0 + 11.5, rtol=1e-7)  # instantaneous: mean of hours 0..23
    # a window not starting at the store's first stamp de-accumulates across its left edge too
    later = source.read_daily(["tp"], dt.date(2010, 6, 2), 2, cells, min_hours=24)
    np.testing.assert_allclose(later["tp"][:, 1, 1], [4.8, 7.2], rtol=1e-6)
