"""Synthetic in-situ stations written as ISMN header+values files.

Stations sit in distinct land cells (somewhere inside the cell), grouped into 2-3 networks, with 1-3
sensors at typical depths (some stations lack a mid-depth sensor, some have two sensors in one layer,
a few a cosmic-ray probe over 0.00-0.19 m). A sensor reads the truth of the layer holding its
mid-depth, interpolated in time, with a per-sensor offset and scale error and noise; days are missing
in runs (`gap_fraction`), a few records are `-9999 M`, and `bad_flag_fraction` of the records carry a
non-'G' ISMN flag together with a corrupted value, so quality control matters.

Layout (docs/data-contract.md, `ismn`): `<root>/<NETWORK>/<STATION>/<CSE>_<NETWORK>_<STATION>_sm_
<from>_<to>_<SENSOR>_<start>_<end>.stm`; spaces of sensor names become '-' in file names only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from somocloud.config import SyntheticConfig
from somocloud.grid import Grid
from somocloud.layers import DEPTH_BOUNDS
from somocloud.synthetic.fields import ar1, rng_for
from somocloud.synthetic.statics import Statics

NETWORKS = ("SYNTH-A", "SYNTH-B", "SYNTH-C")
"""Network names (also their CSE); no '_' so file names split unambiguously."""
PROVIDER_FLAGS = {"SYNTH-A": "M", "SYNTH-B": "OK", "SYNTH-C": "M"}
"""Provider flag written on every record of a network (meaningless to QC, as in real files)."""
SITE_WORDS = ("Prairie", "Creek", "Mesa", "Ridge", "Field", "Hollow", "Bluff", "Flats", "Grove", "Butte")
SENSOR_NAMES = ("ThetaProbe ML2X", "Hydraprobe II Sdi-12", "CS655", "5TM", "Stevens Hydra Probe", "TDR-315")
COSMIC_RAY = "Cosmic-ray-Probe"

# (depth_from, depth_to) patterns with their probabilities.
DEPTH_PATTERNS: tuple[tuple[tuple[tuple[float, float], ...], float], ...] = (
    (((0.05, 0.05), (0.20, 0.20), (0.50, 0.50)), 0.25),
    (((0.05, 0.05), (0.20, 0.20), (0.40, 0.40)), 0.20),
    (((0.05, 0.05), (0.40, 0.40)), 0.15),  # no mid-depth sensor
    (((0.05, 0.05), (0.25, 0.25), (0.40, 0.40)), 0.10),  # layer 2 only off-centre
    (((0.08, 0.08), (0.15, 0.15)), 0.08),
    (((0.00, 0.19),), 0.06),  # cosmic-ray probe over a range
    (((0.05, 0.05),), 0.10),
    (((0.05, 0.05), (0.08, 0.08), (0.20, 0.20)), 0.06),  # two sensors in layer 1
)

BAD_FLAGS = ("D03", "D06", "C01", "C02", "C02,D04", "D07", "D09", "D10")
MISSING_FRACTION = 0.01
"""Share of records written as `-9999 M`."""
REPRESENTATIVENESS_STD = 0.02
"""Std (m3 m-3) of the slowly varying difference between a point sensor and its cell."""
MIN_STATION_DAYS = 123
"""Every station covers at least about four months (or the whole period if shorter)."""


@dataclass(frozen=True)
class Sensor:
    """One soil-moisture sensor of a station."""

    depth_from: float
    """Upper depth in m."""
    depth_to: float
    """Lower depth in m."""
    name: str
    """Sensor name as in the file header (may contain spaces)."""

    @property
    def layer(self) -> int:
        """0-based product layer holding the sensor's mid-depth."""
        mid = 0.5 * (self.depth_from + self.depth_to)
        index = int(np.searchsorted(DEPTH_BOUNDS[:, 1], mid, side="left"))
        return min(index, len(DEPTH_BOUNDS) - 1)


@dataclass(frozen=True)
class Station:
    """A station in one land cell of the run grid."""

    network: str
    """Network name (also the CSE)."""
    name: str
    """Station name (letters, digits, '-')."""
    row: int
    """Grid row (index into ascending `lat`)."""
    col: int
    """Grid column (index into ascending `lon`)."""
    lat: float
    """Latitude in degrees north, inside the cell."""
    lon: float
    """Longitude in degrees east ([-180, 180)), inside the cell."""
    elevation: float
    """Elevation in m from the fine DEM."""
    sensors: tuple[Sensor, ...]
    """1-3 soil-moisture sensors."""
    first_day: int
    """Index of the first observed day on the truth's daily axis."""
    last_day: int
    """Index of the last observed day (inclusive)."""


def make_stations(
    grid: Grid, statics: Statics, scfg: SyntheticConfig, obs_first: int, obs_last: int
) -> list[Station]:
    """Place `scfg.n_stations` stations in distinct land cells, observing within days [obs_first, obs_last].

    Args:
        grid: The run grid.
        statics: The world's statics (land mask, fine DEM).
        scfg: The synthetic section of the config.
        obs_first: First day index (on the truth axis) stations may observe.
        obs_last: Last day index (inclusive).
    """
    rng = rng_for(scfg.seed, "stations")
    land_rows, land_cols = np.nonzero(statics.land)
    pick = rng.choice(len(land_rows), size=scfg.n_stations, replace=False)
    rows, cols = land_rows[pick], land_cols[pick]
    order = np.lexsort((rows, cols))  # west to east: networks are regional
    n_networks = 2 if scfg.n_stations < 10 else 3
    groups = np.array_split(order, n_networks)
    full = obs_last - obs_first + 1
    min_days = min(MIN_STATION_DAYS, full)
    patterns = [p for p, _ in DEPTH_PATTERNS]
    probs = np.array([w for _, w in DEPTH_PATTERNS])
    stations: list[Station] = []
    for g, members in enumerate(groups):
        network = NETWORKS[g]
        for number, idx in enumerate(members, start=1):
            r, c = int(rows[idx]), int(cols[idx])
            lat = round(float(grid.lat[r] + rng.uniform(-0.4, 0.4) * grid.resolution), 5)
            lon = round(float(grid.lon[c] + rng.uniform(-0.4, 0.4) * grid.resolution), 5)
            pattern = patterns[int(rng.choice(len(patterns), p=probs / probs.sum()))]
            sensor_name = SENSOR_NAMES[int(rng.integers(len(SENSOR_NAMES)))]
            sensors = tuple(Sensor(a, b, COSMIC_RAY if b - a > 0.1 else sensor_name) for a, b in pattern)
            first, last = obs_first, obs_last
            if rng.uniform() < 0.4 and full > min_days:  # a shorter record
                span = int(rng.integers(min_days, full + 1))
                first = obs_first + int(rng.integers(0, full - span + 1))
                last = first + span - 1
            word = SITE_WORDS[int(idx) % len(SITE_WORDS)]
            stations.append(
                Station(network, f"{word}-{number:02d}", r, c, lat, lon,
                        _elevation_at(grid, statics, lat, lon), sensors, first, last)
            )  # fmt: skip
    return stations


def _elevation_at(grid: Grid, statics: Statics, lat: float, lon: float) -> float:
    """DEM elevation of the fine pixel holding the point (>= 0 m)."""
    res = grid.resolution / statics.dem_factor
    i = int(np.clip((lat - grid.lat_min) // res, 0, statics.elevation_fine.shape[0] - 1))
    j = int(np.clip((lon - grid.lon_min) // res, 0, statics.elevation_fine.shape[1] - 1))
    return round(max(float(statics.elevation_fine[i, j]), 0.0), 2)


def _runs(rng: np.random.Generator, n: int, fraction: float, mean_length: float) -> np.ndarray:
    """A bool mask over n items with about `fraction` of them set, in runs of geometric length."""
    mask = np.zeros(n, dtype=bool)
    target = round(fraction * n)
    while mask.sum() < target:
        start = int(rng.integers(0, n))
        length = int(rng.geometric(1.0 / mean_length))
        mask[start : start + length] = True
    return mask


def observations(
    station: Station,
    sensor: Sensor,
    truth: np.ndarray,
    step_hours: int,
    scfg: SyntheticConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Records of one sensor: hours since day 0 00:00, values (NaN = missing) and ISMN flags.

    Args:
        station: The station.
        sensor: One of its sensors.
        truth: (day, layer) truth at the station's cell (daily means, valid at 12:00).
        step_hours: Interval between records.
        scfg: Synthetic config (gap and bad-flag fractions).
        rng: The sensor's random stream.
    """
    days = np.arange(station.first_day, station.last_day + 1)
    keep_day = ~_runs(rng, len(days), scfg.gap_fraction, 6.0)
    hours_of_day = np.arange(0, 24, step_hours)
    hours = (days[keep_day][:, None] * 24 + hours_of_day[None, :]).ravel()
    series = truth[:, sensor.layer]
    true = np.interp(hours / 24.0 - 0.5, np.arange(len(series)), series)
    offset, scale = rng.normal(0.0, 0.02), rng.uniform(0.85, 1.15)
    # a point is not the cell: a slowly drifting representativeness error on top of sensor noise
    drift = REPRESENTATIVENESS_STD * ar1(rng.standard_normal(len(days)), 0.97)
    noise = drift[hours // 24 - station.first_day] + rng.normal(0.0, 0.006, len(hours))
    values = np.clip(offset + scale * true + noise, 0.01, 0.58)
    flags = np.full(len(hours), "G", dtype=object)

    missing = rng.uniform(size=len(hours)) < MISSING_FRACTION
    bad = _runs(rng, len(hours), scfg.bad_flag_fraction, 3.0) & ~missing
    for start in np.flatnonzero(bad & ~np.r_[False, bad[:-1]]):  # one flag per run of bad records
        stop = start + 1
        while stop < len(bad) and bad[stop]:
            stop += 1
        flag = BAD_FLAGS[int(rng.integers(len(BAD_FLAGS)))]
        flags[start:stop] = flag
        values[start:stop] = _corrupt(flag, values[start:stop], rng)
    values[missing] = np.nan
    flags[missing] = "M"
    return hours, values, list(flags)


def _corrupt(flag: str, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Values that earned `flag`: out of range for C0x, implausible jumps/plateaus for D0x."""
    n = len(v)
    if flag == "C01":
        return -rng.uniform(0.01, 0.1, n)
    if flag.startswith("C02"):
        return rng.uniform(0.61, 0.95, n)
    if flag == "D03":
        return v + rng.uniform(0.08, 0.2)
    if flag == "D06":
        return v + rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.3, n)
    if flag == "D07":
        return np.maximum(v - rng.uniform(0.1, 0.2), 0.005)
    if flag == "D09":
        return np.full(n, 0.02)
    return np.full(n, 0.55)  # D10: saturated plateau


def _format_time(base: dt.date, hours: np.ndarray) -> list[str]:
    stamps = np.datetime64(base, "m") + hours.astype("int64") * np.timedelta64(60, "m")
    return [f"{s[:4]}/{s[5:7]}/{s[8:10]} {s[11:16]}" for s in np.datetime_as_string(stamps, unit="m")]


def file_name(station: Station, sensor: Sensor, start: str, end: str) -> str:
    """The ISMN file name (sensor spaces become '-')."""
    sensor_token = sensor.name.replace(" ", "-")
    return (
        f"{station.network}_{station.network}_{station.name}_sm_{sensor.depth_from:.6f}_{sensor.depth_to:.6f}"
        f"_{sensor_token}_{start}_{end}.stm"
    )


def header_line(station: Station, sensor: Sensor) -> str:
    """Line 1: `CSE NETWORK STATION LAT LON ELEV DEPTH_FROM DEPTH_TO SENSOR` in ISMN's column widths."""
    return (
        f"{station.network:<10} {station.network:<15} {station.name:<15} {station.lat:10.5f} "
        f"{station.lon:11.5f} {station.elevation:7.2f} {sensor.depth_from:7.2f} {sensor.depth_to:7.2f} "
        f"{sensor.name}"
    )


def station_files(
    station: Station, truth: np.ndarray, day0: dt.date, scfg: SyntheticConfig, index: int
) -> dict[str, str]:
    """The station's files as {relative path: text}.

    Args:
        station: The station.
        truth: (day, layer) truth at its cell on the axis starting at `day0`.
        day0: Date of truth day 0.
        scfg: Synthetic config.
        index: Station number (seeds its random stream).
    """
    out: dict[str, str] = {}
    pflag = PROVIDER_FLAGS[station.network]
    for s, sensor in enumerate(station.sensors):
        rng = rng_for(scfg.seed, f"ismn/{index}/{s}")
        hours, values, flags = observations(station, sensor, truth, scfg.subdaily_step_hours, scfg, rng)
        times = _format_time(day0, hours)
        lines = [header_line(station, sensor)]
        lines += [
            f"{t} {'   -9999' if np.isnan(v) else f'{v:8.4f}'} {f} {pflag}"
            for t, v, f in zip(times, values.tolist(), flags, strict=True)
        ]
        start, end = times[0][:10].replace("/", ""), times[-1][:10].replace("/", "")
        path = f"{station.network}/{station.name}/{file_name(station, sensor, start, end)}"
        out[path] = "\n".join(lines) + "\n"
    return out
