"""ISMN CEOP layouts: "CEOP separate files" (one variable and depth per file, every line carries the
station) and the old combined CEOP reference layout (several depths per file, soil temperature beside
soil moisture). Record lines follow the rules of `ismn_stm`.

Station fields (CSE, network, station, coordinates, elevation, depths) are repeated on every line:
they are taken from the first valid record, and a later line whose station fields differ (other
than in spacing or number formatting) is rejected on its own ("station fields differ from line N").
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from somocloud.insitu.ismn_stm import (
    DATE_START,
    ISMN_MISSING,
    NAME_RULE,
    RecordChecker,
    check_bytes,
    record_rows,
)
from somocloud.insitu.model import FileContent, InSituFileError, Rejection, SensorMeta, SensorSeries
from somocloud.insitu.readers import (
    check_station,
    finish_records,
    first_lines,
    looks_binary,
    no_records_reason,
    normalise_lon,
    parse_ismn_name,
    register_reader,
)
from somocloud.insitu.tokens import Tokens

CEOP_MISSING = (-999.99, -9999.0)
"""Missing-value markers of the old combined CEOP layout (it writes -999.99; -9999 is ISMN's)."""
UNSPECIFIED_SENSOR = "n.s"
"""Sensor name of series from the combined CEOP layout, which does not name its sensors."""
_SEP_FIELDS = (
    "nominal_date nominal_time actual_date actual_time CSE NETWORK STATION LAT LON ELEV "
    "DEPTH_FROM DEPTH_TO value ismn_flag provider_flag"
)
_COMBINED_FIELDS = (
    "nominal_date nominal_time actual_date actual_time CSE NETWORK STATION LAT LON ELEV "
    "DEPTH_FROM|- DEPTH_TO soil_temperature flag soil_moisture flag"
)


def _sniff_fields(head: bytes) -> int | None:
    """The usual number of fields of the first lines when they all start like a CEOP record."""
    if not head.strip() or looks_binary(head):
        return None
    lines = first_lines(head, 6)[:-1] or first_lines(head, 1)  # the last line may be cut by `head`
    if not all(DATE_START.match(ln + " ") for ln in lines):
        return None
    return Counter(len(ln.split()) for ln in lines).most_common(1)[0][0]


def station_fields(check: RecordChecker, k_first: int, k_last: int, numeric: tuple[int, ...]) -> list[str]:
    """The station tokens `k_first..k_last` of the first good record; later lines with other station
    fields are rejected. Lines are compared as bytes (vectorised); only lines whose bytes differ are
    compared field by field, numbers as numbers (so `36.6` equals `36.60000`)."""
    tok = check.tok
    ref_row = int(check.rows[np.flatnonzero(check.ok)[0]])
    ref_tokens = tok.line_tokens(ref_row)[k_first : k_last + 1]
    s, _ = tok.span(np.array([ref_row]), k_first)
    _, e = tok.span(np.array([ref_row]), k_last)
    ref_bytes = tok.buf[int(s[0]) : int(e[0])].tobytes()
    same = tok.spans_equal(check.rows[check.ok], k_first, k_last, ref_bytes)
    differ = np.zeros(check.rows.size, dtype=bool)
    positions = np.flatnonzero(check.ok)
    for p in positions[~same]:
        tokens = tok.line_tokens(int(check.rows[p]))[k_first : k_last + 1]
        differ[p] = not _same_fields(tokens, ref_tokens, [k - k_first for k in numeric])
    check.reject(differ, lambda i: f"station fields differ from line {ref_row + 1}")
    return ref_tokens


def _same_fields(tokens: list[str], ref: list[str], numeric: list[int]) -> bool:
    if len(tokens) != len(ref):
        return False
    for j, (a, b) in enumerate(zip(tokens, ref, strict=True)):
        if j in numeric:
            try:
                if float(a) != float(b):
                    return False
            except ValueError:
                return False
        elif a != b:
            return False
    return True


def _float(name: str, line: int, field: str, token: str) -> float:
    try:
        return float(token)
    except ValueError:
        raise InSituFileError(name, line, f"{field} {token!r} is not a number") from None


class CeopSeparateReader:
    """ISMN "CEOP separate files" `.stm` (one variable at one depth per file).

    Every line: `nominal_date nominal_time actual_date actual_time CSE NETWORK STATION LAT LON ELEV
    DEPTH_FROM DEPTH_TO value ismn_flag provider_flag` (15 fields; times UTC, the nominal time is the
    time stamp). Variable, depths and sensor come from the file name (as `ismn` does: the name has
    6 decimals, the lines 2), coordinates and elevation from the first valid record. The whole file
    is rejected for an empty or binary file, a file name without a variable, impossible coordinates,
    or when no record line is valid.

    Differences from `ismn` 1.5.4: it takes the network from the top folder under the data root (for
    an archive with an extra top folder that is the archive's folder name) and the station from the
    file name; this reader takes both from the records. It keeps duplicate timestamps and -9999.
    """

    name = "ismn-ceop-separate"

    def can_read(self, name: str, head: bytes) -> bool:
        """The first lines start with a date and usually have 15 fields."""
        return _sniff_fields(head) == 15

    def read(self, name: str, data: bytes) -> FileContent:
        check_bytes(name, data)
        parsed = parse_ismn_name(name)
        if parsed is None:
            raise InSituFileError(name, None, NAME_RULE)
        tok = Tokens(data)
        rows = record_rows(tok, 0)
        check = RecordChecker(tok, rows, name)
        check.field_counts((15,), _SEP_FIELDS)
        time = check.datetimes(0, 1)
        values = check.numbers(12, "value")
        flags = check.text(13, "ismn_flag")
        provider = check.text(14, "provider_flag")
        if not check.ok.any():
            raise InSituFileError(name, None, no_records_reason(check.rejected))
        station = station_fields(check, 4, 11, (7, 8, 9, 10, 11))
        line = int(rows[np.flatnonzero(check.ok)[0]]) + 1
        lat, lon, elev = (
            _float(name, line, f, t) for f, t in zip(("LAT", "LON", "ELEV"), station[3:6], strict=True)
        )
        check_station(name, line, lat, lon, parsed.depth_from, parsed.depth_to)
        meta = SensorMeta(
            network=station[1],
            station=station[2],
            sensor=parsed.sensor,
            variable=parsed.variable,
            source_file=name,
            lat=lat,
            lon=normalise_lon(lon),
            elevation=elev,
            depth_from=parsed.depth_from,
            depth_to=parsed.depth_to,
        )
        ok = check.ok
        series, dups = finish_records(
            meta, time[ok], values[ok], flags[ok], provider[ok], rows[ok] + 1, ISMN_MISSING
        )
        rejected = sorted(check.rejected + dups, key=lambda r: r.line or 0)
        return FileContent([series], rejected, int(rows.size), self.name)


class CeopCombinedReader:
    """The old ISMN combined CEOP reference layout (`ismn` 1.x no longer reads it).

    Every line: `nominal_date nominal_time actual_date actual_time CSE NETWORK STATION LAT LON ELEV
    DEPTH_FROM DEPTH_TO soil_temperature flag soil_moisture flag` (16 fields), one line per depth
    and time. DEPTH_FROM is often `-`: the sensor sits at DEPTH_TO (a point, depth_from = depth_to).
    -999.99 (and -9999) mean missing. The file gives one soil moisture series (`sm`) and one soil
    temperature series (`ts`, degrees C) per depth; the sensor is not named (`n.s`), provider flags
    do not exist. Station fields come from the records (first valid line); a line with an impossible
    depth (negative, or DEPTH_TO above DEPTH_FROM) is rejected on its own.
    """

    name = "ismn-ceop-combined"

    def can_read(self, name: str, head: bytes) -> bool:
        """The first lines start with a date and usually have 16 fields."""
        return _sniff_fields(head) == 16

    def read(self, name: str, data: bytes) -> FileContent:
        check_bytes(name, data)
        tok = Tokens(data)
        rows = record_rows(tok, 0)
        check = RecordChecker(tok, rows, name)
        check.field_counts((16,), _COMBINED_FIELDS)
        time = check.datetimes(0, 1)
        dash = check.text(10, "DEPTH_FROM") == "-"
        depth_from = check.numbers(10, "DEPTH_FROM", ~dash)
        depth_to = check.numbers(11, "DEPTH_TO")
        depth_from = np.where(dash, depth_to, depth_from)
        with np.errstate(invalid="ignore"):
            impossible = (depth_from < 0) | (depth_to < depth_from)
        check.reject(impossible, lambda i: f"impossible depth range {depth_from[i]} to {depth_to[i]} m")
        ts = check.numbers(12, "soil_temperature")
        ts_flag = check.text(13, "soil_temperature flag")
        sm = check.numbers(14, "soil_moisture")
        sm_flag = check.text(15, "soil_moisture flag")
        if not check.ok.any():
            raise InSituFileError(name, None, no_records_reason(check.rejected))
        station = station_fields(check, 4, 9, (7, 8, 9))
        line = int(rows[np.flatnonzero(check.ok)[0]]) + 1
        lat, lon, elev = (
            _float(name, line, f, t) for f, t in zip(("LAT", "LON", "ELEV"), station[3:6], strict=True)
        )
        check_station(name, line, lat, lon, 0.0, 0.0)

        ok = np.flatnonzero(check.ok)
        pairs = np.stack([depth_from[ok], depth_to[ok]], axis=1)
        depths, which = np.unique(pairs, axis=0, return_inverse=True)
        which = which.ravel()
        series: list[SensorSeries] = []
        dups: list[Rejection] = []
        no_provider = np.full(ok.size, "", dtype=object)
        for d, (dfrom, dto) in enumerate(depths.tolist()):
            sel = ok[which == d]
            for variable, values, flags in (("sm", sm, sm_flag), ("ts", ts, ts_flag)):
                meta = SensorMeta(
                    network=station[1],
                    station=station[2],
                    sensor=UNSPECIFIED_SENSOR,
                    variable=variable,
                    source_file=name,
                    lat=lat,
                    lon=normalise_lon(lon),
                    elevation=elev,
                    depth_from=float(dfrom),
                    depth_to=float(dto),
                )
                s, dup = finish_records(
                    meta,
                    time[sel],
                    values[sel],
                    flags[sel],
                    no_provider[: sel.size],
                    rows[sel] + 1,
                    CEOP_MISSING,
                )
                series.append(s)
                if variable == "sm":  # the same line is a duplicate for both variables: report it once
                    dups += dup
        rejected = sorted(check.rejected + dups, key=lambda r: r.line or 0)
        return FileContent(series, rejected, int(rows.size), self.name)


register_reader(CeopSeparateReader())
register_reader(CeopCombinedReader())
