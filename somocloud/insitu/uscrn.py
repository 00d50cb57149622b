"""The US Climate Reference Network daily table (`*.parquet`, NOAA NCEI daily01 product) as in-situ
soil moisture, behind the same reader interface as the ISMN layouts.

One file holds many stations: columns `wban` (station id), `lst_date` (local standard time date),
`longitude`, `latitude` and `soil_moisture_{5,10,20,50,100}_daily` (m3 m-3, daily means of the
station's hourly values). Each station and depth becomes one series: network `USCRN`, station = WBAN
number, sensor `USCRN-daily`, depth_from = depth_to = the probe depth, elevation unknown (NaN).

How quality control applies (see `qc`): the values are already daily means, quality-checked by NOAA
(values that fail NOAA's checks are missing), so there are no per-value flags and the ISMN flag rule
(`ingest.quality_flags`) does not apply, nor does `ingest.min_obs_per_day` (NOAA forms the daily mean
from the hours it has; the file does not say how many). Missing is NaN, or the sentinels -99 and
-9999 of NOAA's text files; the physical range 0-1 m3 m-3 and `ingest.min_days` apply as for ISMN.
The day is the station's *local standard time* date (UTC-5 to UTC-10 for US stations), used as is:
a daily mean cannot be moved to UTC days, so the day can be offset from a UTC day by up to 10 hours.

Bad input: a parquet file without these columns is rejected as a whole; rows with an invalid date,
rows whose coordinates differ from the station's first row, and repeated (station, date) rows (the
first is kept) are rejected one by one with their 1-based row number as the "line"; a station whose
coordinates are impossible is rejected with its first row.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from somocloud.insitu.model import FileContent, InSituFileError, Rejection, SensorMeta, SensorSeries
from somocloud.insitu.readers import check_station, finish_records, normalise_lon, register_reader

NETWORK = "USCRN"
SENSOR = "USCRN-daily"
DEPTHS_CM = (5, 10, 20, 50, 100)
"""Probe depths of USCRN soil moisture (cm)."""
MISSING = (-99.0, -9999.0)
"""Missing-value sentinels of NOAA's USCRN files (the parquet file itself uses NaN)."""
REQUIRED = ("wban", "lst_date", "longitude", "latitude")
COORD_TOLERANCE = 1e-6
"""Degrees by which a row's coordinates may differ from the station's first row."""


def soil_column(depth_cm: int) -> str:
    return f"soil_moisture_{depth_cm}_daily"


class UscrnDailyReader:
    """USCRN daily table (parquet); see the module docstring for the rules."""

    name = "uscrn-daily"

    def can_read(self, name: str, head: bytes) -> bool:
        """A parquet file (magic bytes `PAR1`); its columns are checked when it is read."""
        return head[:4] == b"PAR1" and name.lower().endswith(".parquet")

    def read(self, name: str, data: bytes) -> FileContent:
        try:
            table = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # any parquet/arrow failure means the file is unusable
            raise InSituFileError(
                name, None, f"not a readable parquet file: {type(exc).__name__}: {exc}"
            ) from None
        columns = [soil_column(d) for d in DEPTHS_CM if soil_column(d) in table.columns]
        missing = [c for c in REQUIRED if c not in table.columns]
        if missing or not columns:
            need = missing or [soil_column(d) for d in DEPTHS_CM]
            raise InSituFileError(name, None, f"not a USCRN daily table: columns {need} missing")
        n = len(table)
        rows = np.arange(1, n + 1)
        wban = table["wban"].astype(str).to_numpy(dtype=object)
        day = pd.to_datetime(table["lst_date"], errors="coerce").dt.floor("D").to_numpy("datetime64[ns]")
        lat = pd.to_numeric(table["latitude"], errors="coerce").to_numpy("float64")
        lon = pd.to_numeric(table["longitude"], errors="coerce").to_numpy("float64")
        values = {c: pd.to_numeric(table[c], errors="coerce").to_numpy("float64") for c in columns}
        rejected = [
            Rejection(name, int(rows[i]), "lst_date is not a date") for i in np.flatnonzero(np.isnat(day))
        ]
        good = ~np.isnat(day)

        series: list[SensorSeries] = []
        codes, stations = pd.factorize(wban, sort=True)
        order = np.argsort(codes, kind="stable")
        bounds = np.searchsorted(codes[order], np.arange(len(stations) + 1))
        for k, station in enumerate(stations):
            idx = order[bounds[k] : bounds[k + 1]]
            idx = idx[good[idx]]
            if idx.size == 0:
                continue
            s, rej = self._station(name, str(station), idx, rows, day, lat, lon, values)
            series += s
            rejected += rej
        rejected.sort(key=lambda r: r.line or 0)
        return FileContent(series, rejected, n, self.name)

    def _station(
        self,
        name: str,
        station: str,
        idx: np.ndarray,
        rows: np.ndarray,
        day: np.ndarray,
        lat: np.ndarray,
        lon: np.ndarray,
        values: dict[str, np.ndarray],
    ) -> tuple[list[SensorSeries], list[Rejection]]:
        """The series of one station (`idx`: its rows in file order)."""
        finite = np.isfinite(lat[idx]) & np.isfinite(lon[idx])
        if not finite.any():
            return [], [Rejection(name, int(rows[idx[0]]), f"station {station}: no valid coordinates")]
        ref = idx[np.flatnonzero(finite)[0]]
        try:
            check_station(name, int(rows[ref]), float(lat[ref]), float(lon[ref]), 0.0, 0.0)
        except InSituFileError as exc:
            return [], [Rejection(name, exc.line, f"station {station}: {exc.reason}")]
        moved = ~(
            (np.abs(lat[idx] - lat[ref]) <= COORD_TOLERANCE)
            & (np.abs(lon[idx] - lon[ref]) <= COORD_TOLERANCE)
        )
        rejected = [
            Rejection(name, int(rows[i]), f"station {station}: coordinates differ from row {rows[ref]}")
            for i in idx[moved]
        ]
        idx = idx[~moved]
        empty = np.full(idx.size, "", dtype=object)
        out: list[SensorSeries] = []
        for depth_cm in DEPTHS_CM:
            column = soil_column(depth_cm)
            if column not in values:
                continue
            meta = SensorMeta(
                network=NETWORK,
                station=station,
                sensor=SENSOR,
                variable="sm",
                source_file=name,
                lat=float(lat[ref]),
                lon=normalise_lon(float(lon[ref])),
                elevation=float("nan"),
                depth_from=depth_cm / 100.0,
                depth_to=depth_cm / 100.0,
            )
            s, dups = finish_records(
                meta,
                day[idx],
                values[column][idx],
                empty,
                empty,
                rows[idx],
                MISSING,
                daily=True,
                has_flags=False,
            )
            if not out:  # a repeated row is the same row for every depth: report it once
                rejected += dups
            out.append(s)
        return out, rejected


register_reader(UscrnDailyReader())
