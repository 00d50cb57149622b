"""The reader interface of in-situ files: a small `InSituReader` protocol, the reader registry, and the
helpers every reader shares (text decoding, binary sniffing, ISMN file names, record clean-up).

A reader turns one file into a `FileContent`: one `SensorSeries` per sensor and variable (station
metadata plus timestamps, values and flags) and the record lines it dropped. A file that cannot be
used at all raises `InSituFileError` (file, line, reason); a single bad record line is *not* fatal:
it is dropped and listed in `FileContent.rejected`, and the rest of the file is kept. Which reader
handles a file is decided by `reader_for(name, head)` from the file's name and first bytes, so other
layouts and other in-situ sources plug in by registering a reader. The built-in readers register
themselves when `somocloud.insitu` is imported: ISMN header+values (`ismn_stm`), ISMN CEOP-separate
and the old combined CEOP layout (`ismn_ceop`), and the USCRN daily table (`uscrn`).
"""

from __future__ import annotations

import re
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from somocloud.insitu.model import (
    FileContent,
    InSituFileError,
    Rejection,
    SensorMeta,
    SensorSeries,
    StaticMeta,
)

__all__ = [
    "HEAD_BYTES",
    "READERS",
    "FileContent",
    "InSituFileError",
    "InSituReader",
    "IsmnName",
    "Rejection",
    "SensorMeta",
    "SensorSeries",
    "StaticMeta",
    "check_station",
    "decode_text",
    "finish_records",
    "looks_binary",
    "normalise_lon",
    "parse_ismn_name",
    "reader_for",
    "register_reader",
    "variable_from_name",
]

HEAD_BYTES = 4096
"""How many leading bytes of a file `reader_for` hands to each reader's `can_read`."""
_CONTROL = np.zeros(256, dtype=bool)
_CONTROL[:32] = True
_CONTROL[[9, 10, 12, 13]] = False  # tab, LF, FF, CR are text


@runtime_checkable
class InSituReader(Protocol):
    """A reader of one in-situ file layout."""

    name: str
    """Short name of the layout (used in logs and reports)."""

    def can_read(self, name: str, head: bytes) -> bool:
        """Whether this reader recognises the file from its name and its first bytes (a cheap sniff)."""
        ...

    def read(self, name: str, data: bytes) -> FileContent:
        """Parse the file's bytes (`name`: how reports name the file; its base name may carry
        metadata, as ISMN file names do). Raises `InSituFileError` if the file cannot be used."""
        ...


READERS: list[InSituReader] = []
"""Registered readers, asked in order."""


def register_reader(reader: InSituReader) -> InSituReader:
    """Add a reader to the registry (later registrations are asked after earlier ones)."""
    READERS.append(reader)
    return reader


def reader_for(name: str, head: bytes) -> InSituReader | None:
    """The first registered reader that recognises the file, or None."""
    return next((r for r in READERS if r.can_read(name, head)), None)


def decode_text(data: bytes) -> str:
    """Bytes → text with every line ending (CRLF, CR, LF, mixed) normalised to LF.

    UTF-8 is tried first, Latin-1 (which ISMN uses in some metadata) as the fallback."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def looks_binary(head: bytes) -> bool:
    """True for bytes that are not text: NUL bytes or many control characters."""
    if b"\x00" in head:
        return True
    codes = np.frombuffer(head, dtype=np.uint8)
    control = int(np.count_nonzero(_CONTROL[codes]))
    return control > max(1, len(head) // 100)


def first_lines(head: bytes, n: int) -> list[str]:
    """Up to `n` non-blank lines from the start of a file (for sniffing)."""
    lines = [ln for ln in decode_text(head).split("\n") if ln.strip()]
    return lines[:n]


# ISMN file name: CSE_Network_Station_Var_depthfrom_depthto_Sensor_start_end.stm. Names and the sensor
# may contain '_' (ISMN itself writes '-'), so the variable (letters and '-') is found as the first
# field followed by the two depths.
_FILE_NAME = re.compile(
    r"^(?P<prefix>.+?)_(?P<var>[A-Za-z][A-Za-z-]*)_(?P<dfrom>-?\d+\.\d+)_(?P<dto>-?\d+\.\d+)_"
    r"(?P<sensor>.+)_(?P<start>\d{8})_(?P<end>\d{8})\.stm$",
    re.IGNORECASE,
)
_SOIL_MOISTURE_CODES = {"sm", "soil-moisture", "soilmoisture"}


class IsmnName(NamedTuple):
    """The parts of an ISMN station file name."""

    variable: str
    depth_from: float
    depth_to: float
    sensor: str


def parse_ismn_name(path: str) -> IsmnName | None:
    """The variable (lower case; old spellings of soil moisture such as `Soil-Moisture` give `sm`),
    depths and sensor of an ISMN file name; None if the name does not follow the pattern."""
    m = _FILE_NAME.match(path.rstrip("/").rsplit("/", 1)[-1])
    if m is None:
        return None
    var = m.group("var").lower()
    var = "sm" if var in _SOIL_MOISTURE_CODES else var
    return IsmnName(var, float(m.group("dfrom")), float(m.group("dto")), m.group("sensor"))


def variable_from_name(path: str) -> str | None:
    """The variable code of an ISMN file name (`sm`, `ts`, `p`, ...), or None (see `parse_ismn_name`)."""
    parsed = parse_ismn_name(path)
    return None if parsed is None else parsed.variable


def normalise_lon(lon: float) -> float:
    """Longitude in [-180, 180) (0-360 headers exist); values already in range are returned as they
    are (no arithmetic, so no rounding)."""
    return lon if -180.0 <= lon < 180.0 else (lon + 180.0) % 360.0 - 180.0


def check_station(
    name: str, line: int | None, lat: float, lon: float, depth_from: float, depth_to: float
) -> None:
    """`InSituFileError` for impossible station metadata: coordinates out of range, a depth range
    upside down, or soil moisture measured above the surface (negative depth)."""
    if not all(np.isfinite([lat, lon, depth_from, depth_to])):
        raise InSituFileError(name, line, "station metadata has a non-finite LAT, LON or depth")
    if not -90.0 <= lat <= 90.0:
        raise InSituFileError(name, line, f"LAT {lat} is outside [-90, 90]")
    if not -180.0 <= lon <= 360.0:
        raise InSituFileError(name, line, f"LON {lon} is outside [-180, 360]")
    if depth_to < depth_from:
        raise InSituFileError(name, line, f"DEPTH_TO {depth_to} is above DEPTH_FROM {depth_from}")
    if depth_from < 0:
        raise InSituFileError(name, line, f"DEPTH_FROM {depth_from} is above the soil surface")


def finish_records(
    meta: SensorMeta,
    time: np.ndarray,
    values: np.ndarray,
    flags: np.ndarray,
    provider_flags: np.ndarray,
    lines: np.ndarray,
    missing: tuple[float, ...],
    **kwargs: bool,
) -> tuple[SensorSeries, list[Rejection]]:
    """Sort records by time, drop repeated timestamps and turn missing markers into NaN.

    Sorting is stable, so among records with the same timestamp the first in the file is kept and
    each later one is rejected ("duplicate timestamp"). `kwargs` go to `SensorSeries` (`daily`,
    `has_flags`)."""
    # Files are nearly always in time order already: check that (one pass) before sorting.
    if not np.all(time[1:] >= time[:-1]):
        order = np.argsort(time, kind="stable")
        time, values, flags, provider_flags, lines = (
            a[order] for a in (time, values, flags, provider_flags, lines)
        )
    dup = np.zeros(time.size, dtype=bool)
    dup[1:] = time[1:] == time[:-1]
    rejected = [
        Rejection(
            meta.source_file, int(lines[i]), f"duplicate timestamp {pd.Timestamp(time[i])} (first kept)"
        )
        for i in np.flatnonzero(dup)
    ]
    if rejected:
        keep = ~dup
        time, values, flags, provider_flags, lines = (
            a[keep] for a in (time, values, flags, provider_flags, lines)
        )
    values = values.astype(np.float64, copy=True)
    for marker in missing:
        values[np.abs(values - marker) <= 1e-6] = np.nan  # np.isclose(atol=1e-6, rtol=0), cheaper
    series = SensorSeries(meta, time, values, flags, provider_flags, lines.astype(np.int64), **kwargs)
    return series, rejected


def no_records_reason(rejected: list[Rejection]) -> str:
    """Why a file has no usable record, naming the first bad line."""
    if not rejected:
        return "no record lines"
    first = min(rejected, key=lambda r: r.line or 0)
    return f"no valid record line ({len(rejected)} rejected; first, line {first.line}: {first.reason})"
