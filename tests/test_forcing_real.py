"""The `era5` forcing source on real ERA5 hourly values: daily means and sums, the min-count rule for
missing hours, and regridding, each checked against numbers computed by hand with numpy.

The data (`tests/data/era5/era5-2mt-2019-03-uk.nc`, see `tests/data/README.md`: the xarray tutorial's
ERA5 GRIB decoded once with cfgrib to float32, values unchanged) hold hourly 2 m temperature over the UK,
March 2019, on 0.25-degree points 58N..50N (descending), 10W..2E. They are written into the ARCO Zarr
layout the `era5` source reads. (The GRIB is not read here: ecCodes loaded beside torch in one process
aborted the interpreter at exit with a double free.) Every hand number
picks its stamps and points by explicit index arithmetic on the GRIB's own axes (stamp 24*d + h is day
2019-03-01 + d, hour h; the point (lat, lon) is row 4*(58 - lat), column 4*(lon + 10)), never through
the code under test.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

from somocloud import stores
from somocloud.forcing.sources import SourceError, get_source
from somocloud.grid import Grid

GRIB = Path(__file__).parent / "data" / "era5" / "era5-2mt-2019-03-uk.nc"
MARCH_1 = dt.date(2019, 3, 1)
N_STAMPS = 31 * 24
H = 24

# A 0.25-degree run grid whose cell centres are GRIB points: 8 rows 52.00..53.75N, 10 columns 3.00..0.75W.
INDEX_GRID = Grid(0.25, 51.875, 53.875, -3.125, -0.625)
# 0.5-degree cells holding 2 x 2 GRIB points each: 4 rows (points 52.00..53.75N), 5 columns (3.00..0.75W).
COARSE_GRID = Grid(0.5, 51.875, 53.875, -3.125, -0.625)
# 0.25-degree cells offset by half a cell: centres 52.125..53.625N, 2.875..1.125W, 4 GRIB cells each.
OFFSET_GRID = Grid(0.25, 52.0, 53.75, -3.0, -1.0)

# Gaps set into the "gappy" store (days 2019-03-01 .. 03-05 plus the stamp 03-06 00:00).
# 2 m temperature, day 2019-03-03 (d = 2): point A misses 2 hours, point B 5 hours (two of them the day's
# first and last stamps); A also misses 03-05 00:00, which belongs to 03-05, not to 03-04.
POINT_A = (52.5, -2.25)  # INDEX_GRID cell (2, 3)
POINT_B = (53.25, -1.5)  # INDEX_GRID cell (5, 6)
GAPS_A = (3, 17)
GAPS_B = (0, 1, 10, 22, 23)
STAMP_AFTER_A = 4 * H  # 2019-03-05 00:00
# total precipitation: point P misses 03-03 01:00 and 03-04 00:00 (both hours of day 03-03), point Q
# misses 03-03 00:00 (the last hour of day 03-02).
POINT_P = (52.25, -2.75)  # INDEX_GRID cell (1, 1)
POINT_Q = (53.5, -1.0)  # INDEX_GRID cell (6, 8)
TP_GAPS_P = (2 * H + 1, 3 * H)
TP_GAPS_Q = (2 * H,)


@dataclass(frozen=True)
class Raw:
    """The GRIB's values and axes (as cfgrib decoded them)."""

    t2m: np.ndarray  # (744, 33, 49) float32, K
    time: np.ndarray
    lat: np.ndarray
    lon: np.ndarray


def row(lat: float) -> int:
    """GRIB row of a latitude (58N first, 0.25 degrees apart)."""
    return round((58.0 - lat) * 4)


def col(lon: float) -> int:
    """GRIB column of a longitude (10W first, 0.25 degrees apart)."""
    return round((lon + 10.0) * 4)


def cell(grid: Grid, point: tuple[float, float]) -> tuple[int, int]:
    """Run-grid row and column of the cell holding `point` (lat, lon)."""
    return int((point[0] - grid.lat_min) // grid.resolution), int(
        (point[1] - grid.lon_min) // grid.resolution
    )


def precipitation(t2m: np.ndarray) -> np.ndarray:
    """A plausible hourly precipitation (m per hour) made of real values: (T - 270 K) clipped at 0, x 1e-4."""
    return (np.clip(t2m.astype("float64") - 270.0, 0.0, None) * 1e-4).astype("float32")


def assert_f32(got: Any, want: Any, ulps: int = 1) -> None:
    """`got` is float32 and equals `want` (float64 hand numbers) to float32 precision; NaN where NaN."""
    got = np.atleast_1d(got)
    assert got.dtype == np.float32
    want = np.atleast_1d(np.asarray(want, dtype="float64"))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    err = np.abs(got[ok].astype("float64") - want[ok])
    tol = ulps * np.spacing(np.abs(want[ok]).astype("float32")).astype("float64")
    assert (err <= tol).all(), f"max error {err.max():.3g} vs float32 spacing {tol[np.argmax(err - tol)]:.3g}"


def write_arco(url: str, time: np.ndarray, lat: np.ndarray, lon: np.ndarray, **vars: np.ndarray) -> None:
    """ERA5 variables (long name → (time, latitude, longitude) values) in the ARCO Zarr layout."""
    units = {"2m_temperature": "K", "total_precipitation": "m"}
    ds = xr.Dataset(
        {
            name: (("time", "latitude", "longitude"), values, {"units": units[name], "long_name": name})
            for name, values in vars.items()
        },
        coords={"time": time, "latitude": lat, "longitude": lon},
    )
    stores.write_zarr(ds, url, encoding={v: {"chunks": (H, lat.size, lon.size)} for v in ds.data_vars})


@pytest.fixture(scope="module")
def raw() -> Raw:
    with xr.open_dataset(GRIB) as ds:
        da = ds["t2m"]
        assert da.dims == ("time", "latitude", "longitude")
        assert da.attrs["units"] == "K"
        return Raw(
            t2m=np.asarray(da.values),
            time=ds["time"].values,
            lat=ds["latitude"].values,
            lon=ds["longitude"].values,
        )


@pytest.fixture(scope="module")
def month_url(raw: Raw, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The whole month as `2m_temperature` (K), nothing else."""
    url = str(tmp_path_factory.mktemp("real") / "era5-t2m.zarr")
    write_arco(url, raw.time, raw.lat, raw.lon, **{"2m_temperature": raw.t2m})
    return url


@pytest.fixture(scope="module")
def gappy(raw: Raw, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray, np.ndarray]:
    """2019-03-01 00:00 .. 03-06 00:00 with the gaps above: (url, t2m, total_precipitation) as stored."""
    n = 5 * H + 1
    t2m = raw.t2m[:n].copy()
    tp = precipitation(raw.t2m[:n])
    for hours, (lat, lon) in ((GAPS_A, POINT_A), (GAPS_B, POINT_B)):
        t2m[[2 * H + h for h in hours], row(lat), col(lon)] = np.nan
    t2m[STAMP_AFTER_A, row(POINT_A[0]), col(POINT_A[1])] = np.nan
    for stamps, (lat, lon) in ((TP_GAPS_P, POINT_P), (TP_GAPS_Q, POINT_Q)):
        tp[list(stamps), row(lat), col(lon)] = np.nan
    url = str(tmp_path_factory.mktemp("real") / "era5-gappy.zarr")
    write_arco(url, raw.time[:n], raw.lat, raw.lon, **{"2m_temperature": t2m, "total_precipitation": tp})
    return url, t2m, tp


def daily_mean_by_hand(t2m: np.ndarray, d: int) -> np.ndarray:
    """Mean of the 24 stamps 00..23 of day 2019-03-01 + d at every GRIB point, float64."""
    return t2m[H * d : H * d + H].astype("float64").mean(axis=0)


def test_grib_is_hourly_and_goes_into_the_arco_layout(raw: Raw, month_url: str) -> None:
    assert raw.t2m.shape == (N_STAMPS, 33, 49) and raw.t2m.dtype == np.float32
    hours = np.datetime64("2019-03-01T00", "h") + np.arange(N_STAMPS)
    np.testing.assert_array_equal(raw.time.astype("datetime64[h]"), hours)
    assert (np.diff(raw.time) == np.timedelta64(1, "h")).all()
    np.testing.assert_array_equal(raw.lat, 58.0 - 0.25 * np.arange(33))
    np.testing.assert_array_equal(raw.lon, -10.0 + 0.25 * np.arange(49))
    assert np.isfinite(raw.t2m).all() and 260.0 < raw.t2m.min() < raw.t2m.max() < 300.0

    ds = xr.open_zarr(month_url, chunks=None)
    da = ds["2m_temperature"]
    assert da.dims == ("time", "latitude", "longitude") and da.attrs["units"] == "K"
    np.testing.assert_array_equal(da.values, raw.t2m)
    np.testing.assert_array_equal(ds["latitude"].values, raw.lat)

    source = get_source("era5", month_url)
    source.validate(["t2m"], MARCH_1, dt.date(2019, 3, 30))
    # the other ERA5 variables are absent: asking for one names it
    with pytest.raises(SourceError, match="'total_precipitation'"):
        source.validate(["tp"], MARCH_1, dt.date(2019, 3, 30))
    # the last day needs the stamp closing it (2019-04-01 00:00), which the month does not hold
    with pytest.raises(SourceError, match="covers"):
        source.validate(["t2m"], MARCH_1, dt.date(2019, 3, 31))


def test_daily_mean_on_grib_points_equals_hand_numbers(raw: Raw, month_url: str) -> None:
    source = get_source("era5", month_url)
    source.validate(["t2m"], dt.date(2019, 3, 10), dt.date(2019, 3, 13))
    sampler = source.sampler(INDEX_GRID)
    assert sampler.method == "index"
    out = source.read_daily(["t2m"], dt.date(2019, 3, 10), 4, sampler, min_hours=24)["t2m"]
    assert out.shape == (4, 8, 10)

    rows = [row(lat) for lat in INDEX_GRID.lat]  # run grid ascending, GRIB descending
    cols = [col(lon) for lon in INDEX_GRID.lon]
    assert rows == list(range(24, 16, -1)) and cols == list(range(28, 38))
    want = np.stack([daily_mean_by_hand(raw.t2m, d)[np.ix_(rows, cols)] for d in range(9, 13)])
    assert_f32(out, want)
    # one number spelt out: 2019-03-10 at 52.00N 3.00W
    assert out[0, 0, 0] == np.float32(raw.t2m[216:240, 24, 28].astype("float64").sum() / 24)
    # the days differ from each other (a day shift would not pass)
    assert np.abs(np.diff(want, axis=0)).max() > 1.0


@pytest.mark.parametrize(
    ("min_hours", "nan_points"),
    [(24, {POINT_A, POINT_B}), (22, {POINT_B}), (19, set())],
)
def test_min_count_rule_on_real_values(
    raw: Raw, gappy: tuple[str, np.ndarray, np.ndarray], min_hours: int, nan_points: set[tuple[float, float]]
) -> None:
    url, _, _ = gappy
    source = get_source("era5", url)
    sampler = source.sampler(INDEX_GRID)
    out = source.read_daily(["t2m"], dt.date(2019, 3, 2), 3, sampler, min_hours=min_hours)["t2m"]

    rows = [row(lat) for lat in INDEX_GRID.lat]
    cols = [col(lon) for lon in INDEX_GRID.lon]
    want = np.stack([daily_mean_by_hand(raw.t2m, d)[np.ix_(rows, cols)] for d in (1, 2, 3)])
    for point, gaps in ((POINT_A, GAPS_A), (POINT_B, GAPS_B)):
        i, j = cell(INDEX_GRID, point)
        hours = raw.t2m[2 * H : 3 * H, row(point[0]), col(point[1])].astype("float64")
        want[1, i, j] = np.nan if point in nan_points else np.delete(hours, gaps).mean()
    assert_f32(out, want)
    assert int(np.isnan(out).sum()) == len(nan_points)
    # A's missing 03-05 00:00 leaves 03-04 whole even at min_hours=24
    i, j = cell(INDEX_GRID, POINT_A)
    assert np.isfinite(out[2, i, j])


def test_daily_precipitation_sum_on_real_values(gappy: tuple[str, np.ndarray, np.ndarray]) -> None:
    url, _, tp = gappy
    source = get_source("era5", url)
    source.validate(["t2m", "tp"], dt.date(2019, 3, 2), dt.date(2019, 3, 4))
    sampler = source.sampler(INDEX_GRID)
    rows = [row(lat) for lat in INDEX_GRID.lat]
    cols = [col(lon) for lon in INDEX_GRID.lon]
    (ip, jp), (iq, jq) = cell(INDEX_GRID, POINT_P), cell(INDEX_GRID, POINT_Q)

    def hand(min_hours: int) -> np.ndarray:
        """Stamps D 01:00 .. D+1 00:00 (24d + 1 .. 24d + 24) summed, m → mm; gappy days: valid mean x 24."""
        days = []
        for d in (1, 2, 3):
            hours = tp[H * d + 1 : H * d + H + 1][:, rows][:, :, cols].astype("float64")
            valid = np.isfinite(hours).sum(axis=0)
            total = np.where(np.isfinite(hours), hours, 0.0).sum(axis=0)
            day = np.where(valid == H, total, total / np.maximum(valid, 1) * H)
            days.append(np.where(valid >= min_hours, day, np.nan) * 1000.0)
        return np.stack(days)

    for min_hours in (24, 22):
        out = source.read_daily(["t2m", "tp"], dt.date(2019, 3, 2), 3, sampler, min_hours=min_hours)
        want = hand(min_hours)
        assert_f32(out["tp"], want)
        # t2m's gaps are on other points (A, B) and are untouched by tp's
        assert np.isnan(out["t2m"]).sum() == (2 if min_hours == 24 else 1)

    # P and Q spelt out, with stamps picked by hand
    p = tp[:, row(POINT_P[0]), col(POINT_P[1])].astype("float64")
    q = tp[:, row(POINT_Q[0]), col(POINT_Q[1])].astype("float64")
    p_day2 = np.delete(p[2 * H + 1 : 3 * H + 1], [0, H - 1])  # 03-03 without 01:00 and 03-04 00:00
    q_day1 = q[H + 1 : 2 * H]  # 03-02 01:00 .. 23:00, its 03-03 00:00 missing
    assert p_day2.size == 22 and q_day1.size == 23 and np.isfinite(p_day2).all() and np.isfinite(q_day1).all()
    assert p_day2.min() > 0 and q_day1.min() > 0  # real rain in every hour (T > 270 K), not zeros
    tp22 = source.read_daily(["tp"], dt.date(2019, 3, 2), 3, sampler, min_hours=22)["tp"]
    assert_f32(tp22[1, ip, jp], [p_day2.mean() * 24 * 1000])
    assert_f32(tp22[0, iq, jq], [q_day1.mean() * 24 * 1000])
    assert_f32(tp22[1, iq, jq], [q[2 * H + 1 : 3 * H + 1].sum() * 1000])  # Q's 03-03 is whole
    assert_f32(tp22[0, ip, jp], [p[H + 1 : 2 * H + 1].sum() * 1000])  # P's 03-02 is whole
    out24 = source.read_daily(["tp"], dt.date(2019, 3, 2), 3, sampler, min_hours=24)["tp"]
    assert np.isnan(out24[1, ip, jp]) and np.isnan(out24[0, iq, jq])
    assert np.isfinite(out24[0, ip, jp]) and np.isfinite(out24[1, iq, jq])
    assert np.isnan(out24).sum() == 2


def sin_band(lower: float, upper: float) -> float:
    """Area of a latitude band per radian of longitude: sin(upper) - sin(lower)."""
    return float(np.sin(np.deg2rad(upper)) - np.sin(np.deg2rad(lower)))


def weighted_mean(daily: np.ndarray, points: list[tuple[float, float, float]]) -> np.ndarray:
    """By hand: sum of weight x value over GRIB points (lat, lon, weight) of a (days, 33, 49) field,
    divided by the sum of the weights of the valid (non-NaN) points."""
    values = np.stack([daily[:, row(lat), col(lon)] for lat, lon, _ in points], axis=-1)
    w = np.array([weight for _, _, weight in points])
    valid = np.isfinite(values)
    return (np.where(valid, values, 0.0) * w).sum(axis=-1) / (valid * w).sum(axis=-1)


def coarse_points(lat_c: float, lon_c: float) -> list[tuple[float, float, float]]:
    """The 2 x 2 GRIB points of the 0.5-degree cell centred at (lat_c, lon_c), each weighted by its whole
    source cell's latitude band (edges half-way, 0.125 degrees, between centres)."""
    return [
        (lat, lon, sin_band(lat - 0.125, lat + 0.125))
        for lat in (lat_c - 0.125, lat_c + 0.125)
        for lon in (lon_c - 0.125, lon_c + 0.125)
    ]


def test_regridding_real_values_equals_hand_numbers(
    raw: Raw, month_url: str, gappy: tuple[str, np.ndarray, np.ndarray]
) -> None:
    days = range(14, 17)  # 2019-03-15 .. 03-17
    daily = np.stack([daily_mean_by_hand(raw.t2m, d) for d in days])  # (3, 33, 49) on GRIB points
    source = get_source("era5", month_url)

    # 0.5 degrees, 2 x 2 GRIB points per cell: source cell edges half-way (0.125) between centres;
    # both longitudes cover 0.25 degrees of the cell, so only the latitude weights differ
    coarse = source.sampler(COARSE_GRID)
    assert coarse.method == "conservative"
    got = source.read_daily(["t2m"], dt.date(2019, 3, 15), 3, coarse, min_hours=24)["t2m"]
    assert got.shape == (3, 4, 5) and got.dtype == np.float32
    want = np.full((3, 4, 5), np.nan)
    for i, lat_c in enumerate(COARSE_GRID.lat):
        for j, lon_c in enumerate(COARSE_GRID.lon):
            want[:, i, j] = weighted_mean(daily, coarse_points(lat_c, lon_c))
    # float64 weights on float32 daily values: within 2 float32 spacings (~2e-7 relative)
    assert_f32(got, want, ulps=2)
    # the area weights matter at this tolerance: the plain 2 x 2 mean is off by far more somewhere
    plain = daily[:, 17:25, 28:38][:, ::-1].reshape(3, 4, 2, 5, 2).mean(axis=(2, 4))
    assert np.abs(plain - want).max() > 10 * np.spacing(np.float32(300.0))

    # 0.25 degrees offset by half a cell: each run cell overlaps 4 GRIB cells by a quarter of each;
    # the weights are the overlap areas, [lat_c - 0.125, lat_c] and [lat_c, lat_c + 0.125]
    offset = source.sampler(OFFSET_GRID)
    assert offset.method == "conservative"
    got = source.read_daily(["t2m"], dt.date(2019, 3, 15), 3, offset, min_hours=24)["t2m"]
    assert got.shape == (3, 7, 8)
    want = np.full((3, 7, 8), np.nan)
    for i, lat_c in enumerate(OFFSET_GRID.lat):
        for j, lon_c in enumerate(OFFSET_GRID.lon):
            south, north = lat_c - 0.125, lat_c + 0.125  # the GRIB points around the centre
            pts = [
                (lat, lon, band)
                for lat, band in ((south, sin_band(south, lat_c)), (north, sin_band(lat_c, north)))
                for lon in (lon_c - 0.125, lon_c + 0.125)
            ]
            want[:, i, j] = weighted_mean(daily, pts)
    assert_f32(got, want, ulps=2)

    # a NaN source day (point B, 5 hours missing, min_hours=24) is left out of its 0.5-degree cell:
    # the other three points, renormalised (valid share ~3/4 >= 1/2)
    url, t2m, _ = gappy
    gappy_source = get_source("era5", url)
    gap_day = gappy_source.read_daily(["t2m"], dt.date(2019, 3, 3), 1, gappy_source.sampler(COARSE_GRID), 24)
    assert gappy_source.sampler(COARSE_GRID).method == "conservative"
    day = daily_mean_by_hand(t2m, 2)[None]  # NaN at B (its gaps), A (its gaps)
    assert np.isnan(day[0, row(POINT_B[0]), col(POINT_B[1])])
    i, j = cell(COARSE_GRID, POINT_B)
    want_b = weighted_mean(day, coarse_points(COARSE_GRID.lat[i], COARSE_GRID.lon[j]))
    assert np.isfinite(want_b).all()
    assert_f32(gap_day["t2m"][:, i, j], want_b, ulps=2)
    # A's cell too: NaN points are left out, not spread to their run cell
    assert np.isfinite(gap_day["t2m"]).all()
